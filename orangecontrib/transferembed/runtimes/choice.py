"""The choice of runtime for a job, and the runtimes loaded in this process.

A runtime owns its model: building it, converting it, its threads and its
precision. ``keras`` is the reference, available everywhere, and the runtime
of GPUs. ``tflite`` runs a model converted to TensorFlow Lite (XNNPACK, inside
TensorFlow), ``openvino`` runs the same converted file with OpenVINO (the
optional ``[openvino]`` extra). ``auto`` is the fastest exact runtime on this
machine: Keras on a GPU or at the image's own size, else TFLite; int8 runs on
TFLite, whose arithmetic is the quantized model's own (OpenVINO's int8 of the
same file is faster on CPUs without VNNI, but further from fp32). Why: see
doc/performance.md.

Nothing here imports TensorFlow until a runtime is loaded.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from functools import partial

from ..config import EmbedConfig
from ..errors import SettingsError, check_cancelled
from .base import (
    OPENVINO_HINT,
    ConversionFailed,
    Runtime,
    Status,
    converted_key,
    converter_identity,
    gpu_available,
    has_openvino,
)

_LOADED = 2  #: runtimes kept in this process, the most recently used
_runtimes: OrderedDict[str, Runtime] = OrderedDict()
_building: dict[str, threading.Lock] = {}  #: one lock per model key, held while it builds
_lock = threading.Lock()


def resolve(config: EmbedConfig) -> tuple[EmbedConfig, str | None]:
    """``config`` with a concrete runtime and precision, and a notice if it was changed."""
    runtime, precision = config.runtime, config.precision
    if runtime == "keras" and precision == "int8":
        raise SettingsError("the keras runtime computes in fp32 only; int8 needs --runtime "
                            "auto, tflite or openvino")
    if runtime == "openvino" and not has_openvino():
        raise SettingsError(f"the openvino runtime is not installed; install it with: "
                            f"{OPENVINO_HINT}")
    if config.native and runtime != "keras":
        notice = None
        if runtime != "auto" or precision != "fp32":
            notice = (f"a converted model has one input size; at each image's own size "
                      f"the embedding runs on keras in fp32, not {runtime} {precision}")
        return config.on_keras(), notice
    if runtime == "auto":  # int8 too: OpenVINO's int8 is faster here but less faithful
        runtime = "keras" if gpu_available() and precision == "fp32" else "tflite"
    resolved = config.with_(runtime=runtime)
    if runtime == "keras":
        return resolved, None
    from . import store

    reason = store.failure(converted_key(resolved), store.store_folder(resolved))
    if reason is None:
        return resolved, None
    return fall_back(resolved, reason)


def fall_back(config: EmbedConfig, reason: str) -> tuple[EmbedConfig, str]:
    """``config`` on Keras in fp32, where its runtime cannot run the model, and the
    notice that says so."""
    notice = (f"{config.model} does not convert to {config.runtime} {config.precision} "
              f"({reason.splitlines()[0][:200]}); it runs on keras in fp32")
    return config.on_keras(), notice


def cancellable(build: Callable[[], Runtime], is_cancelled: Callable[[], bool] | None,
                poll_s: float = 0.1) -> Runtime:
    """``build()`` in a thread of its own, given up when ``is_cancelled()`` says so.

    Building a model or converting it takes seconds to minutes in TensorFlow,
    which cannot be interrupted; a cancelled build finishes in the background
    and its result is dropped, except a conversion, whose process is ended.
    """
    if is_cancelled is None:
        return build()
    done: dict = {}

    def target():
        try:
            done["value"] = build()
        except BaseException as exc:  # handed to the waiting thread below
            done["error"] = exc

    thread = threading.Thread(target=target, name="transferembed-build", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(poll_s)
        if thread.is_alive():
            check_cancelled(is_cancelled)
    if "error" in done:
        raise done["error"]
    return done["value"]


def load(config: EmbedConfig, weights_path: str | None, status: Status | None = None,
         is_cancelled: Callable[[], bool] | None = None) -> Runtime:
    """The runtime of a resolved ``config``, built once per process (the last few).

    Raises :class:`ConversionFailed` where the backbone does not convert.
    """
    key = f"{config.model_key()}|{converter_identity(config)}"
    with _lock:
        building = _building.setdefault(key, threading.Lock())
    # A second caller waits for the first one's model instead of building its own.
    while not building.acquire(timeout=0.1):
        check_cancelled(is_cancelled)
    try:
        with _lock:
            if key in _runtimes:
                _runtimes.move_to_end(key)
                return _runtimes[key]
        runtime = _build(config, weights_path, status, is_cancelled)
        with _lock:
            _runtimes[key] = runtime
            while len(_runtimes) > _LOADED:
                _runtimes.popitem(last=False)
        return runtime
    finally:
        building.release()


def _build(config: EmbedConfig, weights_path: str | None, status: Status | None,
           is_cancelled: Callable[[], bool] | None) -> Runtime:
    if config.runtime == "keras":
        from .keras_runtime import KerasRuntime

        build = partial(KerasRuntime, config, weights_path)
    else:
        from .converted import converted_runtime

        build = partial(converted_runtime, config, weights_path, status, is_cancelled)
    return cancellable(build, is_cancelled)


def prepare(config: EmbedConfig, hooks) -> EmbedConfig:
    """Convert a resolved ``config``'s model here and now, if it is converted at all,
    before a cluster's workers need it; ``config`` for Keras where it does not convert.

    The workers of this machine then read the stored file instead of each
    converting it; those elsewhere convert the same file themselves.
    """
    if config.runtime == "keras":
        return config
    from ..models.weights import resolve_weights
    from . import store
    from .converted import model_file

    if store.load(converted_key(config), store.store_folder(config)) is not None:
        return config
    weights = resolve_weights(config.backbone, config.weights, config.alpha, hooks.download)
    try:
        model_file(config, weights, hooks.status, hooks.is_cancelled)
    except ConversionFailed as exc:
        config, notice = fall_back(config, str(exc))
        hooks.tell(notice)
    return config
