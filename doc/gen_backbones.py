"""Generate ``doc/backbones.md`` from the backbone registry.

The table's speed column comes from ``doc/backbone_speed.json``, written by
``--measure``: each measured backbone is built with random weights
(``weights=None``) and run through the engine's compiled step on batches of
random images at its default input size. Measuring every backbone is slow on
a small CPU, so only :data:`MEASURED` are timed; the rest say "not measured".

    python doc/gen_backbones.py              # rewrite the page from the JSON
    nice -n 10 python doc/gen_backbones.py --measure   # time, then rewrite
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

from orangecontrib.transferembed.models.registry import (
    BACKBONES,
    ORIGINAL_BACKBONES,
    Backbone,
)

HERE = Path(__file__).resolve().parent
SPEED_FILE = HERE / "backbone_speed.json"
PAGE = HERE / "backbones.md"
#: The original seven, then a handful of light modern ones.
#: The classic CNNs of ``keras.applications``, in display order.
CNNS = {name: b for name, b in BACKBONES.items() if not b.foundation}
MEASURED = ORIGINAL_BACKBONES + ("MobileNetV2", "MobileNetV3Small", "MobileNetV3Large",
                                 "EfficientNetB0", "EfficientNetV2B0", "ResNet50V2",
                                 "DenseNet121", "NASNetMobile", "ConvNeXtTiny")


def cpu_name() -> str:
    """The CPU model, as /proc/cpuinfo names it (or the platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_one(backbone: Backbone, batch_size: int, batches: int) -> dict:
    """Images per second of ``backbone`` (random weights) at its default size, on the
    Keras runtime (the reference; doc/performance.md has the converted runtimes)."""
    import numpy as np

    from orangecontrib.transferembed.config import EmbedConfig
    from orangecontrib.transferembed.runtimes.keras_runtime import KerasRuntime

    start = time.perf_counter()
    side = backbone.input_size
    extractor = KerasRuntime(EmbedConfig(model=backbone.name, weights=None, runtime="keras"),
                             None)
    rng = np.random.default_rng(0)
    batch = rng.uniform(0, 255, (batch_size, side, side, 3)).astype(np.float32)
    extractor(batch)  # traces and compiles the step
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(batches):
        extractor(batch)
    elapsed = time.perf_counter() - start
    return {"images_per_s": round(batch_size * batches / elapsed, 1),
            "build_s": round(build_s, 1), "input_size": side}


def measure(names: tuple[str, ...], batch_size: int, batches: int) -> dict:
    """Time ``names`` and return the JSON record (also printed as it goes)."""
    import tensorflow as tf

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    results = {}
    for name in names:
        try:
            results[name] = measure_one(BACKBONES[name], batch_size, batches)
        except Exception as exc:  # one failing backbone must not lose the others
            print(name, "failed:", exc, file=sys.stderr, flush=True)
            continue
        print(name, results[name], flush=True)
    return {
        "date": datetime.date.today().isoformat(),
        "command": "nice -n 10 python doc/gen_backbones.py --measure",
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "tensorflow": tf.__version__,
        "batch_size": batch_size,
        "batches": batches,
        "load_average": [load_before,
                         os.getloadavg()[0] if hasattr(os, "getloadavg") else None],
        "results": results,
    }


def speed_cell(name: str, speed: dict) -> str:
    result = speed.get("results", {}).get(name)
    return f"{result['images_per_s']:g}" if result else "not measured"


def weights_table() -> list[str]:
    """The ImageNet weights file of each backbone, for the offline recipe."""
    lines = [
        "## Weights files",
        "",
        "The ImageNet weights file each backbone loads from `$KERAS_HOME/models/`",
        "(`~/.keras/models/` by default), and where it is downloaded from; see",
        "[offline weights](offline-weights.md). MobileNet and MobileNetV2 have one file",
        "per width multiplier: the table gives `alpha` 1; for another, ask the registry,",
        "e.g. `get_backbone(\"MobileNet\").weights_url(0.25)`.",
        "",
        "| Backbone | File in `$KERAS_HOME/models/` | Download from |",
        "|---|---|---|",
    ]
    for name, b in CNNS.items():
        url = b.weights_url()
        lines.append(f"| {name} | `{b.weights_filename()}` | <{url}> |")
    return lines + [""]


def render(speed: dict) -> str:
    """The Markdown page."""
    lines = [
        "# Backbones",
        "",
        "Every image backbone of `keras.applications` is available, in this order in the",
        "widget's combo box and in `transferembed --list-models`. The first seven are",
        "those of the original `generate_embedding.py`. The feature is the global average",
        "pool of the last convolutional block, except for VGG16 and VGG19, which give the",
        "4096 values of their `fc2` layer, as the original tool did.",
        "",
        "- **Features**: the length of each embedding (MobileNet and MobileNetV2 scale it",
        "  with the width multiplier `alpha`).",
        "- **Input**: the default (ImageNet-trained) input size, and the smallest size the",
        "  backbone accepts. *fixed* means only the default size works.",
        "- **Download**: the size of the ImageNet weights file (at `alpha` 1), fetched once",
        "  into `$KERAS_HOME/models/` (see [offline weights](offline-weights.md)).",
        "- **Images/s**: inference speed measured on this project's build machine (see",
        "  below); decoding and resizing the images is not included.",
        "",
        "| Backbone | Features | Input | Min input | Download (MB) | Images/s (CPU) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, b in CNNS.items():
        label = f"**{name}**" if name in ORIGINAL_BACKBONES else name
        minimum = "fixed" if b.fixed_input else str(b.min_input_size)
        lines.append(f"| {label} | {b.features()} | {b.input_size} | {minimum} | "
                     f"{b.download_mb:g} | {speed_cell(name, speed)} |")
    lines += ["", "Backbones in **bold** are the seven of the original tool.", "",
              "The foundation encoders of keras-hub (DINOv2, SigLIP, SigLIP 2 and CLIP) come",
              "after these in every list; see [foundation models](foundation.md).", ""]
    lines += weights_table()
    if speed:
        lines += [
            "## How the speed was measured",
            "",
            f"Measured on {speed['date']} with `{speed['command']}`, on {speed['cores']} CPU",
            f"cores ({speed['cpu']}), TensorFlow {speed['tensorflow']}, no GPU. Each backbone",
            "was built with random weights (`weights=None`; the speed does not depend on the",
            f"weights), then fed {speed['batches']} batches of {speed['batch_size']} random "
            "images at its default input",
            "size through the same compiled step the engine uses, after one warm-up batch.",
            "",
        ]
        if speed.get("note"):
            lines += [speed["note"], ""]
        lines += [
            "Rerun the command to measure your own machine; `python doc/gen_backbones.py`",
            "rewrites this page from `doc/backbone_speed.json`.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", action="store_true", help="time the backbones first")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=list(MEASURED))
    args = parser.parse_args(argv)
    speed = json.loads(SPEED_FILE.read_text()) if SPEED_FILE.exists() else {}
    if args.measure:
        speed = measure(tuple(args.models), args.batch_size, args.batches)
        SPEED_FILE.write_text(json.dumps(speed, indent=1) + "\n")
    PAGE.write_text(render(speed))
    print(f"wrote {PAGE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
