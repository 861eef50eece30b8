"""Throughput by where the images live, in one run (issue 21): the local disk, a local
S3 server (moto, on 127.0.0.1), and a Dask scheduler with two worker processes
whose homes hold nothing (they get the weights shipped and read the store
themselves). Also the time to list the prefix, and the per-image cost that
doc/cluster.md's plan for 10 million images starts from.

    python bench/cloud.py --data ../shared/data [--images 398] [--json FILE]

Each figure is the best of ``--rounds`` timed runs after one warm-up run (which
builds the model in every process), with the embedding cache off.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from cloud_servers import DaskCluster, cloud_environment, start_moto, stop  # noqa: E402

MOBILENET_025 = "mobilenet_2_5_224_tf_no_top.h5"
BUCKET = "bench"


def timed(call, rounds: int) -> tuple[float, object]:
    call()  # warm-up: the model is built in every process that runs it
    best, result = float("inf"), None
    for _ in range(rounds):
        started = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - started)
    return best, result


def upload(fs, photos: list[Path], root: Path, prefix: str) -> float:
    started = time.perf_counter()
    for path in photos:
        fs.put_file(str(path), f"{prefix}/{path.relative_to(root).as_posix()}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("TRANSFEREMBED_TEST_DATA"))
    parser.add_argument("--images", type=int, default=398)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json")
    args = parser.parse_args()
    if not args.data:
        parser.error("give --data (the shared data folder) or set $TRANSFEREMBED_TEST_DATA")
    data = Path(args.data)
    work = Path(tempfile.mkdtemp(prefix="transferembed-cloud-bench-"))
    keras_home = work / "keras"
    (keras_home / "models").mkdir(parents=True)
    shutil.copy(data / "weights" / MOBILENET_025, keras_home / "models")
    os.environ.update(KERAS_HOME=str(keras_home), TRANSFEREMBED_CACHE_DIR=str(work / "cache"))
    moto, port = start_moto(work / "moto.log")
    environment = cloud_environment(f"http://127.0.0.1:{port}")
    os.environ.update(environment)
    cluster = DaskCluster(work / "cluster", 2, environment)
    try:
        figures = measure(args, data, work, cluster)
    finally:
        cluster.close()
        stop(moto)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


def measure(args, data: Path, work: Path, cluster: DaskCluster) -> dict:
    from orangecontrib.transferembed import embed
    from orangecontrib.transferembed.pipeline import remote
    from orangecontrib.transferembed.pipeline.sources import folder_source

    root = data / "images" / "hymenoptera"
    local = folder_source(root)
    photos = [Path(p) for p in local.paths[:args.images]]
    folder = work / "photos"
    for path in photos:
        target = folder / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(path, target)
    prefix = f"s3://{BUCKET}/photos"
    fs = remote.filesystem(prefix)
    fs.mkdir(BUCKET)
    figures = {"images": len(photos), "upload_s": round(upload(fs, photos, root, prefix), 2)}
    settings = dict(model="MobileNet", alpha=0.25, weights="imagenet", cache=False)
    started = time.perf_counter()
    listed = list(remote.walk(prefix, lambda name: True))
    figures["list_s"] = round(time.perf_counter() - started, 3)
    assert len(listed) == len(photos)
    runs = {"local_disk": lambda: embed(folder, **settings),
            "local_s3": lambda: embed(prefix, **settings),
            "cluster_2_workers_s3": lambda: embed(prefix, client=cluster.address, **settings)}
    results = {}
    for name, call in runs.items():
        seconds, results[name] = timed(call, args.rounds)
        figures[f"{name}_img_per_s"] = round(len(photos) / seconds, 1)
        figures[f"{name}_ms_per_img"] = round(1000 * seconds / len(photos), 2)
        print(f"{name}: {len(photos) / seconds:.1f} img/s", flush=True)
    import numpy as np

    reference = results["local_disk"].embeddings
    figures["bitwise_equal"] = all(np.array_equal(r.embeddings, reference)
                                   for r in results.values())
    return figures


if __name__ == "__main__":
    sys.exit(main())
