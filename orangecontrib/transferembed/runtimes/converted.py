"""Models converted to TensorFlow Lite: converting, storing, and running them.

The backbone and its ``preprocess_input`` are traced as one TensorFlow
function, frozen, and converted; ``int8`` is full-integer quantization
(per-channel weights, activations calibrated on :mod:`..calibration`'s fixed
images), with float32 input and output. The file is stored on disk
(:mod:`.store`), so a backbone is converted once per machine.
"""

from __future__ import annotations

import logging
import tempfile
import time
import warnings
from pathlib import Path

from .. import calibration, models
from ..config import EmbedConfig
from ..tfimport import filtered_stderr
from . import ConversionFailed, Status, converted_key, store, threads
from .keras_runtime import fixed_size, preprocessing

log = logging.getLogger(__name__)
_CALIBRATION_BATCH = 8


def convert(config: EmbedConfig, weights_path: str | None) -> bytes:
    """The TFLite flatbuffer of ``config``'s model and precision."""
    model = models.build(config.backbone, config.alpha, fixed_size(config), weights_path,
                         config.layer, config.pooling)
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    preprocess = preprocessing(config)
    side = fixed_size(config)

    @tf.function(input_signature=[tf.TensorSpec((None, side, side, 3), tf.float32)])
    def step(batch):
        return model(preprocess(batch), training=False)

    frozen = convert_variables_to_constants_v2(step.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], tf.Module())
    if config.precision == "int8":
        images = calibration.calibration_images(side)

        def representative():
            for start in range(0, len(images), _CALIBRATION_BATCH):
                yield [images[start:start + _CALIBRATION_BATCH].astype("float32")]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
    with warnings.catch_warnings(), filtered_stderr():
        warnings.simplefilter("ignore")
        return converter.convert()


def model_file(config: EmbedConfig, weights_path: str | None,
               status: Status | None) -> Path | bytes:
    """The converted model: its stored file, or converted now (and stored; its bytes
    where it cannot be stored)."""
    key = converted_key(config)
    found = store.load(key)
    if found is not None:
        return found
    if status is not None:
        status(f"Converting {config.model} to TFLite {config.precision} (once; kept in "
               f"{store.store_folder()})")
    started = time.perf_counter()
    try:
        data = convert(config, weights_path)
    except (MemoryError, KeyboardInterrupt):
        raise
    except Exception as exc:  # the converter raises many kinds; the model runs on Keras
        reason = f"{type(exc).__name__}: {str(exc).strip()}"
        log.warning("converting %s failed: %s", config.model, reason, exc_info=True)
        store.mark_failed(key, reason)
        raise ConversionFailed(reason) from exc
    log.info("converted %s (%s) in %.1f s", config.model, config.precision,
             time.perf_counter() - started)
    saved = store.save(key, data)
    return data if saved is None else saved


def converted_runtime(config: EmbedConfig, weights_path: str | None, status: Status | None):
    """The TFLite or OpenVINO runtime of ``config`` (conversion included)."""
    path = model_file(config, weights_path, status)
    if config.runtime == "openvino":
        if isinstance(path, bytes):  # OpenVINO reads files only
            folder = Path(tempfile.mkdtemp(prefix="transferembed-model-"))  # mode 0700
            (folder / "model.tflite").write_bytes(path)
            path = folder / "model.tflite"
        from .openvino_runtime import OpenVINORuntime

        return OpenVINORuntime(path, config.precision, threads())
    from .tflite_runtime import TFLiteRuntime

    return TFLiteRuntime(path, config.precision, threads())
