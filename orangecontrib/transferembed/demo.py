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
