"""Converting a backbone to TensorFlow Lite, in a process of its own.

The backbone and its ``preprocess_input`` are traced as one TensorFlow
function, frozen, and converted; ``int8`` is full-integer quantization
(per-channel weights, activations calibrated on :mod:`..calibration`'s fixed
images), with float32 input and output.

TFLite's converter works in C++ without releasing Python's GIL (0.2 s at a
time for MobileNet 0.25, seconds for ResNet50), it may crash on a backbone it
does not handle, and its memory stays with the process that ran it. It
therefore runs in a child process (:func:`convert`): Orange's window keeps
drawing, a crash becomes a fallback to Keras, and the memory goes back to
the system. The child ends when its parent does (its standard input closes),
and within a tenth of a second once ``is_cancelled()`` says the model is no
longer wanted; its work folder, and whatever it wrote there, goes with it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

from ..config import EmbedConfig
from ..errors import check_cancelled
from ..models import tfimport
from . import calibration
from .base import ConversionFailed
from .keras_runtime import feature_step, fixed_size

_CALIBRATION_BATCH = 8
#: The child's exit codes, besides 0 (converted).
FAILED, OUT_OF_MEMORY, INTERRUPTED = 1, 4, 130
#: Endings that say nothing about the backbone: the next run tries again.
_PASSING = {OUT_OF_MEMORY, INTERRUPTED, -signal.SIGKILL, -signal.SIGTERM, -signal.SIGINT}
_NO_MEMORY = "out of memory while converting"
#: How often a running conversion asks whether it is still wanted, in seconds.
POLL_S = 0.1


def flatbuffer(config: EmbedConfig, weights_path: str | None) -> bytes:
    """The TFLite flatbuffer of ``config``'s model and precision, made in this process."""
    _model, step = feature_step(config, weights_path)
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    frozen = convert_variables_to_constants_v2(step.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], tf.Module())
    if config.precision == "int8":
        images = calibration.calibration_images(fixed_size(config))

        def representative():
            for start in range(0, len(images), _CALIBRATION_BATCH):
                yield [images[start:start + _CALIBRATION_BATCH].astype("float32")]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
    with warnings.catch_warnings(), tfimport.filtered_stderr():
        warnings.simplefilter("ignore")
        return converter.convert()


def convert(config: EmbedConfig, weights_path: str | None,
            is_cancelled: Callable[[], bool] | None = None) -> bytes:
    """The TFLite flatbuffer of ``config``'s model, made by a child process.

    Raises :class:`ConversionFailed`; its ``lasting`` says whether the
    backbone itself failed (not a lack of memory, or an interruption). Once
    ``is_cancelled()`` is true the child is killed, its folder removed, and
    :class:`~.errors.EmbeddingCancelled` raised.
    """
    with tempfile.TemporaryDirectory(prefix="transferembed-convert-") as folder:
        work = Path(folder)
        request = {"config": dataclasses.asdict(config), "weights": weights_path,
                   "verbose": tfimport.verbose()}
        (work / "request.json").write_text(json.dumps(request), encoding="utf-8")
        try:
            code = _run_child(work, is_cancelled)
        except OSError:  # no interpreter to start (an embedded Python): convert here
            return _here(config, weights_path)
        tfimport.write_back((work / "stderr.txt").read_bytes())  # its real messages
        if code == 0 and (work / "model.tflite").is_file():
            return (work / "model.tflite").read_bytes()
        raise _failure(work, code)


def _here(config: EmbedConfig, weights_path: str | None) -> bytes:
    """:func:`flatbuffer`, failing as the child does."""
    try:
        return flatbuffer(config, weights_path)
    except MemoryError:
        raise ConversionFailed(_NO_MEMORY, lasting=False) from None
    except Exception as exc:  # noqa: BLE001 - the converter raises many kinds
        raise ConversionFailed(_reason(exc)) from exc


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).strip()}"


def _run_child(work: Path, is_cancelled: Callable[[], bool] | None = None) -> int:
    root = str(Path(__file__).resolve().parents[3])  # the folder holding orangecontrib
    code = (f"import sys; sys.path.insert(0, {root!r}); "
            "from orangecontrib.transferembed.runtimes.conversion import main; "
            f"sys.exit(main({str(work)!r}))")
    with open(work / "stderr.txt", "wb") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=stderr,
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
        try:
            while True:
                try:
                    return child.wait(POLL_S if is_cancelled is not None else None)
                except subprocess.TimeoutExpired:
                    check_cancelled(is_cancelled)
        finally:  # an interrupted or failed wait must not leave the converter running
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdin.close()


def _failure(work: Path, code: int) -> ConversionFailed:
    reason_file = work / "reason.txt"
    if reason_file.is_file():
        reason = reason_file.read_text(encoding="utf-8", errors="replace").strip()
    elif code < 0:
        reason = f"the converter ended with signal {signal.Signals(-code).name}"
    else:
        lines = (work / "stderr.txt").read_text(errors="replace").strip().splitlines()
        reason = lines[-1] if lines else f"the converter ended with exit code {code}"
    return ConversionFailed(reason, lasting=code not in _PASSING)


def main(folder: str) -> int:
    """The child: convert the request in ``folder``, write ``model.tflite`` there."""
    work = Path(folder)
    threading.Thread(target=_end_with_parent, daemon=True).start()
    request = json.loads((work / "request.json").read_text(encoding="utf-8"))
    tfimport.set_verbose(request["verbose"])
    try:
        tfimport.import_tensorflow()
        data = flatbuffer(EmbedConfig(**request["config"]), request["weights"])
    except KeyboardInterrupt:
        return INTERRUPTED
    except MemoryError:
        (work / "reason.txt").write_text(_NO_MEMORY, encoding="utf-8")
        return OUT_OF_MEMORY
    except Exception as exc:  # noqa: BLE001 - the converter raises many kinds
        (work / "reason.txt").write_text(_reason(exc), encoding="utf-8")
        return FAILED
    partial = work / "model.tflite.part"
    partial.write_bytes(data)
    os.replace(partial, work / "model.tflite")
    return 0


def _end_with_parent() -> None:
    """Exit once the parent is gone: its end of our standard input closes."""
    try:
        while os.read(0, 1 << 12):  # the raw descriptor: no lock to hold at exit
            pass
    finally:
        os._exit(INTERRUPTED)
