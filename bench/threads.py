"""Thread counts: TensorFlow's intra/inter-op pools against the decode pool.

    python bench/threads.py --data /work/shared/data [--intra N] [--inter N]

Run once per TensorFlow setting (they are fixed when TensorFlow starts). In
one process it interleaves the bare model with end-to-end runs of the engine
on the 398 photos at 1, 2 and 4 decode threads, and prints the best of each.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from common import SIDE, Bare

from orangecontrib.transferembed.config import EmbedConfig
from orangecontrib.transferembed.pipeline.engine import run
from orangecontrib.transferembed.pipeline.sources import folder_source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("TRANSFEREMBED_TEST_DATA"))
    parser.add_argument("--intra", type=int, default=0, help="0: TensorFlow's default")
    parser.add_argument("--inter", type=int, default=0, help="0: TensorFlow's default")
    parser.add_argument("--decode", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter)
    source = folder_source(Path(args.data) / "images" / "hymenoptera")
    bare = Bare()
    configs = {n: EmbedConfig(weights=None, cache=False, decode_threads=n) for n in args.decode}
    run(source.subset(range(32)), configs[args.decode[0]])  # build the engine's model
    best = dict.fromkeys(args.decode, 0.0)
    for _ in range(args.rounds):
        for n, config in configs.items():
            bare.measure()
            start = time.perf_counter()
            run(source, config)
            best[n] = max(best[n], len(source) / (time.perf_counter() - start))
    bare.measure()
    print(f"intra={args.intra or 'default'} inter={args.inter or 'default'} ({SIDE} px): bare "
          f"predict_on_batch {bare.best['predict_on_batch']:.1f}, compiled step "
          f"{bare.best['compiled step']:.1f} images/s")
    for n, value in best.items():
        print(f"  decode threads {n}: {value:.1f} images/s = "
              f"{value / bare.best['predict_on_batch']:.2f} of predict_on_batch, "
              f"{value / bare.best['compiled step']:.2f} of the compiled step")


if __name__ == "__main__":
    main()
