"""Models converted to TensorFlow Lite: storing and running them.

A backbone is converted (:mod:`.conversion`) once per machine, and the file
is stored on disk (:mod:`.store`).
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..config import EmbedConfig
from ..models.tfimport import import_tensorflow
from . import store
from .base import ConversionFailed, Status, converted_key, threads
from .conversion import convert

log = logging.getLogger(__name__)


def model_file(config: EmbedConfig, weights_path: str | None, status: Status | None,
               is_cancelled: Callable[[], bool] | None = None) -> Path | bytes:
    """The converted model: its stored file, or converted now (and stored; its bytes
    where it cannot be stored). A conversion no longer wanted (``is_cancelled()``)
    is stopped, and nothing of it is stored."""
    key, folder = converted_key(config), store.store_folder(config)
    found = store.load(key, folder)
    if found is not None:
        return found
    if status is not None:
        status(f"Converting {config.model} to TFLite {config.precision} (once; kept in "
               f"{folder})")
    if config.runtime == "tflite":  # its interpreter needs TensorFlow here: load it meanwhile
        threading.Thread(target=import_tensorflow, name="transferembed-import",
                         daemon=True).start()
    started = time.perf_counter()
    try:
        data = convert(config, weights_path, is_cancelled)
    except ConversionFailed as exc:
        log.warning("converting %s failed: %s", config.model, exc)
        if exc.lasting:
            store.mark_failed(key, str(exc), folder)
        raise
    log.info("converted %s (%s) in %.1f s", config.model, config.precision,
             time.perf_counter() - started)
    saved = store.save(key, data, folder)
    return data if saved is None else saved


def converted_runtime(config: EmbedConfig, weights_path: str | None, status: Status | None,
                      is_cancelled: Callable[[], bool] | None = None):
    """The TFLite or OpenVINO runtime of ``config`` (conversion included)."""
    path = model_file(config, weights_path, status, is_cancelled)
    if config.runtime == "openvino":
        if isinstance(path, bytes):  # OpenVINO reads files only
            folder = Path(tempfile.mkdtemp(prefix="transferembed-model-"))  # mode 0700
            (folder / "model.tflite").write_bytes(path)
            path = folder / "model.tflite"
        from .openvino_runtime import OpenVINORuntime

        return OpenVINORuntime(path, config.precision, threads())
    from .tflite_runtime import TFLiteRuntime

    return TFLiteRuntime(path, config.precision, threads())
