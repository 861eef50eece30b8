"""The reference runtime: the Keras model in one compiled TensorFlow step."""

from __future__ import annotations

import importlib
import threading

import numpy as np

from ..config import EmbedConfig
from ..models import builders as models


def preprocessing(config: EmbedConfig):
    """The backbone's own ``preprocess_input`` (0..255 RGB to its input scale)."""
    return importlib.import_module(
        f"keras.applications.{config.backbone.module}").preprocess_input


def fixed_size(config: EmbedConfig) -> int | None:
    return None if config.native else int(config.input_size)


class KerasRuntime:
    """A backbone cut at its feature layer, with its preprocessing, in one
    ``tf.function``: no per-call ``predict`` overhead."""

    name = "keras"
    precision = "fp32"

    def __init__(self, config: EmbedConfig, weights_path: str | None):
        model = models.build(config.backbone, config.alpha, fixed_size(config), weights_path,
                             config.layer, config.pooling)
        import tensorflow as tf

        preprocess = preprocessing(config)
        side = fixed_size(config)
        spec = tf.TensorSpec((None, side, side, 3), tf.float32)

        @tf.function(input_signature=[spec])
        def step(batch):
            return model(preprocess(batch), training=False)

        self.model = model
        self.feature_size = int(model.output_shape[-1])
        self._step = step
        self._lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            return self._step(batch).numpy().astype(np.float32, copy=False)
