"""The fault run's checks of issue 20: special files, folder walking, many writers on one
cache, kills, label texts and pathological inputs. Run through ``bench/faults.py``.

Every command runs under a watch that kills it past a time or memory bound; a check
passes only if the run ended within both, embedded every readable image, skipped every
other item with a reason, and served nothing wrong nor lost an old output.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

CHECKS = ("special_folder", "special_csv", "special_inputs", "special_table",
          "special_cluster", "walking", "walk_100k", "many_writers", "kills", "labels",
          "csv_100k_missing", "odd_images")
LIMIT_S, LIMIT_MIB = 180.0, 3072.0
SPECIALS = 8  #: the special items of :meth:`Special.special_tree`
LABELS = ["a,b", 'say "hi"', "\u00e9t\u00e9", "\u65e5\u672c\u8a9e",
          "\u0395\u03bb\u03bb\u03ac\u03b4\u03b1", "=1+2", '=HYPERLINK("x")', "007", "1e3",
          "-5", "ant"]
API_CHILD = """
import json, sys, numpy as np
from orangecontrib.transferembed import embed
r = embed(sys.argv[1], "MobileNet", weights=None, alpha=0.25, input_size=32)
np.save(sys.argv[2], r.embeddings)
print(json.dumps({"embedded": len(r), "skipped": [[s.item, s.reason] for s in r.skipped]}))
"""
TABLE_CHILD = """
import json, sys
from Orange.data import Domain, StringVariable, Table
import numpy as np
from orangecontrib.transferembed import embed
from orangecontrib.transferembed.widgets.table import table_source
paths = json.loads(sys.argv[1])
var = StringVariable("image")
var.attributes["type"] = "image"
table = Table.from_numpy(Domain([], metas=[var]), np.empty((len(paths), 0)),
                         metas=np.array(paths, object).reshape(-1, 1))
r = embed(table_source(table, var), "MobileNet", weights=None, alpha=0.25, input_size=32,
          cache=False)
print(json.dumps({"embedded": len(r), "skipped": [[s.item, s.reason] for s in r.skipped]}))
"""


@dataclass
class Outcome:
    code: int | None
    out: str
    err: str
    wall: float
    peak_mib: float
    killed: str = ""  #: "time" or "memory" where the watch ended it

    @property
    def bounded(self) -> bool:
        return not self.killed

    def describe(self) -> str:
        return (f"exit {self.code}, {self.wall:.1f} s, peak {self.peak_mib:.0f} MiB"
                + (f", KILLED past the {self.killed} bound" if self.killed else ""))


def watched(argv: list[str], env: dict, limit_s: float = LIMIT_S,
            limit_mib: float = LIMIT_MIB) -> Outcome:
    """Run ``argv``, killing its process group past ``limit_s`` or ``limit_mib`` of RSS."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err, text=True,
                                start_new_session=True)
        peak, killed = 0.0, ""
        while proc.poll() is None:
            peak = max(peak, _tree_rss_mib(proc.pid))
            elapsed = time.perf_counter() - started
            killed = "time" if elapsed > limit_s else "memory" if peak > limit_mib else ""
            if killed:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.05)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return Outcome(proc.returncode, out.read(), err.read(), wall, peak, killed)


def _tree_rss_mib(pid: int) -> float:
    try:
        parent = psutil.Process(pid)
        procs = [parent, *parent.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**20


def skipped_rows(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as file:  # must be valid UTF-8
        return list(csv.reader(file))[1:]


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims ``width`` x ``height`` pixels, and no pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data \
            + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))


class Special:
    def __init__(self, faults, check, photos):
        self.faults, self.check, self.photos = faults, check, photos
        self.tmp, self.cli = faults.tmp / "issue20", faults.cli
        self.tmp.mkdir()
        self.env = faults.base
        self.tree = self.special_tree(self.tmp / "special")

    def command(self, *args: str) -> list[str]:
        return [self.cli, "-tm", "MobileNet", "--alpha", "0.25", "-weights", "None",
                "--input-size", "32", "-q", "--max-image-bytes", "2M", *args]

    def special_tree(self, root: Path) -> Path:
        """6 readable photos (classes a, b) and :data:`SPECIALS` items that are not images."""
        self.photos(root, 6, (48, 40))
        os.mkfifo(root / "a" / "fifo.jpg")
        (root / "a" / "zero.jpg").symlink_to("/dev/zero")
        (root / "b" / "urandom.png").symlink_to("/dev/urandom")
        (root / "b" / "folder.jpg").mkdir()
        (root / "b" / "broken.png").symlink_to(root / "nowhere.png")
        (root / "a" / "big.jpg").write_bytes(b"\xff\xd8\xff" + os.urandom(3 << 20))
        (root / "a" / "text.png").write_text("not an image")
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(str(root / "a" / "sock.png"))
        return root

    def judge(self, name: str, outcome: Outcome, out: Path, run: str, embedded: int,
              skipped: int, code: int = 0) -> None:
        rows = skipped_rows(out / f"{run}_skipped.csv")
        data = out / f"{run}_data.npy"
        got = len(np.load(data)) if data.exists() and outcome.code == 0 else 0
        reasons = all(len(row) == 2 and row[1].strip() for row in rows)
        self.check(name, outcome.bounded and outcome.code == code and got == embedded
                   and len(rows) == skipped and reasons,
                   f"{outcome.describe()}; embedded {got} of {embedded}, skipped "
                   f"{len(rows)} of {skipped}" + ("" if reasons else ", a reason missing")
                   + ("" if outcome.code == code else f"; {outcome.err.strip()[-200:]}"))

    # --- 1. special files in every source -------------------------------------------------

    def special_folder(self) -> None:
        out = self.tmp / "out-folder"
        outcome = watched(self.command("--folder", str(self.tree), "-dir", str(out), "-n",
                                       "run"), self.env)
        self.judge("special files in a folder (FIFO, /dev/zero, /dev/urandom, socket, folder "
                   "x.jpg, broken link, 3 MB over --max-image-bytes 2M, text): skipped",
                   outcome, out, "run", 6, SPECIALS)

    def special_csv(self) -> None:
        listing = self.tmp / "special.csv"
        paths = sorted(p for p in self.tree.glob("*/*"))
        rows = [f"{p.parent.name},{p}" for p in paths] + ["z,/dev/zero", "z,/dev/urandom"]
        listing.write_text("\n".join(rows) + "\n")
        out = self.tmp / "out-csv"
        outcome = watched(self.command("-csv", str(listing), "-dir", str(out), "-n", "run"),
                          self.env)
        self.judge("a CSV naming special files and /dev/zero: skipped", outcome, out, "run",
                   6, SPECIALS + 2)

    def special_inputs(self) -> None:
        out = self.tmp / "out-inputs"
        out.mkdir()
        old = {"run_data.npy": b"old data", "run_labels.npy": b"old labels"}
        for name, content in old.items():
            (out / name).write_bytes(content)
        os.mkfifo(self.tmp / "fifo.csv")
        os.mkfifo(self.tmp / "fifo.npy")
        (self.tmp / "zero.csv").symlink_to("/dev/zero")
        runs = [("-csv", str(self.tmp / "fifo.csv")), ("-csv", str(self.tmp / "zero.csv")),
                ("-data", str(self.tmp / "fifo.npy"), "-labels", str(self.tmp / "fifo.npy"),
                 "-he", "8", "-w", "8", "-c", "3")]
        outcomes = [watched(self.command(*args, "-dir", str(out), "-n", "run"), self.env, 60)
                    for args in runs]
        kept = {p.name: p.read_bytes() for p in out.iterdir()} == old
        self.check("-csv a FIFO, -csv /dev/zero, -data a FIFO: exit 2 at once, old outputs kept",
                   all(o.bounded and o.code == 2 for o in outcomes) and kept,
                   "; ".join(f"{o.describe()}: {o.err.strip()[-90:]}" for o in outcomes))

    def special_table(self) -> None:
        paths = [str(p) for p in sorted(self.tree.glob("*/*"))] + ["/dev/zero"]
        outcome = watched([sys.executable, "-c", TABLE_CHILD, json.dumps(paths)], self.env)
        report = json.loads(outcome.out or "{}") if outcome.code == 0 else {}
        skipped = report.get("skipped", [])
        self.check("an Orange table naming special files and /dev/zero: skipped",
                   outcome.bounded and report.get("embedded") == 6
                   and len(skipped) == SPECIALS + 1 and all(r for _, r in skipped),
                   f"{outcome.describe()}; embedded {report.get('embedded')}, skipped "
                   f"{len(skipped)} of {SPECIALS + 1} {outcome.err.strip()[-200:]}")

    def special_cluster(self) -> None:
        out = self.tmp / "out-cluster"
        outcome = watched(self.command("--folder", str(self.tree), "-dir", str(out), "-n",
                                       "run", "--local-cluster", "1"), self.env)
        self.judge("special files read by a cluster's worker (--local-cluster 1): skipped",
                   outcome, out, "run", 6, SPECIALS)

    # --- 2. walking folders ---------------------------------------------------------------

    def walking(self) -> None:
        root, elsewhere = self.tmp / "walk", self.tmp / "elsewhere"
        self.photos(elsewhere, 4, (40, 40))  # elsewhere/a (2), elsewhere/b (2)
        self.photos(root / "ants", 4, (40, 40))  # ants/a, ants/b: nested, class ants
        (root / "bees").symlink_to(elsewhere / "a", target_is_directory=True)
        (root / "ants" / "linked.jpg").symlink_to(next((elsewhere / "b").glob("*.jpg")))
        (root / "ants" / "a" / "up").symlink_to(root / "ants", target_is_directory=True)
        (root / "ants" / "root").symlink_to(root, target_is_directory=True)
        (root / "ants" / "parent").symlink_to(self.tmp, target_is_directory=True)
        (root / "zz-again").symlink_to(elsewhere / "a", target_is_directory=True)
        odd = os.path.join(os.fsencode(root), b"cl\xe9")
        os.mkdir(odd)
        self.photos(Path(os.fsdecode(odd)) / "x", 1)
        os.rename(next(Path(os.fsdecode(odd)).rglob("*.jpg")),
                  os.fsdecode(os.path.join(odd, b"ok\xff.jpg")))
        with open(os.path.join(odd, b"bad\xfe.png"), "wb") as file:
            file.write(b"not an image")
        out = self.tmp / "out-walk"
        outcome = watched(self.command("--folder", str(root), "-dir", str(out), "-n", "run",
                                       "-to-csv"), self.env, 120)
        try:
            rows = skipped_rows(out / "run_skipped.csv")
            with open(out / "run.csv", encoding="utf-8") as file:
                classes = [row[0] for row in list(csv.reader(file))[1:]]
        except (OSError, UnicodeDecodeError) as exc:
            rows, classes = [], [repr(exc)]
        counts = {name: classes.count(name) for name in sorted(set(classes))}
        self.check("walking: a linked class folder and file followed, 3 link loops and a link "
                   "to a walked folder walked once, names not UTF-8 (8 images, 1 skipped)",
                   outcome.bounded and outcome.code == 0
                   and counts == {"ants": 5, "bees": 2, "cl\\xe9": 1} and len(rows) == 1
                   and rows[0][0].endswith("bad\\xfe.png"),
                   f"{outcome.describe()}; embedded by class {counts}, skipped "
                   f"{rows} {outcome.err.strip()[-200:]}")

    def walk_100k(self) -> None:
        folder = self.tmp / "flat" / "a"
        folder.mkdir(parents=True)
        for i in range(100_000):
            (folder / f"{i:06d}.{'png' if i % 10 == 0 else 'txt'}").touch()
        code = ("import sys; from orangecontrib.transferembed.pipeline.sources import "
                "folder_source; print(len(folder_source(sys.argv[1])))")
        outcome = watched([sys.executable, "-c", code, str(folder.parent)], self.env, 60, 1024)
        self.check("a folder of 100,000 entries: walked within 60 s and 1 GiB",
                   outcome.bounded and outcome.out.strip() == "10000", outcome.describe())

    # --- 3. many writers, one cache -------------------------------------------------------

    def solo(self, folder: Path, out: Path) -> np.ndarray:
        env = {**self.env, "TRANSFEREMBED_CACHE_DIR": str(self.tmp / f"solo-{folder.name}")}
        watched(self.command("--folder", str(folder), "-dir", str(out), "-n", "solo"), env)
        return np.load(out / "solo_data.npy")

    def many_writers(self) -> None:
        folder, out = self.photos(self.tmp / "writers", 16, (64, 48)), self.tmp / "out-writers"
        expected = self.solo(folder, out)
        env = {**self.env, "TRANSFEREMBED_CACHE_DIR": str(self.tmp / "shared-cache")}
        argvs = [self.command("--folder", str(folder), "-dir", str(out), "-n", "cli"),
                 [sys.executable, "-c", API_CHILD, str(folder), str(out / "api.npy")],
                 self.command("--folder", str(folder), "-dir", str(out), "-n", "cluster",
                              "--local-cluster", "1")]
        names = ["cli_data.npy", "api.npy", "cluster_data.npy"]
        details, ok = [], True
        for round_ in ("cold", "warm"):
            started = time.perf_counter()
            procs = [subprocess.Popen(a, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True) for a in argvs]
            codes = [p.wait(LIMIT_S * 2) for p in procs]
            same = [(out / n).exists() and np.array_equal(np.load(out / n), expected)
                    for n in names]
            ok = ok and codes == [0, 0, 0] and all(same)
            details.append(f"{round_}: exits {codes}, equal {same}, "
                           f"{time.perf_counter() - started:.0f} s")
            for name in names:
                (out / name).unlink(missing_ok=True)
        self.check("the command, the API and a cluster driver at once on one cold cache and "
                   "store (one conversion started by all): bit for bit the solo run",
                   ok, "; ".join(details))

    def kills(self) -> None:
        folder, out = self.photos(self.tmp / "kills", 60, (64, 48)), self.tmp / "out-kills"
        expected = self.solo(folder, out)
        env = {**self.env, "TRANSFEREMBED_CACHE_DIR": str(self.tmp / "killed-cache")}
        rng, moments, mixed = random.Random(20), [], []
        for _ in range(4):
            proc = subprocess.Popen(self.command("--folder", str(folder), "-dir", str(out),
                                                 "-n", "run", "-b", "2"),
                                    env=env, stderr=subprocess.DEVNULL, start_new_session=True)
            moment = rng.uniform(0.5, 12.0)
            time.sleep(moment)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            moments.append(f"{moment:.1f}")
            data, labels = out / "run_data.npy", out / "run_labels.npy"
            if data.exists() and labels.exists() and len(np.load(data)) != len(np.load(labels)):
                mixed.append(moment)
        outcome = watched(self.command("--folder", str(folder), "-dir", str(out), "-n", "run"),
                          env)
        same = outcome.code == 0 and np.array_equal(np.load(out / "run_data.npy"), expected)
        self.check("kill -9 at random moments (conversion, cache, outputs), then a run: whole "
                   "and bit for bit the solo run", same and not mixed and outcome.bounded,
                   f"killed at {', '.join(moments)} s; then {outcome.describe()}")

    # --- 4. label texts -------------------------------------------------------------------

    def labels(self) -> None:
        folder = self.tmp / "labels"
        folder.mkdir()
        with open(folder / "list.csv", "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            for i, label in enumerate(LABELS):
                self.photos(folder / str(i), 1)
                writer.writerow([label, next((folder / str(i)).glob("*/*.jpg"))])
        out = self.tmp / "out-labels"
        first = watched(self.command("-csv", str(folder / "list.csv"), "-dir", str(out)),
                        self.env)
        second = watched(self.command("-csv", str(folder / "list.csv"), "-dir", str(out),
                                      "-to-csv"), self.env)
        try:
            npy = np.load(out / "transferfeature_labels.npy")[:, 0].tolist()
            with open(out / "transferfeature.csv", newline="", encoding="utf-8") as file:
                written = [row[0] for row in list(csv.reader(file))[1:]]
        except OSError as exc:
            npy = written = [repr(exc)]
        self.check("label texts (commas, quotes, accents, scripts, leading =, 007) through "
                   "CSV in, npy labels and CSV out", first.code == second.code == 0
                   and npy == LABELS and written == LABELS, f"npy {npy}; csv {written}")

    # --- 5. pathological inputs -----------------------------------------------------------

    def csv_100k_missing(self) -> None:
        folder = self.photos(self.tmp / "few", 10, (40, 40))
        real = sorted(folder.glob("*/*.jpg"))
        rows = [f"c{i % 3},missing/{i}.jpg" for i in range(100_000 - len(real))]
        rows += [f"real,{p}" for p in real]
        (self.tmp / "100k.csv").write_text("\n".join(rows) + "\n")
        out = self.tmp / "out-100k"
        outcome = watched(self.command("-csv", str(self.tmp / "100k.csv"), "-dir", str(out),
                                       "-n", "run"), self.env, 60, 2048)
        self.judge("a CSV of 100,000 rows, all but 10 naming missing files: within 60 s, "
                   "skipped list written", outcome, out, "run", 10, 100_000 - len(real))

    def odd_images(self) -> None:
        folder = self.tmp / "odd" / "x"
        folder.mkdir(parents=True)
        rng = np.random.default_rng(3)
        Image.fromarray(rng.integers(0, 256, (1, 60_000, 3), np.uint8)).save(folder / "wide.png")
        Image.fromarray(rng.integers(0, 256, (60_000, 1, 3), np.uint8)).save(folder / "tall.png")
        png_header_only(folder / "bomb.png", 100_000, 100_000)
        png_header_only(folder / "claims-80mp.png", 10_000, 8_000)
        frames = [Image.new("RGB", (64, 64), c) for c in ("red", "blue", "green")]
        for kind in ("gif", "tiff", "png", "webp"):
            frames[0].save(folder / f"many.{kind}", save_all=True, append_images=frames[1:],
                           **({"lossless": True} if kind == "webp" else {}))
        frames[0].save(folder / "first.bmp")
        out = self.tmp / "out-odd"
        outcome = watched(self.command("--folder", str(folder.parent), "-dir", str(out), "-n",
                                       "run", "--no-cache"), self.env, 120, 2048)
        try:
            data = np.load(out / "run_data.npy")
            first = [np.array_equal(data[i], data[0]) for i in range(1, 5)]  # first.bmp: row 0
        except (OSError, IndexError) as exc:
            first = [repr(exc)]
        self.judge("1 x 60,000 and 60,000 x 1 images, header claiming 100,000^2 and 80 MP "
                   "pixels, animated GIF/PNG/WebP and multi-page TIFF", outcome, out, "run",
                   7, 2)
        self.check("animated and multi-page files: the first frame is embedded", all(
            v is True for v in first), f"equal to the first frame: {first}")
