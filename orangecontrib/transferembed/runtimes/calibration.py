"""The calibration set of int8 models: fixed, generated, the same everywhere.

Full-integer quantization needs example inputs to measure each activation's
range. They are not taken from the job's images: a model calibrated on one
data set would give another feature space than the same backbone calibrated
on the next (train and test embedded apart would not match), and a cluster's
workers would need the job's first images. Instead every int8 model of a
backbone is calibrated on the same :data:`SIZE` "dead leaves" images:
overlapping discs and boxes of random colour over multi-scale noise, whose
statistics (edges, flat regions, texture at every scale) resemble photos'.
They are drawn with a fixed seed by Pillow and integer arithmetic, so they
are bit for bit the same on every machine.

Measured on the hymenoptera photos with MobileNet 0.25 (doc/performance.md):
this set, 64 real photos and uniform noise gave the same int8 features
(mean cosine 0.980 to fp32) and the same linear-probe accuracy (0.902).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
SEED = 20261201
#: Part of every int8 cache key: change it whenever the images change.
IDENTITY = f"dead-leaves-v1-n{SIZE}-seed{SEED}"


def _noise(rng: np.random.Generator, side: int) -> np.ndarray:
    """Multi-scale noise, -64..64 per channel, as int16."""
    total = np.zeros((side, side, 3), np.int32)
    for cells in (4, 8, 16, 32, 64):
        small = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
        big = Image.fromarray(small).resize((side, side), Image.Resampling.BILINEAR)
        total += np.asarray(big, np.int32) - 128
    return (total // 10).astype(np.int16)


def dead_leaves(rng: np.random.Generator, side: int) -> np.ndarray:
    """One uint8 ``(side, side, 3)`` image."""
    background = tuple(int(v) for v in rng.integers(0, 256, 3))
    image = Image.new("RGB", (side, side), background)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(20, 120))):
        radius = max(1, int(side * float(rng.uniform(0.02, 0.35)) ** 1.5))
        cx, cy = (int(v) for v in rng.integers(-side // 10, side + side // 10, 2))
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    pixels = np.asarray(image, np.int16) + _noise(rng, side)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def calibration_images(side: int, count: int = SIZE) -> np.ndarray:
    """``count`` calibration images at ``side`` pixels, uint8 ``(count, side, side, 3)``."""
    rng = np.random.default_rng(SEED)
    return np.stack([dead_leaves(rng, side) for _ in range(count)])
