"""The reference runtime: the Keras model in one compiled TensorFlow step."""

from __future__ import annotations

import threading

import numpy as np

from ..config import EmbedConfig
from ..models.builders import pixel_step


def fixed_size(config: EmbedConfig) -> int | None:
    return None if config.native else int(config.input_size)


def feature_step(config: EmbedConfig, weights_path: str | None):
    """``(model, step)`` of ``config``: its backbone and preprocessing in one ``tf.function``."""
    return pixel_step(config.backbone, config.alpha, fixed_size(config), weights_path,
                      config.layer, config.pooling)


class KerasRuntime:
    """A backbone cut at its feature layer, with its preprocessing, in one
    ``tf.function``: no per-call ``predict`` overhead."""

    name = "keras"
    precision = "fp32"

    def __init__(self, config: EmbedConfig, weights_path: str | None):
        self.model, self._step = feature_step(config, weights_path)
        self.feature_size = int(self.model.output_shape[-1])
        self._lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            return self._step(batch).numpy().astype(np.float32, copy=False)
