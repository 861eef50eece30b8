"""Special files, unbounded reads, folder walking and label texts (issue 20).

Each case that could hang on a FIFO or read ``/dev/zero`` forever runs under an
alarm, so a regression fails the test instead of hanging the suite.
"""

from __future__ import annotations

import csv
import os
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orangecontrib.transferembed import embed
from orangecontrib.transferembed.cli.main import main
from orangecontrib.transferembed.errors import EmbeddingCancelled, ImageError, SourceError
from orangecontrib.transferembed.pipeline import images as images_module
from orangecontrib.transferembed.pipeline import sources
from orangecontrib.transferembed.pipeline.sources import (
    CHECK_EVERY,
    csv_source,
    folder_source,
    read_file,
)
from orangecontrib.transferembed.writers import label_texts

FAST = {"model": "MobileNet", "weights": None, "alpha": 0.25, "input_size": 32,
        "cache": False}
CLI_FAST = ["-tm", "MobileNet", "--alpha", "0.25", "-weights", "None", "--input-size", "32",
            "--no-cache", "-q", "-n", "run"]


@pytest.fixture(autouse=True)
def _alarm():
    """Fail, rather than hang, when a read blocks or never ends."""
    def expired(*_):
        raise TimeoutError("the test blocked for 60 s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def png(path: Path, seed: int = 0, size=(24, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def special_folder(root: Path) -> dict[str, str]:
    """Two real images and one of each special file, named like images; their reasons."""
    png(root / "a" / "good.png", 1)
    png(root / "b" / "good.png", 2)
    os.mkfifo(root / "a" / "fifo.jpg")
    (root / "a" / "zero.jpg").symlink_to("/dev/zero")
    (root / "b" / "urandom.png").symlink_to("/dev/urandom")
    (root / "b" / "folder.jpg").mkdir()
    (root / "b" / "broken.png").symlink_to(root / "nowhere.png")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "a" / "sock.png"))
    return {"fifo.jpg": "FIFO", "zero.jpg": "character device",
            "urandom.png": "character device", "folder.jpg": "folder",
            "broken.png": "symbolic link whose target does not exist",
            "sock.png": "socket"}


# --- 1. only regular files, never without a bound -----------------------------------------

def test_special_files_in_a_folder_are_skipped_with_their_kind(tmp_path):
    reasons = special_folder(tmp_path / "in")
    result = embed(tmp_path / "in", **FAST)
    assert len(result) == 2
    skipped = {Path(item.item).name: item.reason for item in result.skipped}
    assert set(skipped) == set(reasons)
    for name, kind in reasons.items():
        assert kind in skipped[name], (name, skipped[name])
    assert all(str(tmp_path / "in") in item.item for item in result.skipped)  # as listed


def test_special_files_named_in_a_csv_are_skipped(tmp_path):
    reasons = special_folder(tmp_path / "in")
    rows = [f"x,{p}" for p in sorted((tmp_path / "in").glob("*/*"))]
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    result = embed(tmp_path / "list.csv", **FAST)
    assert len(result) == 2 and len(result.skipped) == len(reasons)


def test_a_fifo_put_in_place_after_the_check_does_not_block(tmp_path, monkeypatch):
    regular = os.stat(png(tmp_path / "real.png"))
    os.mkfifo(tmp_path / "swapped.png")
    monkeypatch.setattr(sources.os, "stat", lambda path, *a, **k: regular)
    with pytest.raises(ImageError, match="FIFO"):
        read_file(tmp_path / "swapped.png")


def test_a_file_over_the_bound_is_skipped_with_its_size(tmp_path, capsys):
    png(tmp_path / "in" / "a" / "small.png", 1)
    big = tmp_path / "in" / "a" / "big.jpg"
    big.write_bytes(b"\xff\xd8" + bytes(3 << 20))
    result = embed(tmp_path / "in", max_image_bytes=1 << 20, **FAST)
    assert len(result) == 1
    (item,) = result.skipped
    assert item.item.endswith("big.jpg") and f"({big.stat().st_size} bytes)" in item.reason
    assert "1 MB" in item.reason
    code = main(["--folder", str(tmp_path / "in"), *CLI_FAST, "--max-image-bytes", "1M",
                 "-dir", str(tmp_path / "out")])
    assert code == 0 and "big.jpg: file is 3 MB" in capsys.readouterr().err


def test_a_file_that_grows_while_read_stops_at_the_bound(tmp_path):
    path = tmp_path / "growing.png"
    path.write_bytes(bytes(5000))
    fd = os.open(path, os.O_RDONLY)
    try:  # the size seen at the check was 10 bytes; the file has grown since
        assert len(sources._read_at_most(fd, 10, 1000)) == 1001
    finally:
        os.close(fd)


def test_input_files_that_are_not_regular_files_are_refused(tmp_path):
    os.mkfifo(tmp_path / "list.csv")
    with pytest.raises(SourceError, match="list.csv is a FIFO"):
        csv_source(tmp_path / "list.csv")
    os.mkfifo(tmp_path / "data.npy")
    with pytest.raises(SourceError, match="data.npy is a FIFO"):
        sources.load_npy(tmp_path / "data.npy")
    (tmp_path / "zero.csv").symlink_to("/dev/zero")
    with pytest.raises(SourceError, match="character device"):
        csv_source(tmp_path / "zero.csv")


def test_a_bad_max_image_bytes_is_a_usage_error(tmp_path, capsys):
    png(tmp_path / "in" / "a.png")
    with pytest.raises(SystemExit) as exit_:
        main(["--folder", str(tmp_path / "in"), *CLI_FAST, "--max-image-bytes", "lots",
              "-dir", str(tmp_path / "out")])
    assert exit_.value.code == 2
    assert "--max-image-bytes must be a size" in capsys.readouterr().err


# --- 2. walking folders --------------------------------------------------------------------

def test_symlinked_files_and_class_folders_are_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    png(elsewhere / "bees" / "b1.png", 1)
    png(elsewhere / "single.png", 2)
    png(tmp_path / "in" / "ants" / "a1.png", 3)
    (tmp_path / "in" / "bees").symlink_to(elsewhere / "bees", target_is_directory=True)
    (tmp_path / "in" / "ants" / "linked.png").symlink_to(elsewhere / "single.png")
    source = folder_source(tmp_path / "in")
    assert source.paths == [str(tmp_path / "in" / "ants" / "a1.png"),
                            str(tmp_path / "in" / "ants" / "linked.png"),
                            str(tmp_path / "in" / "bees" / "b1.png")]
    assert source.labels.tolist() == ["ants", "ants", "bees"]


def test_symlink_loops_are_walked_once(tmp_path):
    root = tmp_path / "in"
    png(root / "a" / "x.png", 1)
    png(root / "a" / "deep" / "y.png", 2)
    (root / "a" / "deep" / "up").symlink_to(root / "a", target_is_directory=True)
    (root / "a" / "root").symlink_to(root, target_is_directory=True)
    (root / "b").symlink_to(root / "a", target_is_directory=True)
    (root / "a" / "parent").symlink_to(tmp_path, target_is_directory=True)
    source = folder_source(root)
    assert [Path(p).name for p in source.paths] == ["x.png", "y.png"]
    assert len({os.path.realpath(p) for p in source.paths}) == len(source)


def test_names_that_are_not_utf8_are_read_and_reported(tmp_path, capsys):
    root = os.fsencode(tmp_path / "in")
    os.makedirs(os.path.join(root, b"cl\xe9"))
    png(Path(os.fsdecode(os.path.join(root, b"cl\xe9", b"ok\xff.png"))), 1)
    bad = os.path.join(root, b"cl\xe9", b"bad\xfe.png")
    with open(bad, "wb") as file:
        file.write(b"not an image")
    out = tmp_path / "out"
    assert main(["--folder", str(tmp_path / "in"), *CLI_FAST, "-dir", str(out),
                 "-to-csv"]) == 0
    assert "bad\\xfe.png" in capsys.readouterr().err
    with open(out / "run_skipped.csv", encoding="utf-8") as file:
        rows = list(csv.reader(file))
    assert rows[1][0].endswith("cl\\xe9/bad\\xfe.png")
    with open(out / "run.csv", encoding="utf-8") as file:
        assert next(csv.reader(file)) and next(csv.reader(file))[0] == "cl\\xe9"


def test_cancel_acts_inside_one_large_folder(tmp_path):
    folder = tmp_path / "in" / "a"
    folder.mkdir(parents=True)
    for i in range(3 * CHECK_EVERY):
        (folder / f"{i:05d}.png").touch()
    calls = []

    def cancel_on_third_look() -> bool:
        calls.append(1)
        return len(calls) >= 3

    with pytest.raises(EmbeddingCancelled):
        folder_source(tmp_path / "in", cancel_on_third_look)


# --- 4. label texts ------------------------------------------------------------------------

LABELS = ["a,b", 'say "hi"', "\u00e9t\u00e9", "\u65e5\u672c",
          "\u0395\u03bb\u03bb\u03ac\u03b4\u03b1", "=1+2", "007", "1e3", "-5"]


def test_label_texts_survive_csv_in_csv_out_npy_and_table(tmp_path):
    from orangecontrib.transferembed.widgets.table import class_variable

    rows = []
    for i, label in enumerate(LABELS):
        png(tmp_path / f"{i}.png", i)
        rows.append([label, f"{i}.png"])
    with open(tmp_path / "list.csv", "w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows(rows)
    out = tmp_path / "out"
    assert main(["-csv", str(tmp_path / "list.csv"), *CLI_FAST, "-dir", str(out)]) == 0
    assert np.load(out / "run_labels.npy")[:, 0].tolist() == LABELS
    assert main(["-csv", str(tmp_path / "list.csv"), *CLI_FAST, "-dir", str(out),
                 "-to-csv"]) == 0
    with open(out / "run.csv", newline="", encoding="utf-8") as file:
        assert [row[0] for row in list(csv.reader(file))[1:]] == LABELS
    source = csv_source(tmp_path / "list.csv")
    assert source.labels.tolist() == LABELS
    variable, codes = class_variable(source.labels)
    assert [variable.values[int(c)] for c in codes] == LABELS
    assert label_texts(np.array(["007", "=A1"])) == ["007", "=A1"]


def test_ordinary_labels_stay_byte_for_byte_in_the_seed_csv(tmp_path):
    for i, label in enumerate(["ant", "bee"]):
        png(tmp_path / label / f"{i}.png", i)
    out = tmp_path / "out"
    assert main(["--folder", str(tmp_path), *CLI_FAST, "-dir", str(out), "-to-csv"]) == 0
    lines = (out / "run.csv").read_bytes().split(b"\n")
    assert lines[0].startswith(b"Class,n0,n1,") and lines[1].startswith(b"ant,")
    assert lines[2].startswith(b"bee,")


# --- 5. pathological images ----------------------------------------------------------------

def test_an_image_of_extreme_aspect_ratio(tmp_path):
    line = png(tmp_path / "line.png", size=(60000, 1)).read_bytes()
    assert images_module.decode_file_bytes(line, (32, 32), "crop").shape == (32, 32, 3)
    assert images_module.decode_file_bytes(line, (32, 32), "stretch").shape == (32, 32, 3)
    with pytest.raises(ImageError, match="smaller than the model's minimum"):
        images_module.decode_file_bytes(line, None, "crop", min_size=32)


def test_the_pixel_guard_holds_when_pillow_s_is_switched_off(tmp_path, monkeypatch):
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(ImageError, match="decompression bomb"):
        images_module.open_image(bomb, (32, 32))


@pytest.mark.parametrize("kind", ["GIF", "TIFF", "PNG"])
def test_animated_and_multi_page_files_give_their_first_frame(tmp_path, kind):
    frames = [Image.new("RGB", (16, 16), color) for color in ("red", "blue", "green")]
    path = tmp_path / f"many.{kind.lower()}"
    frames[0].save(path, format=kind, save_all=True, append_images=frames[1:])
    pixels = images_module.decode_file_bytes(path.read_bytes(), (16, 16), "crop")
    assert tuple(pixels[8, 8]) == (255, 0, 0) or (kind == "GIF" and pixels[8, 8, 0] > 200)


def test_a_list_naming_many_missing_files_is_read_quickly(tmp_path):
    rows = "".join(f"c{i % 3},missing/{i}.png\n" for i in range(20000))
    (tmp_path / "list.csv").write_text(rows)
    source = csv_source(tmp_path / "list.csv")
    assert len(source) == 20000
    with pytest.raises(ImageError, match="file not found"):
        source.read(19999)

