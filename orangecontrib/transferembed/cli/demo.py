"""A small generated image set for ``transferembed demo``: circles and squares."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def make_demo_images(folder: str | Path, per_class: int = 12, size: int = 96,
                     seed: int = 0) -> int:
    """Write ``per_class`` PNGs of random circles and of squares, one subfolder each."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    count = 0
    for shape in ("circles", "squares"):
        (folder / shape).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 80, 3)))
            draw = ImageDraw.Draw(img)
            radius = int(rng.integers(size // 6, size // 3))
            cx, cy = (int(v) for v in rng.integers(radius, size - radius, 2))
            box = (cx - radius, cy - radius, cx + radius, cy + radius)
            colour = tuple(int(v) for v in rng.integers(150, 256, 3))
            (draw.ellipse if shape == "circles" else draw.rectangle)(box, fill=colour)
            img.save(folder / shape / f"{shape[:-1]}-{i:02d}.png")
            count += 1
    return count


def make_demo_npy(images: str | Path, folder: str | Path,
                  name: str = "demo") -> tuple[Path, Path]:
    """The demo images as the original tool's npy pair: ``<name>_images.npy`` holds
    flattened HxWx3 rows (96x96 for the demo: ``-he 96 -w 96 -c 3``), and
    ``<name>_labels.npy`` the classes."""
    from ..pipeline.sources import open_source
    from ..writers import write_atomically

    source = open_source("folder", images)
    rows = np.stack([np.asarray(Image.open(path).convert("RGB")).reshape(-1)
                     for path in source.paths])
    folder = Path(folder)
    targets = [folder / f"{name}_images.npy", folder / f"{name}_labels.npy"]

    def write(data_file, labels_file):
        np.save(data_file, rows, allow_pickle=False)
        np.save(labels_file, source.labels, allow_pickle=False)

    write_atomically(targets, write)
    return targets[0], targets[1]
