"""Faults and hostile inputs: nothing lost, nothing wrong served, one clear word each."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orangecontrib.transferembed import embed, get_backbone
from orangecontrib.transferembed.cli.main import main
from orangecontrib.transferembed.errors import (
    EmbeddingCancelled,
    SettingsError,
    WeightsUnavailableError,
)
from orangecontrib.transferembed.models.weights import resolve_weights
from orangecontrib.transferembed.pipeline import sources
from orangecontrib.transferembed.pipeline.cache import DB_NAME
from orangecontrib.transferembed.pipeline.sources import ArraySource, folder_source
from orangecontrib.transferembed.writers import OutputError, write_atomically

FAST = {"model": "MobileNet", "weights": None, "alpha": 0.25, "input_size": 32}
MOBILENET_025 = "mobilenet_2_5_224_tf_no_top.h5"


def images(folder: Path, n: int = 12, side: int = 40) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        cls = folder / ("a" if i % 2 else "b")
        cls.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(
            cls / f"{i:03d}.png")
    return folder


def run_cli(*args, env=None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orangecontrib.transferembed", *args],
                          capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=300, **kwargs)


# --- the cache ---------------------------------------------------------------------------

def test_overwritten_cache_blobs_are_never_served(tmp_path):
    data = np.random.default_rng(1).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    first = embed(ArraySource(data), cache=str(tmp_path), **FAST)
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        rows = conn.execute("SELECT key, length(vector) FROM embeddings").fetchall()
        rng = np.random.default_rng(2)
        for key, size in rows:
            conn.execute("UPDATE embeddings SET vector = ? WHERE key = ?",
                         (rng.integers(0, 256, size, dtype=np.uint8).tobytes(), key))
    notices = []
    second = embed(ArraySource(data), cache=str(tmp_path), notice=notices.append, **FAST)
    assert second.n_cached == 0
    assert np.array_equal(second.embeddings, first.embeddings)
    assert notices == ["6 cached embedding(s) failed their checksum; they were computed "
                       "again and replaced"]
    third = embed(ArraySource(data), cache=str(tmp_path), **FAST)
    assert third.n_cached == 6 and np.array_equal(third.embeddings, first.embeddings)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_cache_file_is_rebuilt_and_the_user_told_once(tmp_path, damage, capsys):
    folder = images(tmp_path / "in", 4)
    cache = tmp_path / "cache"
    argv = ["--folder", str(folder), "-tm", "MobileNet", "--alpha", "0.25", "-weights",
            "None", "--input-size", "32", "-dir", str(tmp_path / "out"), "-q"]
    os.environ["TRANSFEREMBED_CACHE_DIR"] = str(cache)
    try:
        assert main(argv) == 0
        db = cache / DB_NAME
        content = db.read_bytes()
        db.write_bytes(content[:100] if damage == "truncated" else os.urandom(len(content)))
        capsys.readouterr()
        assert main(argv) == 0
        err = capsys.readouterr().err
        assert err.count("transferembed: note:") == 1 and "damaged" in err
        assert main(argv) == 0
        assert "note:" not in capsys.readouterr().err
    finally:
        del os.environ["TRANSFEREMBED_CACHE_DIR"]


def test_bad_cache_size_limit_exits_2(tmp_path, capsys):
    folder = images(tmp_path / "in", 2)
    os.environ["TRANSFEREMBED_CACHE_MAX_MB"] = "lots"
    try:
        with pytest.raises(SystemExit) as exc:
            main(["--folder", str(folder), "-tm", "MobileNet", "-weights", "None", "-dir",
                  str(tmp_path / "out")])
    finally:
        del os.environ["TRANSFEREMBED_CACHE_MAX_MB"]
    assert exc.value.code == 2
    assert "TRANSFEREMBED_CACHE_MAX_MB must be a positive number" in capsys.readouterr().err


def test_network_file_systems_get_a_rollback_journal(tmp_path, monkeypatch):
    from orangecontrib.transferembed.pipeline import cache as caching

    assert caching.file_system_type(Path("/proc")) == "proc"
    monkeypatch.setattr(caching, "file_system_type", lambda folder: "nfs4")
    opened = caching.EmbeddingCache(tmp_path)
    assert opened.journal == "delete"
    assert opened._conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    opened.close()


# --- weights -----------------------------------------------------------------------------

def test_weights_planted_in_tmp_are_not_loaded(tmp_path, monkeypatch):
    home, shared_tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    planted = shared_tmp / ".keras" / "models" / MOBILENET_025
    planted.parent.mkdir(parents=True)
    planted.write_bytes(b"anyone could have put this here")
    monkeypatch.delenv("KERAS_HOME", raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr("tempfile.gettempdir", lambda: str(shared_tmp))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("offline (test)")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    from orangecontrib.transferembed.models.weights import BUNDLED_DIR

    # 0.25's weights come with the package: those, never the planted file
    assert resolve_weights(get_backbone("MobileNet"), "imagenet", 0.25) == \
        str(BUNDLED_DIR / MOBILENET_025)
    planted.rename(planted.with_name(get_backbone("MobileNet").weights_filename(0.5)))
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_weights(get_backbone("MobileNet"), "imagenet", 0.5)
    assert str(home / ".keras" / "models") in str(info.value)  # looked in ~/.keras only


def test_weights_in_a_folder_others_can_write_are_refused(tmp_path, monkeypatch):
    models = tmp_path / "keras" / "models"
    models.mkdir(parents=True)
    (models / MOBILENET_025).write_bytes(b"x" * 100)
    models.chmod(0o777)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(WeightsUnavailableError, match="other users can write"):
        resolve_weights(get_backbone("MobileNet"), "imagenet", 0.25)


def test_a_damaged_weights_file_exits_2_naming_it(tmp_path, empty_keras_home):
    target = empty_keras_home / "models" / get_backbone("ResNet50").weights_filename()
    target.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 1000)
    folder = images(tmp_path / "in", 2)
    proc = run_cli("--folder", str(folder), "-tm", "ResNet50", "-dir", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert str(target) in proc.stderr and "damaged or incomplete" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_truncated_real_weights_are_refused(shared_data, empty_keras_home):
    real = (shared_data / "weights" / MOBILENET_025).read_bytes()
    (empty_keras_home / "models" / MOBILENET_025).write_bytes(real[:len(real) // 2])
    with pytest.raises(WeightsUnavailableError, match="damaged or incomplete"):
        resolve_weights(get_backbone("MobileNet"), "imagenet", 0.25)


class _Response:
    """A server that sends half a file and no Content-Length."""

    def __init__(self, body: bytes):
        self.body, self.headers = body, {}

    def read(self, size=-1):
        chunk, self.body = self.body[:size], self.body[size:]
        return chunk

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("model, alpha", [("MobileNetV3Small", 1.0), ("MobileNet", 0.5)])
def test_a_short_download_without_content_length_is_refused(empty_keras_home, monkeypatch,
                                                            model, alpha):
    # MobileNetV3Small has a known hash (MobileNet 0.25's, also known, comes with the
    # package); MobileNet 0.5 has none, so the whole HDF5 file is read instead.
    import h5py

    whole = empty_keras_home / "whole.h5"
    with h5py.File(whole, "w") as file:
        file.create_dataset("kernel", data=np.arange(200_000, dtype=np.float32))
    short = whole.read_bytes()[:300_000]
    whole.unlink()
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: _Response(short))
    with pytest.raises(WeightsUnavailableError, match="incomplete or damaged"):
        resolve_weights(get_backbone(model), "imagenet", alpha)
    assert not list((empty_keras_home / "models").iterdir())  # nothing left behind


# --- outputs -----------------------------------------------------------------------------

def test_dir_naming_a_file_exits_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as exc:
        main(["--folder", str(images(tmp_path / "in", 2)), "-dir", str(blocker)])
    assert exc.value.code == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def _old_outputs(out: Path) -> dict[str, bytes]:
    out.mkdir(exist_ok=True)
    old = {"run_data.npy": b"old data", "run_labels.npy": b"old labels",
           "run_skipped.csv": b"old skips"}
    for name, content in old.items():
        (out / name).write_bytes(content)
    return old


def test_full_disk_keeps_old_outputs_and_leaves_no_stray_file(tmp_path):
    folder = images(tmp_path / "in", 8)
    out = tmp_path / "out"
    old = _old_outputs(out)
    code = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))\n"
        "from orangecontrib.transferembed.cli.main import main\n"
        f"sys.exit(main(['--folder', {str(folder)!r}, '-tm', 'MobileNet', '--alpha', '0.25',"
        f" '-weights', 'None', '--input-size', '32', '--no-cache', '-dir', {str(out)!r},"
        f" '-n', 'run', '-q']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "cannot write" in proc.stderr and "Traceback" not in proc.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old


def test_sigterm_stops_cleanly_with_143(tmp_path):
    folder = images(tmp_path / "in", 400, side=96)
    out = tmp_path / "out"
    old = _old_outputs(out)
    proc = subprocess.Popen(
        [sys.executable, "-m", "orangecontrib.transferembed", "--folder", str(folder), "-tm",
         "MobileNet", "--alpha", "0.25", "-weights", "None", "--no-cache", "-b", "4",
         "-dir", str(out), "-n", "run"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    seen = ""
    while "Generating embeddings" not in seen:  # stop it mid-run, after the model is built
        seen += proc.stderr.read(1)
        assert time.monotonic() < deadline and proc.poll() is None, seen
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "terminated; nothing was written" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old


def test_a_pair_never_mixes_a_new_file_with_an_old_one(tmp_path, monkeypatch):
    data, labels = tmp_path / "x_data.npy", tmp_path / "x_labels.npy"
    data.write_bytes(b"old data")
    labels.write_bytes(b"old labels")
    real_replace, calls = os.replace, []

    def failing_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_second)
    with pytest.raises(OutputError):
        write_atomically([data, labels], lambda a, b: (a.write(b"new"), b.write(b"new")))
    assert not labels.exists()  # the new data never sits beside the old labels
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x_data.npy"]


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_outputs_get_the_mode_the_umask_gives(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_atomically([tmp_path / "f.csv"], lambda f: f.write("x"), mode="w")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.csv").stat().st_mode) == mode


def test_a_read_error_is_not_called_a_write_error(tmp_path, capsys, monkeypatch):
    from orangecontrib.transferembed.cli import main as cli

    table = tmp_path / "labels.csv"
    table.write_text("a,x.png\n")

    def unreadable(*args):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(sources, "_check_regular", unreadable)  # as root, chmod cannot do it
    with pytest.raises(SystemExit):
        main(["-csv", str(table), "-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert "cannot read CSV file" in err and "Permission denied" in err
    assert "cannot write" not in err
    monkeypatch.undo()

    def failing(args):
        raise OSError(5, "Input/output error", "/media/photos/a.jpg")

    monkeypatch.setattr(cli, "run_embedding", failing)
    with pytest.raises(SystemExit) as exc:
        main(["-csv", str(table)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Input/output error: /media/photos/a.jpg" in err and "cannot write" not in err


def test_shards_leave_other_programs_part_files_alone(tmp_path):
    pytest.importorskip("distributed")
    folder = images(tmp_path / "in", 6)
    shards = tmp_path / "shards"
    shards.mkdir()
    foreign = {"part-00000.txt": b"mine", "part-00000.npy": b"also mine",
               "part-00000-notes.json": b"{}"}
    for name, content in foreign.items():
        (shards / name).write_bytes(content)
    assert main(["--folder", str(folder), "-tm", "MobileNet", "--alpha", "0.25", "-weights",
                 "None", "--input-size", "32", "-b", "2", "--shards", str(shards), "-dir",
                 str(tmp_path / "out"), "-q"]) == 0
    for name, content in foreign.items():
        assert (shards / name).read_bytes() == content


# --- the run -----------------------------------------------------------------------------

def test_a_programming_error_fails_the_run_loudly(monkeypatch):
    from orangecontrib.transferembed.pipeline import images as decoding

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug, not a bad image")

    monkeypatch.setattr(decoding, "decode_array", bug)
    data = np.zeros((3, 32, 32, 3), np.uint8)
    with pytest.raises(ZeroDivisionError):
        embed(ArraySource(data), cache=False, **FAST)


def test_memory_limit_does_not_change_the_results():
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, (7, 300, 200, 3), dtype=np.uint8)
    settings = dict(FAST, input_size="native", batch_size=4, cache=False)
    large = embed(ArraySource(data), memory_limit=8 << 30, **settings).embeddings
    small = embed(ArraySource(data), memory_limit=64 << 20, **settings).embeddings
    assert np.array_equal(large, small)


def test_large_images_get_fewer_rows_at_native_size():
    from orangecontrib.transferembed.pipeline.batches import rows_for

    assert rows_for((3000, 4000, 3), 32, 224, native=True) == 1
    assert rows_for((224, 224, 3), 32, 224, native=True) == 32
    assert rows_for((448, 448, 3), 32, 224, native=True) == 8
    assert rows_for((3000, 4000, 3), 32, 224, native=False) == 32


def test_building_a_large_folder_source_can_be_cancelled(tmp_path):
    folder = tmp_path / "many"
    for sub in range(20):
        (folder / f"c{sub}").mkdir(parents=True)
        for i in range(250):
            (folder / f"c{sub}" / f"{i}.png").touch()
    calls = []

    def stop():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(EmbeddingCancelled):
        folder_source(folder, stop)
    assert len(calls) == 4  # it stopped at the first look after the answer changed
    calls.clear()
    with pytest.raises(EmbeddingCancelled):  # the API passes it on to the source
        embed(folder, is_cancelled=stop, **FAST)
    assert len(calls) == 4


@pytest.mark.parametrize("kind", ["files", "arrays"])
def test_a_cluster_without_workers_gives_up(monkeypatch, tmp_path, kind):
    distributed = pytest.importorskip("distributed")
    from orangecontrib.transferembed.cluster import distributed as jobs
    from orangecontrib.transferembed.cluster.connect import ClusterError
    from orangecontrib.transferembed.config import EmbedConfig

    monkeypatch.setattr(jobs, "NO_WORKERS_TIMEOUT_S", 2.0)
    source = folder_source(images(tmp_path / "in", 4)) if kind == "files" \
        else ArraySource(np.zeros((4, 32, 32, 3), np.uint8))
    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=None,
                                  silence_logs=50) as cluster, \
            distributed.Client(cluster) as client:
        started = time.monotonic()
        with pytest.raises(ClusterError, match="no workers"):
            jobs.run_distributed(source, EmbedConfig(**FAST, cache=False, runtime="keras"),
                                 client)
        assert time.monotonic() - started < 60


def test_a_bad_memory_limit_is_a_setting_error():
    from orangecontrib.transferembed.config import parse_memory

    assert parse_memory("2G") == 2 << 30 and parse_memory("512M") == 512 << 20
    with pytest.raises(SettingsError):
        parse_memory("plenty")
    with pytest.raises(SettingsError, match="at least"):
        embed(np.zeros((1, 32, 32, 3), np.uint8), memory_limit=1000, **FAST)


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    """``kill -9`` during the final write leaves a temporary file; the next write of the
    same output removes it, but never one of a process still running."""
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname().replace(".", "_")
    target = tmp_path / "run_data.npy"
    orphan = tmp_path / f".run_data.npy.{host}-{dead.pid}.0badcafe.part"
    live = tmp_path / f".run_data.npy.{host}-{os.getpid()}.1badcafe.part"
    orphan.write_bytes(b"half")
    live.write_bytes(b"busy")
    write_atomically([target], lambda file: file.write(b"whole"))
    assert target.read_bytes() == b"whole"
    assert not orphan.exists() and live.exists()
