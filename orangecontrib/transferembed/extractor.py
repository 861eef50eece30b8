"""Building a backbone as a feature extractor; the only module that imports TensorFlow.

TensorFlow and Keras are imported inside :func:`get_extractor`, on first use,
so that importing the package (and Orange discovering the widget) stays fast.
"""

from __future__ import annotations

import ctypes
import gc
import hashlib
import importlib
import importlib.util
import os
import sys
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .backbones import Backbone
from .errors import WeightsUnavailableError
from .weights import RANDOM_SEED

_CACHE_SIZE = 2
_extractors: OrderedDict[tuple, Extractor] = OrderedDict()
_lock = threading.Lock()
_import_lock = threading.Lock()
_tensorflow_imported = False


class Extractor:
    """A backbone cut at its feature layer, with a compiled inference step.

    Calling it maps a float32 batch ``(B, H, W, 3)`` of RGB pixels in 0..255
    to float32 features ``(B, K)``; the backbone's own ``preprocess_input``
    runs inside the compiled step.
    """

    def __init__(self, backbone: Backbone, weights_path: str | None, alpha: float,
                 input_size: int | None):
        import_tensorflow()
        import keras
        import tensorflow as tf

        self.backbone = backbone
        self.alpha, self.input_size = alpha, input_size
        model = _build(keras, backbone, alpha, input_size, weights_path)
        self.feature_size = int(model.output_shape[-1])
        preprocess = importlib.import_module(
            f"keras.applications.{backbone.module}").preprocess_input
        shape = (None, input_size, input_size, 3) if input_size else (None, None, None, 3)

        @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32)])
        def step(batch):
            return model(preprocess(batch), training=False)

        self.model = model
        self._step = step
        self._lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            return self._step(batch).numpy().astype(np.float32, copy=False)


def import_tensorflow() -> None:
    """Import TensorFlow (and Keras) without stalling the GUI thread.

    Importing holds the GIL: loading TensorFlow's big shared libraries, and
    the garbage collector's full passes over the millions of objects the
    import creates, would each freeze the GUI for up to a second. The
    libraries are therefore loaded first through ``dlopen`` called via
    ctypes (which releases the GIL), and the collector rests during the
    import; the imported objects are then frozen out of later collections.
    """
    global _tensorflow_imported
    with _import_lock:  # TensorFlow's import breaks when two threads run it at once
        if _tensorflow_imported:
            return
        _preload_shared_libraries()
        enabled = gc.isenabled()
        gc.disable()
        try:
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
        finally:
            gc.freeze()
            if enabled:
                gc.enable()
        _tensorflow_imported = True


def _preload_shared_libraries() -> None:
    spec = importlib.util.find_spec("tensorflow")
    if sys.platform != "linux" or spec is None or spec.origin is None:
        return
    folder = Path(spec.origin).parent
    try:
        dlopen = ctypes.CDLL(None).dlopen
    except (OSError, AttributeError):
        return
    dlopen.restype, dlopen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]
    for name in ("libtensorflow_framework.so.2", "libtensorflow_cc.so.2"):
        if (folder / name).is_file():
            dlopen(os.fsencode(folder / name), os.RTLD_NOW)


def _build(keras, backbone: Backbone, alpha: float, input_size: int | None,
           weights_path: str | None):
    constructor = getattr(keras.applications, backbone.constructor)
    kwargs = {"weights": None}
    if backbone.has_alpha:
        kwargs["alpha"] = alpha
    if backbone.pooled:
        side = input_size
        full = constructor(include_top=False, pooling="avg", input_shape=(side, side, 3),
                           **kwargs)
    else:
        full = constructor(include_top=True, **kwargs)
    if weights_path is None:
        full = _with_seeded_initializers(keras, full)
    else:
        try:
            full.load_weights(weights_path)
        except Exception as exc:  # Keras raises many types for a wrong file
            raise WeightsUnavailableError(
                f"Cannot load weights for {backbone.name} from {weights_path}: {exc}. "
                f"The file must hold {backbone.name} weights "
                f"({'with' if not backbone.pooled else 'without'} the classifier top, "
                f"as Keras' {backbone.weights_filename(alpha)}).") from None
    if backbone.pooled:
        return full
    return keras.Model(full.inputs, full.get_layer(backbone.feature_layer).output,
                       name=f"{backbone.name}_{backbone.feature_layer}")


def _with_seeded_initializers(keras, model):
    """``model`` rebuilt with every random initializer seeded from its layer's position.

    Keras draws an unseeded initializer's seed from Python's process-wide
    ``random`` when the layer is made, so any other thread that uses ``random``
    meanwhile (Dask's event loop, say) changes the weights. Explicit seeds make
    random weights the same in every process and thread, whatever ran before.
    """
    positions = {id(layer): number for number, layer in enumerate(model.layers)}

    def clone(layer):
        config = layer.get_config()
        if id(layer) in positions:  # not a bare operation (those hold no weights)
            seed_base = f"{RANDOM_SEED}:{positions[id(layer)]}:{type(layer).__name__}"
            config = _seed_config(config, seed_base)
        return type(layer).from_config(config)

    return keras.models.clone_model(model, clone_function=clone)


def _seed_config(config, path: str):
    """A layer config with a fixed seed for every unseeded Keras initializer in it."""
    if isinstance(config, list):
        return [_seed_config(value, f"{path}/{i}") for i, value in enumerate(config)]
    if not isinstance(config, dict):
        return config
    config = {key: _seed_config(value, f"{path}/{key}") for key, value in config.items()}
    inner = config.get("config")
    if (config.get("module") == "keras.initializers" and isinstance(inner, dict)
            and "seed" in inner and inner["seed"] is None):
        digest = hashlib.sha256(path.encode()).digest()
        config["config"] = {**inner, "seed": int.from_bytes(digest[:4], "little") >> 1}
    return config


def get_extractor(backbone: Backbone, weights_path: str | None, weights_id: str,
                  alpha: float, input_size: int | None) -> Extractor:
    """A built extractor, reused across runs in this process (the last few)."""
    key = (backbone.name, weights_id, float(alpha), input_size)
    with _lock:
        if key in _extractors:
            _extractors.move_to_end(key)
            return _extractors[key]
    extractor = Extractor(backbone, weights_path, alpha, input_size)
    with _lock:
        _extractors[key] = extractor
        while len(_extractors) > _CACHE_SIZE:
            _extractors.popitem(last=False)
    return extractor
