"""Time Orange3-ImageAnalytics' local SqueezeNet embedder (run by bench.py).

Runs in the interpreter of a separate environment that has
Orange3-ImageAnalytics installed; it never imports this project. Usage::

    python ia_embed.py PATHS_FILE N [N ...] --rounds R

prints one JSON object: ``{"seconds": {N: best time}, "features": K}``.
The cache of the embedder is cleared before every timed call, so each
call computes every embedding; loading the model is part of each call and
cancels out in the difference of two sizes.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("paths_file")
    parser.add_argument("sizes", type=int, nargs="+")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    from orangecontrib.imageanalytics.image_embedder import ImageEmbedder

    with open(args.paths_file, encoding="utf-8") as f:
        paths = [line.strip() for line in f if line.strip()]
    best: dict[int, float] = {}
    features = 0
    ImageEmbedder(model="squeezenet")(paths[:2])  # warm up imports
    for _ in range(args.rounds):
        for n in args.sizes:
            embedder = ImageEmbedder(model="squeezenet")
            embedder.clear_cache()
            start = time.perf_counter()
            vectors = embedder(paths[:n])
            elapsed = time.perf_counter() - start
            features = len(vectors[0])
            best[n] = min(best.get(n, elapsed), elapsed)
    print(json.dumps({"seconds": best, "features": features}))


if __name__ == "__main__":
    main()
