"""Running a converted (TFLite) model with OpenVINO, the optional ``[openvino]`` extra."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np


class OpenVINORuntime:
    """OpenVINO's CPU plugin, compiled once per batch shape, in float32 where the
    model is float (never the bf16 that OpenVINO picks by default on some CPUs)."""

    name = "openvino"

    def __init__(self, path: Path, precision: str, threads: int):
        import openvino

        self.precision = precision
        self._core = openvino.Core()
        self._model = self._core.read_model(str(path))
        self._threads = threads
        self._compiled: dict[tuple, object] = {}
        self._lock = threading.Lock()

    def _request(self, shape: tuple):
        if shape not in self._compiled:
            model = self._model.clone()
            model.reshape(list(shape))
            compiled = self._core.compile_model(model, "CPU", {
                "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": self._threads})
            self._compiled[shape] = compiled.create_infer_request()
        return self._compiled[shape]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            request = self._request(batch.shape)
            request.infer({0: np.ascontiguousarray(batch, np.float32)})
            return np.array(request.get_output_tensor(0).data, np.float32, copy=True)
