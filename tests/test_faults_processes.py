"""Many writers, one cache (issue 20): real processes, real kills.

The writers of the cache, the converted-model store and the outputs are killed
with SIGKILL at random moments while they write, and what they leave must be
whole. Then the command, the API (as the widget calls it) and a cluster's
driver run at once on one cold cache and store, and each gives what a solo run
gives, bit for bit.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orangecontrib.transferembed.pipeline.cache import DB_NAME, EmbeddingCache
from orangecontrib.transferembed.runtimes import store

KILLS = 8
#: Children that write in a loop until killed; argv[1] is their folder.
WRITERS = {
    "store": """
import sys
from pathlib import Path
from orangecontrib.transferembed.runtimes import store
folder, i = Path(sys.argv[1]), 0
print("ready", flush=True)
while True:
    (folder / (store._digest("k") + ".json")).unlink(missing_ok=True)  # a new conversion
    store.save("k", bytes([i % 251]) * (3 << 20), folder)
    i += 1
""",
    "cache": """
import sys
import numpy as np
from orangecontrib.transferembed.pipeline.cache import EmbeddingCache
cache, i = EmbeddingCache(sys.argv[1]), 0
print("ready", flush=True)
while True:
    cache.put_many({f"k{j}": np.full(256, j, np.float32) for j in range(i, i + 50)})
    i += 50
""",
    "outputs": """
import sys
import numpy as np
from orangecontrib.transferembed.pipeline.results import EmbeddingResult
from orangecontrib.transferembed.pipeline.sources import ArraySource
from orangecontrib.transferembed.writers import write_csv, write_npy_pair
i = 0
print("ready", flush=True)
while True:
    n = 2000 + i % 7
    source = ArraySource(np.zeros((n, 2, 2, 3), np.uint8), labels=np.full(n, i))
    result = EmbeddingResult(np.full((n, 64), i, np.float32), np.arange(n), [], source,
                             None)
    write_npy_pair(result, sys.argv[1], "run")
    write_csv(result, sys.argv[1], "run")
    i += 1
""",
}


def kill_at_random(kind: str, folder: Path, seed: int) -> None:
    """Start the writer, let it write for a random while, and SIGKILL it."""
    rng = random.Random(seed)
    proc = subprocess.Popen([sys.executable, "-c", WRITERS[kind], str(folder)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(rng.uniform(0.0, 0.4))
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL


def test_store_killed_while_writing_is_whole_after(tmp_path):
    for seed in range(KILLS):
        kill_at_random("store", tmp_path, seed)
        found = store.load("k", tmp_path)  # a whole model, or none
        if found is not None:
            data = found.read_bytes()
            assert len(data) == 3 << 20 and data == data[:1] * len(data)
    assert store.save("k", b"whole", tmp_path) is not None or store.load("k", tmp_path)
    assert store.load("k", tmp_path) is not None


def test_cache_killed_while_writing_is_whole_after(tmp_path):
    for seed in range(KILLS):
        kill_at_random("cache", tmp_path, seed)
        cache = EmbeddingCache(tmp_path)
        keys = [row[0] for row in cache._conn.execute("SELECT key FROM embeddings")]
        assert keys
        for key in keys:
            assert np.array_equal(cache.get(key), np.full(256, int(key[1:]), np.float32))
        assert cache.damaged == 0
        cache.close()
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_outputs_killed_while_writing_are_never_mixed(tmp_path):
    for seed in range(KILLS):
        kill_at_random("outputs", tmp_path, seed)
        data_path, labels_path = tmp_path / "run_data.npy", tmp_path / "run_labels.npy"
        if data_path.exists():
            data = np.load(data_path)
            version = data[0, 0]
            assert (data == version).all()
            if labels_path.exists():  # a pair is one run's, never a new file and an old one
                labels = np.load(labels_path)
                assert len(labels) == len(data) and (labels == int(version)).all()
        if (tmp_path / "run.csv").exists():
            lines = (tmp_path / "run.csv").read_text().splitlines()
            assert lines[0].startswith("Class,n0,") and len(lines) - 1 in range(2000, 2007)


# --- the real command, the API and a cluster's driver on one cold cache ---------------------

SETTINGS = ["-tm", "MobileNet", "--alpha", "0.25", "-weights", "None", "--input-size", "32",
            "-q"]
API = ("import sys, numpy as np; from orangecontrib.transferembed import embed; "
       "r = embed(sys.argv[1], 'MobileNet', weights=None, alpha=0.25, input_size=32); "
       "np.save(sys.argv[2], r.embeddings)")


def photos(folder: Path, count: int = 12) -> Path:
    rng = np.random.default_rng(5)
    for i in range(count):
        path = folder / ("ab"[i % 2]) / f"{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(path)
    return folder


def command(folder: Path, out: Path, name: str, *more: str) -> list[str]:
    return [sys.executable, "-m", "orangecontrib.transferembed", "--folder", str(folder),
            *SETTINGS, "-dir", str(out), "-n", name, *more]


def environment(cache: Path) -> dict:
    return {**os.environ, "TRANSFEREMBED_CACHE_DIR": str(cache)}


@pytest.mark.own_store
def test_command_api_and_cluster_driver_at_once_on_one_cold_cache(tmp_path):
    pytest.importorskip("distributed")
    folder, out = photos(tmp_path / "in"), tmp_path / "out"
    solo = subprocess.run(command(folder, out, "solo"), env=environment(tmp_path / "solo"),
                          capture_output=True, text=True, timeout=600)
    assert solo.returncode == 0, solo.stderr
    expected = np.load(out / "solo_data.npy")

    shared = environment(tmp_path / "shared")
    runs = [command(folder, out, "cli"), [sys.executable, "-c", API, str(folder),
                                          str(out / "api.npy")],
            command(folder, out, "cluster", "--local-cluster", "1")]
    for round_ in ("cold", "warm"):
        procs = [subprocess.Popen(argv, env=shared, stderr=subprocess.PIPE, text=True)
                 for argv in runs]
        errors = [proc.communicate(timeout=600)[1] for proc in procs]
        assert [proc.returncode for proc in procs] == [0, 0, 0], (round_, errors)
        for name in ("cli_data.npy", "api.npy", "cluster_data.npy"):
            assert np.array_equal(np.load(out / name), expected), (round_, name)
        for name in ("cli_data.npy", "api.npy", "cluster_data.npy"):
            (out / name).unlink()
    models = list((tmp_path / "shared" / "converted").glob("*.tflite"))
    assert len(models) == 1 and not list((tmp_path / "shared" / "converted").glob(".*"))


@pytest.mark.own_store
def test_a_command_killed_mid_run_leaves_the_next_run_whole(tmp_path):
    folder, out = photos(tmp_path / "in", 40), tmp_path / "out"
    env = environment(tmp_path / "cache")
    rng = random.Random(int(os.environ.get("TRANSFEREMBED_KILL_SEED", "20")))
    for _ in range(2):
        proc = subprocess.Popen(command(folder, out, "run", "-b", "2"), env=env,
                                start_new_session=True)
        time.sleep(rng.uniform(1.0, 8.0))
        os.killpg(proc.pid, signal.SIGKILL)  # the conversion's child too
        proc.wait(30)
    whole = subprocess.run(command(folder, out, "run"), env=env, capture_output=True,
                           text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr
    fresh = subprocess.run(command(folder, out, "fresh", "--no-cache"),
                           env=environment(tmp_path / "fresh"), capture_output=True,
                           text=True, timeout=600)
    assert fresh.returncode == 0, fresh.stderr
    assert np.array_equal(np.load(out / "run_data.npy"), np.load(out / "fresh_data.npy"))
    assert np.array_equal(np.load(out / "run_labels.npy"), np.load(out / "fresh_labels.npy"))
