"""Running a job on a Dask cluster: same bits, order, skips; cancel, shards, a lost worker.

One ``LocalCluster`` of two single-thread worker processes serves the module.
Its workers load the real MobileNet 0.25 ImageNet weights from a Keras home
set before they start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from orangecontrib.transferembed import EmbedConfig, FileSource, folder_source, npy_source
from orangecontrib.transferembed.cli.main import main as cli_main
from orangecontrib.transferembed.cluster.connect import INSTALL_HINT, ClusterError
from orangecontrib.transferembed.cluster.distributed import Job, part_size
from orangecontrib.transferembed.cluster.distributed import run_distributed as _run_distributed
from orangecontrib.transferembed.errors import EmbeddingCancelled, SettingsError
from orangecontrib.transferembed.pipeline.engine import Hooks, run

distributed = pytest.importorskip("distributed")

MOBILENET_025 = "mobilenet_2_5_224_tf_no_top.h5"
CONFIG = EmbedConfig(model="MobileNet", weights="imagenet", alpha=0.25, batch_size=8,
                     cache=False)


@pytest.fixture(scope="module")
def client(shared_data, tmp_path_factory):
    home = tmp_path_factory.mktemp("keras_home")
    (home / "models").mkdir()
    shutil.copy(shared_data / "weights" / MOBILENET_025, home / "models")
    with pytest.MonkeyPatch.context() as patch:  # the workers inherit it
        patch.setenv("KERAS_HOME", str(home))
        patch.setenv("TRANSFEREMBED_CACHE_DIR", str(tmp_path_factory.mktemp("worker_cache")))
        patch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=None,
                                      silence_logs=50) as cluster:
            with distributed.Client(cluster) as dask_client:
                yield dask_client


@pytest.fixture(scope="module")
def photos(hymenoptera, tmp_path_factory) -> FileSource:
    """44 photos with a broken file and a missing one among them, to shift batches."""
    folder = tmp_path_factory.mktemp("photos")
    broken = folder / "broken.jpg"
    broken.write_bytes(b"not a JPEG")
    paths = folder_source(hymenoptera).paths[::9][:42]
    paths[3:3] = [str(broken)]
    paths[20:20] = [str(folder / "missing.jpg")]
    return FileSource(paths, np.array([os.path.basename(os.path.dirname(p)) for p in paths]))


@pytest.fixture(scope="module")
def reference(photos, client):
    return run(photos, CONFIG)


def run_distributed(source, config, client, *, progress=None, is_cancelled=None, **more):
    return _run_distributed(source, config, client,
                            hooks=Hooks(progress=progress, is_cancelled=is_cancelled), **more)


def skipped(result):
    return [(s.index, s.item, s.reason) for s in result.skipped]


def assert_same(result, reference):
    assert np.array_equal(result.embeddings, reference.embeddings)  # bitwise
    assert np.array_equal(result.indices, reference.indices)
    assert np.array_equal(result.labels, reference.labels)
    assert skipped(result) == skipped(reference)


def test_parts_are_whole_batches():
    assert part_size(398, 32, 2) == 32
    assert part_size(10**6, 32, 100) == 512
    assert part_size(10**5, 24, 4) % 24 == 0


def test_files_bitwise_equal_in_order_with_skips(client, photos, reference):
    seen = []
    result = run_distributed(photos, CONFIG, client, progress=lambda d, n: seen.append((d, n)))
    assert_same(result, reference)
    assert [s.reason for s in result.skipped] == ["not an image file (unknown format)",
                                                  "file not found"]
    assert len(seen) > 2 and seen[-1] == (len(photos), len(photos))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_random_weights_bitwise_equal(client, photos):
    # Keras seeds unseeded initializers from Python's random, which a worker's event
    # loop also draws from; the weights must not depend on it.
    config = EmbedConfig(model="MobileNet", weights=None, alpha=0.25, input_size=64,
                         batch_size=8, cache=False)
    subset = photos.subset(range(24))
    result = run_distributed(subset, config, client)
    expected = run(subset, config)
    assert np.count_nonzero(expected.embeddings) > 0
    assert_same(result, expected)


def test_int8_bitwise_equal_to_one_process(client, photos):
    # The workers convert the model themselves (their cache folder is their own): the
    # conversion, with its fixed calibration set, must give the same model.
    config = CONFIG.with_(precision="int8")
    subset = photos.subset(range(24))
    result = run_distributed(subset, config, client)
    expected = run(subset, config)
    assert expected.config.runtime == result.config.runtime == "tflite"
    assert result.config.precision == "int8"
    assert_same(result, expected)


def test_cache_gets_only_accepted_parts(client, photos, reference, tmp_path):
    # The skipped images make parts run on wrong guesses first; what those runs
    # computed must not reach the cache, where the right runs would read it.
    config = CONFIG.with_(cache=str(tmp_path / "cache"))
    result = run_distributed(photos, config, client)
    assert_same(result, reference)
    again = run(photos, config)  # one process, served by the cache the cluster filled
    assert again.n_cached == len(again) == len(reference)
    assert_same(again, reference)


def test_npy_rows_scattered_and_equal(client, seed_toy):
    source = npy_source(seed_toy / "toy_data.npy", seed_toy / "toy_labels.npy", 45, 80, 3)
    source = source.subset(range(30))
    job = Job(client, source, CONFIG, 8, None, {}, window=2)
    assert isinstance(job._data(0), distributed.Future)  # scattered, not in the task
    job.cancel()
    result = run_distributed(source, CONFIG, client)
    assert_same(result, run(source, CONFIG))


def test_cli_scheduler_writes_the_same_files(client, photos, tmp_path, capsys):
    folder = tmp_path / "in" / "ants"
    folder.mkdir(parents=True)
    for path in photos.paths[:12]:
        if os.path.exists(path):
            shutil.copy(path, folder)
    args = ["--folder", str(tmp_path / "in"), "-tm", "MobileNet", "--alpha", "0.25",
            "-b", "4", "--no-cache", "-q"]
    assert cli_main(args + ["-dir", str(tmp_path / "one")]) == 0
    address = client.scheduler.address
    assert cli_main(args + ["-dir", str(tmp_path / "two"), "--scheduler", address]) == 0
    for name in ("transferfeature_data.npy", "transferfeature_labels.npy",
                 "transferfeature_skipped.csv"):
        one, two = tmp_path / "one" / name, tmp_path / "two" / name
        assert one.read_bytes() == two.read_bytes(), name


def test_cancel_cancels_the_futures(client, photos):
    calls = []
    with pytest.raises(EmbeddingCancelled):
        run_distributed(photos, CONFIG, client, progress=lambda d, n: calls.append(d),
                        is_cancelled=lambda: bool(calls))
    assert calls and calls[-1] < len(photos)
    deadline = time.monotonic() + 10
    while any(str(k).startswith("transferembed-part") for k in client.who_has()):
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_shards_resume_skips_complete_parts(client, photos, reference, tmp_path):
    shards = tmp_path / "shards"
    calls = []
    with pytest.raises(EmbeddingCancelled):
        run_distributed(photos, CONFIG, client, shard_dir=str(shards),
                        progress=lambda d, n: calls.append(d),
                        is_cancelled=lambda: len(calls) >= 2)
    time.sleep(1)  # parts that were running may still land; they are complete too
    manifest = json.loads((shards / "manifest.json").read_text())
    assert manifest["job"]["items"] == len(photos)
    complete = {p: p.stat().st_mtime_ns for p in shards.glob("part-*.json")}
    assert complete  # parts that finished before (or while) it stopped
    result = run_distributed(photos, CONFIG, client, shard_dir=str(shards))
    assert_same(result, reference)
    # gathered from the part files into a disk-backed array, which leaves no file
    assert isinstance(result.embeddings.base, np.memmap)
    assert not list(shards.glob("gathered-*"))
    for path, mtime in complete.items():  # not computed again
        assert not path.exists() or path.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in shards.glob("part-00000*")) == [
        "part-00000.embeddings.npy", "part-00000.indices.npy", "part-00000.json",
        "part-00000.labels.npy"]
    indices = np.load(shards / "part-00000.indices.npy", allow_pickle=False)
    assert np.array_equal(indices, reference.indices[:len(indices)])
    with pytest.raises(SettingsError, match="another job"):
        run_distributed(photos, CONFIG.with_(batch_size=4), client, shard_dir=str(shards))


def test_missing_extra_says_how_to_install(tmp_path):
    script = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('dask', 'distributed'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
from orangecontrib.transferembed import embed
from orangecontrib.transferembed.cli.main import main
assert not any(m.split('.')[0] in ('dask', 'distributed') for m in sys.modules)
try:
    embed({str(tmp_path)!r}, client='tcp://127.0.0.1:1')
except Exception as exc:
    print(type(exc).__name__, exc)
sys.exit(main(['--folder', {str(tmp_path)!r}, '-tm', 'MobileNet', '--local-cluster', '2',
               '-dir', {str(tmp_path)!r}]))
"""
    from PIL import Image

    Image.new("RGB", (40, 40)).save(tmp_path / "a.png")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert INSTALL_HINT in done.stderr
    assert "ClusterError running on a Dask cluster needs" in done.stdout
    assert INSTALL_HINT in done.stdout
    assert issubclass(ClusterError, Exception)


def test_killed_worker_job_completes_identically(client, photos, reference):
    pids = list(client.run(os.getpid).values())
    killed = []

    def kill_one(done, total):
        if done and not killed:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    result = run_distributed(photos, CONFIG, client, progress=kill_one)
    assert killed
    assert_same(result, reference)
