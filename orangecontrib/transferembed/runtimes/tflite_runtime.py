"""Running a converted model with LiteRT's interpreter (XNNPACK), where ``ai-edge-litert``
is installed, else TensorFlow's own ``tf.lite.Interpreter`` (which TensorFlow 2.20+
schedules for deletion in favour of LiteRT). Both run the same file with the same
kernels; doc/performance.md compares them."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np

from ..models.tfimport import filtered_stderr, import_tensorflow


def interpreter_class(prefer_litert: bool = True):
    """LiteRT's interpreter where it is installed (and preferred), else TensorFlow's."""
    if prefer_litert:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            pass
        else:
            return Interpreter
    import_tensorflow()
    import tensorflow as tf

    return tf.lite.Interpreter


class TFLiteRuntime:
    """One interpreter, resized to each batch shape it is given."""

    name = "tflite"

    def __init__(self, model: Path | bytes, precision: str, threads: int,
                 prefer_litert: bool = True):
        self.precision = precision
        source = {"model_content": model} if isinstance(model, bytes) \
            else {"model_path": str(model)}
        with warnings.catch_warnings(), filtered_stderr():
            warnings.simplefilter("ignore")  # "tf.lite.Interpreter is deprecated"
            self._interpreter = interpreter_class(prefer_litert)(num_threads=threads, **source)
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._shape: tuple | None = None
        self._lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            if batch.shape != self._shape:
                with filtered_stderr():
                    self._interpreter.resize_tensor_input(self._input, batch.shape)
                    self._interpreter.allocate_tensors()
                self._shape = batch.shape
            self._interpreter.set_tensor(self._input, np.ascontiguousarray(batch, np.float32))
            self._interpreter.invoke()
            return self._interpreter.get_tensor(self._output).astype(np.float32, copy=True)
