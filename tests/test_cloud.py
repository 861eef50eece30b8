"""Images on an object store, for real: moto's S3 server on 127.0.0.1 (behind a
fault-injecting proxy of the tests), read by this process through the URL
inputs, with credentials from the standard chain (environment variables).

Every result must equal the local run of the same images bit for bit, and the
secret key must appear in no output, message or log.
"""

from __future__ import annotations

import csv
import functools
import http.server
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("s3fs")
pytest.importorskip("moto")

from cloud_servers import (  # noqa: E402
    SECRET_KEY,
    DaskCluster,
    FaultProxy,
    cloud_environment,
    start_moto,
    stop,
)

from orangecontrib.transferembed import embed  # noqa: E402
from orangecontrib.transferembed.cli.main import main  # noqa: E402
from orangecontrib.transferembed.errors import ImageError, SourceError  # noqa: E402
from orangecontrib.transferembed.pipeline import remote  # noqa: E402
from orangecontrib.transferembed.pipeline.sources import as_source  # noqa: E402

BUCKET = "photos"
PREFIX = f"s3://{BUCKET}/set"
SETTINGS = dict(model="MobileNet", alpha=0.25, input_size=32, batch_size=4, cache=False)


def write_images(folder: Path, per_class: int = 6) -> list[str]:
    """Small photos-like images in two classes, and a broken file; their relative paths."""
    from PIL import Image

    rng = np.random.default_rng(7)
    names = []
    for label, suffix in (("ants", ".jpg"), ("bees", ".png")):
        (folder / label).mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            side = int(rng.integers(24, 60))
            pixels = rng.integers(0, 256, (side, side + n, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / label / f"{label[0]}{n}{suffix}")
            names.append(f"{label}/{label[0]}{n}{suffix}")
    (folder / "bees" / "broken.jpg").write_bytes(b"not an image")
    names.append("bees/broken.jpg")
    return sorted(names, key=lambda name: (name.split("/")[0], name))


def save_weights(path: Path) -> Path:
    """A MobileNet 0.25 weights file of our own (no download), as the builder loads it."""
    from orangecontrib.transferembed.models.tfimport import import_tensorflow

    import_tensorflow()
    import keras

    keras.utils.set_random_seed(3)
    model = keras.applications.MobileNet(alpha=0.25, include_top=False, pooling="avg",
                                         weights=None, input_shape=(32, 32, 3))
    rng = np.random.default_rng(3)
    for layer in model.layers:  # He-scaled kernels: features far from zero
        for variable in layer.weights:
            if "kernel" in variable.path:
                shape = variable.shape
                depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
                fan_in = int(np.prod(shape[:2] if depthwise else shape[:-1]))
                variable.assign(rng.normal(0, np.sqrt(2 / fan_in), shape).astype("float32"))
    model.save_weights(path)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """moto's server, the proxy in front of it, the credentials in the environment,
    and the images both on disk and under ``PREFIX``."""
    import s3fs

    root = tmp_path_factory.mktemp("store")
    moto, port = start_moto(root / "moto.log")
    proxy = FaultProxy(port)
    environment = cloud_environment(f"http://127.0.0.1:{proxy.port}")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        s3fs.S3FileSystem.clear_instance_cache()
        fs = remote.filesystem(PREFIX)
        fs.mkdir(BUCKET)
        local = root / "local"
        names = write_images(local)
        for name in names:
            fs.put_file(str(local / name), f"{PREFIX}/{name}")
        try:
            yield {"local": local, "names": names, "proxy": proxy, "fs": fs,
                   "moto_port": port, "root": root, "environment": environment}
        finally:
            s3fs.S3FileSystem.clear_instance_cache()
            proxy.close()
            stop(moto)
    assert SECRET_KEY not in (root / "moto.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return str(save_weights(tmp_path_factory.mktemp("weights") / "mine.weights.h5"))


@pytest.fixture(scope="module")
def reference(store, weights):
    """The local run of the same images."""
    result = embed(store["local"], weights=weights, **SETTINGS)
    assert np.abs(result.embeddings).mean() > 1e-4  # values that tell results apart
    return result


def assert_same(result, reference):
    assert np.array_equal(result.embeddings, reference.embeddings)
    assert np.array_equal(result.indices, reference.indices)
    assert list(result.labels) == list(reference.labels)
    assert [s.reason for s in result.skipped] == [s.reason for s in reference.skipped]


def test_url_kinds_and_names_without_credentials(monkeypatch):
    assert remote.is_url("s3://b/k") and remote.is_url("https://h/x") \
        and not remote.is_url("/tmp/x") and not remote.is_url("C:\\x")
    assert remote.display("https://user:pw@host/a.jpg?X-Amz-Signature=abc") \
        == "https://host/a.jpg"
    assert remote.display("az://c/a.jpg?sv=1&sig=zzz") == "az://c/a.jpg"
    assert remote.redact("GET https://me:pw@host/x failed") == "GET https://host/x failed"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    assert SECRET_KEY not in remote.reason(OSError(5, f"signature of {SECRET_KEY} refused"))
    assert remote.join("s3://b/p/list.csv".rsplit("/", 1)[0], "../q/a.jpg") == "s3://b/q/a.jpg"


def test_transient_errors_are_retried_with_backoff_and_lasting_ones_are_not():
    waits, calls = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError("connection reset by peer")
        return b"ok"

    assert remote.retrying(flaky, sleep=waits.append) == b"ok"
    assert waits == [remote.BACKOFF_S, 2 * remote.BACKOFF_S]
    waits.clear()
    with pytest.raises(FileNotFoundError):
        remote.retrying(lambda: (_ for _ in ()).throw(FileNotFoundError("gone")),
                        sleep=waits.append)
    assert waits == []
    with pytest.raises(TimeoutError):
        remote.retrying(lambda: (_ for _ in ()).throw(TimeoutError()), attempts=3,
                        sleep=waits.append)
    assert len(waits) == 2


def test_npy_pair_and_a_bounded_read_by_url(store):
    fs = store["fs"]
    data = np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8 * 8 * 3)
    for name, array in (("x.npy", data), ("y.npy", np.array([0, 1]))):
        buffer = io.BytesIO()
        np.save(buffer, array)
        fs.pipe_file(f"s3://{BUCKET}/npy/{name}", buffer.getvalue())
    source = as_source(f"s3://{BUCKET}/npy/x.npy", f"s3://{BUCKET}/npy/y.npy", (8, 8, 3))
    assert np.array_equal(source.data, data) and list(source.labels) == [0, 1]
    with pytest.raises(ImageError, match="larger than"):
        remote.read_bytes(f"s3://{BUCKET}/npy/x.npy", limit=100)


def test_folder_prefix_equals_local_run(store, reference, weights):
    result = embed(PREFIX + "/", weights=weights, **SETTINGS)
    assert_same(result, reference)
    assert [s.item for s in result.skipped] == [f"{PREFIX}/bees/broken.jpg"]
    assert set(result.labels) == {"ants", "bees"}


def csv_at_url(text: str, store):
    store["fs"].pipe_file(f"{PREFIX}/one.csv", text.encode())
    return as_source(f"{PREFIX}/one.csv")


def test_csv_of_urls_and_csv_on_the_store_equal_local(store, reference, weights, tmp_path):
    listing = tmp_path / "list.csv"
    rows = [(name.split("/")[0], f"{PREFIX}/{name}") for name in store["names"]]
    with listing.open("w", newline="") as file:
        csv.writer(file).writerows([("label", "path"), *rows])
    assert_same(embed(listing, weights=weights, **SETTINGS), reference)
    store["fs"].pipe_file(f"{PREFIX}/noext", store["fs"].cat_file(rows[0][1]))
    no_header = f"ants,{PREFIX}/noext\n"  # a first row whose path has no extension
    assert len(csv_at_url(no_header, store)) == 1
    relative = "".join(f"{label},{url.removeprefix(PREFIX + '/')}\n" for label, url in rows)
    store["fs"].pipe_file(f"{PREFIX}/list.csv", relative.encode())
    assert_same(embed(f"{PREFIX}/list.csv", weights=weights, **SETTINGS), reference)


def test_list_of_file_and_http_urls_equals_local(store, reference, weights):
    local, names = store["local"], store["names"]
    walked = as_source(f"file://{local}")  # a folder URL of another back-end, listed whole
    assert walked.paths == [f"file://{path}" for path in as_source(local).paths]
    assert list(walked.labels) == list(as_source(local).labels)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(local))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        labels = [name.split("/")[0] for name in names]
        for base in (f"file://{local}", f"http://127.0.0.1:{server.server_address[1]}"):
            urls = [f"{base}/{name}" for name in names]
            result = embed(urls, labels=labels, weights=weights, **SETTINGS)
            assert_same(result, reference)
    finally:
        server.shutdown()
        server.server_close()


def test_table_column_of_urls_and_of_paths_from_a_url_origin(store, reference, weights):
    from Orange.data import Domain, StringVariable, Table

    from orangecontrib.transferembed.widgets.table import table_source

    for origin, cells in ((None, [f"{PREFIX}/{name}" for name in store["names"]]),
                          (PREFIX, store["names"])):
        column = StringVariable("image")
        column.attributes.update({"type": "image", **({"origin": origin} if origin else {})})
        data = Table.from_list(Domain([], metas=[column]), [[cell] for cell in cells])
        result = embed(table_source(data, column), weights=weights, **SETTINGS)
        assert np.array_equal(result.embeddings, reference.embeddings)
        assert [s.item for s in result.skipped] == [f"{PREFIX}/bees/broken.jpg"]


def command_line_equals_local(store, weights, folder: Path, capfd, *more: str) -> None:
    """``transferembed --folder PREFIX *more`` writes the local run's files, and the
    secret is in none of them, nor in what it printed."""
    common = ["-tm", "MobileNet", "--alpha", "0.25", "--input-size", "32", "-b", "4",
              "-weights", weights, "--no-cache", "-q", "-to-csv", "-n", "out"]
    assert main(["--folder", str(store["local"]), "-dir", str(folder / "local"), *common]) == 0
    assert main(["--folder", PREFIX, "-dir", str(folder / "s3"), *common, *more]) == 0
    assert (folder / "s3" / "out.csv").read_bytes() == \
        (folder / "local" / "out.csv").read_bytes()
    skipped = (folder / "s3" / "out_skipped.csv").read_text()
    assert f"{PREFIX}/bees/broken.jpg" in skipped
    captured = capfd.readouterr()
    for path in folder.rglob("*"):
        if path.is_file():
            assert SECRET_KEY.encode() not in path.read_bytes()
    assert SECRET_KEY not in captured.err + captured.out


def test_command_line_folder_url_writes_the_local_files(store, weights, tmp_path, capfd):
    command_line_equals_local(store, weights, tmp_path, capfd)


def test_listing_goes_page_by_page(store, monkeypatch):
    whole = list(remote.walk(PREFIX, lambda name: True))
    proxy = store["proxy"]
    monkeypatch.setattr(remote, "PAGE_SIZE", 2)
    before = proxy.lists
    assert list(remote.walk(PREFIX, lambda name: True)) == whole
    # the root, then ants (6 keys) and bees (7 keys) two at a time
    assert proxy.lists - before >= 1 + 3 + 4
    assert [label for label, _ in whole].count("ants") == 6


class ManyKeys:
    """An S3 listing of ``n`` keys under ``pre/many/``, made up page by page as S3
    pages it (to count the requests and the memory of a 100,000-key walk without
    storing 100,000 objects)."""

    def __init__(self, n: int):
        self.n, self.requests = n, 0

    def call_s3(self, method, Bucket, Prefix, Delimiter, MaxKeys, ContinuationToken="0"):
        assert method == "list_objects_v2" and Delimiter == "/"
        self.requests += 1
        if Prefix == "pre/":
            return {"CommonPrefixes": [{"Prefix": "pre/many/"}], "IsTruncated": False}
        start = int(ContinuationToken)
        stop = min(self.n, start + MaxKeys)
        page = {"Contents": [{"Key": f"pre/many/{i:06d}.jpg", "Size": 1000, "ETag": "x" * 34}
                             for i in range(start, stop)], "IsTruncated": stop < self.n}
        if stop < self.n:
            page["NextContinuationToken"] = str(stop)
        return page


def test_listing_100000_keys_is_paged_in_bounded_memory():
    import tracemalloc

    keys = ManyKeys(100_000)
    tracemalloc.start()
    try:
        count, last = 0, None
        for label, url in remote.walk("s3://bucket/pre", lambda name: True, fs=keys):
            count, last = count + 1, url
            assert label == "many"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 100_000 and last == "s3://bucket/pre/many/099999.jpg"
    assert keys.requests == 1 + 100  # the root, then 100 pages of 1,000 keys
    assert peak < 4 << 20  # a page or two, not 100,000 keys (about 20 MB as dicts)


def test_refusals_are_retried_and_lasting_failures_skipped(store, reference, weights):
    proxy, fs = store["proxy"], store["fs"]
    proxy.refusing = 5  # the store throttles for a while
    assert_same(embed(PREFIX, weights=weights, **SETTINGS), reference)
    assert proxy.refused == 5 and proxy.refusing == 0
    for name in store["names"]:
        fs.copy(f"{PREFIX}/{name}", f"s3://{BUCKET}/gone/{name}")
    source = as_source(f"s3://{BUCKET}/gone")
    fs.rm_file(f"s3://{BUCKET}/gone/ants/a1.jpg")  # deleted after it was listed
    proxy.denied = {f"{BUCKET}/gone/bees/b2.png"}
    try:
        result = embed(source, weights=weights, **SETTINGS)
    finally:
        proxy.denied = set()
    reasons = {s.item: s.reason for s in result.skipped}
    assert reasons[f"s3://{BUCKET}/gone/ants/a1.jpg"] == "not found"
    assert reasons[f"s3://{BUCKET}/gone/bees/b2.png"].startswith("access denied")
    assert len(result.embeddings) == len(reference.embeddings) - 2
    assert not any(SECRET_KEY in reason for reason in reasons.values())


def test_a_machine_without_the_back_end_fails_the_job_naming_the_extra(store, weights,
                                                                     monkeypatch):
    import fsspec

    source = as_source(PREFIX)  # listed here; read where the back-end is missing

    def missing(*args, **kwargs):
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr(fsspec, "filesystem", missing)
    with pytest.raises(SourceError, match=re.escape(remote.CLOUD_HINT)):
        embed(source, weights=weights, **SETTINGS)


def test_missing_back_end_is_one_message_naming_the_extra(tmp_path):
    script = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('s3fs', 'gcsfs', 'adlfs'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
from orangecontrib.transferembed.cli.main import main
sys.exit(main(['--folder', '{PREFIX}', '-dir', {str(tmp_path)!r}]))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "AWS_SECRET_ACCESS_KEY": SECRET_KEY})
    assert done.returncode == 2, done.stderr
    assert remote.CLOUD_HINT in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# --- a Dask scheduler and two worker processes that share nothing with this one ---

@pytest.fixture(scope="module")
def cluster(store, tmp_path_factory):
    """``dask scheduler`` and two ``dask worker`` processes, each worker with its own
    empty HOME, KERAS_HOME and caches, reading the store through the proxy; as root,
    in mount namespaces where this process's test folders, the shared data and its
    Keras home are empty."""
    distributed = pytest.importorskip("distributed")
    root = Path(tempfile.mkdtemp(prefix="transferembed-workers-"))
    hide = [tmp_path_factory.getbasetemp(), *(Path(os.environ[name]) for name in
                                              ("TRANSFEREMBED_TEST_DATA", "KERAS_HOME")
                                              if os.environ.get(name))]
    processes = DaskCluster(root, 2, store["environment"], hide)
    try:
        with distributed.Client(processes.address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        yield processes
        assert SECRET_KEY not in processes.logs()
    finally:
        processes.close()
        shutil.rmtree(root, ignore_errors=True)


def worker_files(cluster, pattern: str) -> list[Path]:
    return [path for home in ("w0", "w1") for path in (cluster.root / home).rglob(pattern)]


def test_cluster_reads_the_store_itself_and_equals_local(store, reference, weights, cluster,
                                                         monkeypatch):
    assert not worker_files(cluster, "*.h5")  # no weights on the workers' disks

    def driver_reads(*args, **kwargs):
        raise AssertionError("the driver read an image")

    monkeypatch.setattr(remote, "read_bytes", driver_reads)  # workers have their own
    if cluster.isolated:  # the workers see none of this process's files
        from distributed import Client

        with Client(cluster.address) as client:
            seen = client.run(os.path.exists, weights)
            seen.update(client.run(os.path.exists, str(store["local"])))
        assert seen and not any(seen.values())
    store["proxy"].refusing = 4  # and the store throttles for a while
    result = embed(PREFIX, weights=weights, client=cluster.address,
                   **{**SETTINGS, "cache": True})
    assert_same(result, reference)
    assert store["proxy"].refusing == 0
    shipped = worker_files(cluster, "mine.weights.h5")
    assert shipped and all(p.read_bytes() == Path(weights).read_bytes() for p in shipped)
    assert all("shipped" in p.parts for p in shipped)  # in the worker's own cache folder


def test_cluster_int8_equals_one_process(store, weights, cluster):
    local = embed(store["local"], weights=weights, precision="int8", **SETTINGS)
    result = embed(PREFIX, weights=weights, precision="int8", client=cluster.address,
                   **SETTINGS)
    assert_same(result, local)
    assert worker_files(cluster, "converted/*.tflite")  # shipped, not converted again


def test_cluster_imagenet_weights_shipped_to_empty_homes(store, cluster, mobilenet_keras_home):
    settings = {**SETTINGS, "weights": "imagenet"}
    local = embed(store["local"], **settings)
    assert_same(embed(PREFIX, client=cluster.address, **settings), local)
    assert worker_files(cluster, ".keras/models/mobilenet_2_5_224_tf_no_top.h5")


def test_shards_on_the_store_resume_rewriting_only_the_missing_part(store, reference,
                                                                     weights, cluster):
    fs, proxy = store["fs"], store["proxy"]
    url = f"s3://{BUCKET}/shards/run"
    assert_same(embed(PREFIX, weights=weights, client=cluster.address, shards=url,
                      **SETTINGS), reference)
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(url, refresh=True))
    assert "manifest.json" in names and "part-00001.json" in names
    fs.rm_file(f"{url}/part-00001.embeddings.npy")
    proxy.puts.clear()
    assert_same(embed(PREFIX, weights=weights, client=cluster.address, shards=url,
                      **SETTINGS), reference)
    part = f"{BUCKET}/shards/run/part-00001"
    assert sorted(proxy.puts) == [f"{part}.embeddings.npy", f"{part}.indices.npy",
                                  f"{part}.json", f"{part}.labels.npy"]
    for name in names:
        assert SECRET_KEY.encode() not in fs.cat_file(f"{url}/{name}")


def test_command_line_on_the_cluster_with_shards_on_the_store(store, weights, cluster,
                                                              tmp_path, capfd):
    url = f"s3://{BUCKET}/shards/cli"
    command_line_equals_local(store, weights, tmp_path, capfd, "--scheduler", cluster.address,
                              "--shards", url)
    assert "manifest.json" in [p.rsplit("/", 1)[-1] for p in store["fs"].ls(url, refresh=True)]


def test_killed_worker_and_deleted_key_job_completes_identically(store, weights, cluster):
    names = store["names"] * 4
    labels = [name.split("/")[0] for name in names]
    local = embed([str(store["local"] / name) for name in names] + ["/nonexistent.jpg"],
                  labels=labels + ["ants"], weights=weights, **SETTINGS)
    killed = []

    def kill_one(done, total):
        if done and not killed:
            os.killpg(cluster.workers[0].pid, signal.SIGKILL)
            killed.append(done)

    urls = [f"{PREFIX}/{name}" for name in names] + [f"{PREFIX}/deleted.jpg"]
    result = embed(urls, labels=labels + ["ants"], weights=weights, client=cluster.address,
                   progress=kill_one, **SETTINGS)
    assert killed and killed[0] < len(urls)
    assert np.array_equal(result.embeddings, local.embeddings)
    assert np.array_equal(result.indices, local.indices)
    assert result.skipped[-1].reason == "not found"
    assert result.skipped[-1].item == f"{PREFIX}/deleted.jpg"


def test_cluster_ships_a_preset_folder_to_empty_homes(store, cluster, tmp_path):
    """A foundation encoder's weights are a keras-hub preset folder: its files go to each
    worker under the folder's hash, and the workers give the driver's result."""
    pytest.importorskip("keras_hub")
    from test_foundation import _save_dinov2

    preset = _save_dinov2(tmp_path / "dinov2_small")
    settings = {**SETTINGS, "model": "dinov2_small", "weights": str(preset),
                "input_size": None, "alpha": 1.0}
    local = embed(store["local"], **settings)
    assert_same(embed(PREFIX, client=cluster.address, **settings), local)
    assert worker_files(cluster, "shipped/*/config.json")
