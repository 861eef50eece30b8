"""Foundation encoders (issue 19): end to end from JPEG against keras-hub's own
``predict_on_batch`` on pre-decoded batches, with peak memory.

For each preset (``dinov2_small`` and ``siglip2_base_patch16_224`` by default), with
random weights (the published architecture; speed does not depend on the values):

* ``keras-hub``: keras-hub's own model (the DINOv2 backbone, SigLIP's vision encoder)
  and image converter, ``predict_on_batch`` on batches decoded and resized beforehand
  (decoding not counted), the class token taken in NumPy;
* ``default`` (converted fp32: LiteRT's interpreter where installed), ``tf.lite``
  (the same file on TensorFlow's interpreter), ``int8``, ``keras``: ``embed`` from the
  JPEG files, ``cache=False``, after a first run that converted the model (stored).

Each row runs in a process of its own; its peak RSS is that process's. Usage:
``python bench/foundation_bench.py [--images 32] [--batch 16] [--models NAME ...]``.

``--same-batch`` instead runs keras-hub's ``predict_on_batch``, the Keras runtime and
the converted fp32 file on LiteRT and on tf.lite in one process, on one random batch,
interleaved, the best of each (fairer on a busy machine), and says whether the two
interpreters' outputs are bit for bit the same.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
ROWS = ("keras-hub", "default", "tf.lite", "int8", "keras")

_CHILD = r"""
import json, resource, sys, time
import numpy as np
from PIL import Image
row, name, folder, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
paths = sorted(p for p in __import__("pathlib").Path(folder).rglob("*.jpg"))
from orangecontrib.transferembed.models.registry import get_backbone
backbone = get_backbone(name)
side = backbone.input_size
if row == "keras-hub":
    from orangecontrib.transferembed.models.tfimport import import_tensorflow
    import_tensorflow()
    sys.path.insert(0, sys.argv[5])
    from foundation_bench import keras_hub_model
    predict = keras_hub_model(name)
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB").resize((side, side)),
                                  np.float32) for p in paths])
    predict(pixels[:batch])  # warm up
    start = time.perf_counter()
    for first in range(0, len(pixels), batch):
        out = np.asarray(predict(pixels[first:first + batch]))
        out = out[:, 0] if out.ndim == 3 else out
    seconds = time.perf_counter() - start
else:
    from orangecontrib.transferembed import embed
    if row == "tf.lite":
        from orangecontrib.transferembed.runtimes import tflite_runtime
        original = tflite_runtime.interpreter_class
        tflite_runtime.interpreter_class = lambda prefer_litert=True: original(False)
    options = {"default": {}, "tf.lite": {"runtime": "tflite"},
               "int8": {"precision": "int8"}, "keras": {"runtime": "keras"}}[row]
    embed(folder, name, weights=None, cache=False, batch_size=batch, **options)  # converts
    start = time.perf_counter()
    result = embed(folder, name, weights=None, cache=False, batch_size=batch, **options)
    seconds = time.perf_counter() - start
    assert not result.notices, result.notices
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"images_per_s": len(paths) / seconds, "peak_mib": peak}))
"""


def jpeg_folder(folder: Path, count: int) -> Path:
    """``count`` JPEGs: the hymenoptera photos where ``$TRANSFEREMBED_TEST_DATA`` is set,
    else drawn ones (640x480), in two class folders."""
    data = os.environ.get("TRANSFEREMBED_TEST_DATA")
    photos = sorted(Path(data, "images", "hymenoptera", "val").rglob("*.jpg")) if data else []
    rng = np.random.default_rng(0)
    for i in range(count):
        target = folder / ("a" if i % 2 else "b") / f"{i:04d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        if i < len(photos):
            target.symlink_to(photos[i])
        else:
            small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
            Image.fromarray(small).resize((640, 480)).save(target, quality=90)
    return folder


def measure(row: str, name: str, folder: Path, batch: int) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, row, name, str(folder), str(batch),
                           str(HERE)],
                          capture_output=True, text=True, cwd=HERE.parent)
    if done.returncode:
        return {"error": done.stderr.strip().splitlines()[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def keras_hub_model(name: str):
    """keras-hub's own model and image converter for ``name``, random weights, as one
    function of a pixel batch (``predict_on_batch``)."""
    import keras_hub

    from orangecontrib.transferembed.models.registry import get_backbone

    backbone = get_backbone(name)
    arch, side = backbone.architecture, backbone.input_size
    common = dict(patch_size=arch.patch_size, hidden_dim=arch.hidden_dim,
                  num_layers=arch.num_layers, num_heads=arch.num_heads,
                  intermediate_dim=arch.intermediate_dim, image_shape=(side, side, 3))
    model = keras_hub.models.DINOV2Backbone(position_embedding_shape=(518, 518), **common) \
        if arch.kind == "dinov2" else keras_hub.models.SigLIPVisionEncoder(**common)
    converter = keras_hub.layers.ImageConverter(
        image_size=(side, side), scale=[1 / (255 * s) for s in arch.std],
        offset=[-m / s for m, s in zip(arch.mean, arch.std, strict=True)])
    return lambda pixels: model.predict_on_batch(converter(pixels))


def same_batch(name: str, batch: int, rounds: int = 4) -> None:
    """keras-hub's ``predict_on_batch``, the Keras runtime, and the converted fp32 file on
    LiteRT and on tf.lite, in this process on one random batch, interleaved, best of
    ``rounds``; and whether the two interpreters' outputs are bit for bit the same."""
    import time

    from orangecontrib.transferembed.config import EmbedConfig
    from orangecontrib.transferembed.runtimes.base import threads
    from orangecontrib.transferembed.runtimes.converted import model_file
    from orangecontrib.transferembed.runtimes.keras_runtime import KerasRuntime
    from orangecontrib.transferembed.runtimes.tflite_runtime import TFLiteRuntime

    config = EmbedConfig(model=name, weights=None, runtime="tflite")
    converted = model_file(config, None, None)
    runs = {"keras-hub": keras_hub_model(name),
            "keras": KerasRuntime(config.with_(runtime="keras"), None),
            "LiteRT": TFLiteRuntime(converted, "fp32", threads()),
            "tf.lite": TFLiteRuntime(converted, "fp32", threads(), prefer_litert=False)}
    side = config.input_size
    pixels = np.random.default_rng(0).uniform(0, 255, (batch, side, side, 3)).astype("f4")
    outputs = {label: np.asarray(run(pixels)) for label, run in runs.items()}  # warm up
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for label, run in runs.items():
            start = time.perf_counter()
            run(pixels)
            best[label] = min(best[label], time.perf_counter() - start)
    speeds = ", ".join(f"{label} {batch / seconds:.2f}" for label, seconds in best.items())
    same = np.array_equal(outputs["LiteRT"], outputs["tf.lite"])
    print(f"{name}: images/s {speeds} (batch {batch}, best of {rounds}); "
          f"LiteRT and tf.lite bit for bit the same: {same}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--models", nargs="*",
                        default=["dinov2_small", "siglip2_base_patch16_224"])
    parser.add_argument("--rows", nargs="*", default=list(ROWS))
    parser.add_argument("--same-batch", action="store_true",
                        help="the models in this process on one batch, interleaved")
    args = parser.parse_args(argv)
    if args.same_batch:
        for name in args.models:
            same_batch(name, args.batch)
        return 0
    with tempfile.TemporaryDirectory() as work:
        folder = jpeg_folder(Path(work) / "jpeg", args.images)
        print(f"{args.images} JPEGs, batches of {args.batch}, {os.cpu_count()} CPUs")
        print(f"{'model':<26}{'row':<11}{'images/s':>9}{'x keras-hub':>12}{'peak MiB':>10}")
        for name in args.models:
            reference = None
            for row in args.rows:
                found = measure(row, name, folder, args.batch)
                if "error" in found:
                    print(f"{name:<26}{row:<11} failed: {found['error']}")
                    continue
                speed = found["images_per_s"]
                reference = speed if row == "keras-hub" else reference
                ratio = f"{speed / reference:.2f}" if reference else "-"
                print(f"{name:<26}{row:<11}{speed:>9.2f}{ratio:>12}{found['peak_mib']:>10.0f}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
