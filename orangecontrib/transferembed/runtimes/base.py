"""What every runtime shares: its interface, the conversion failure, what the
machine offers, and the key of a converted model.

A runtime takes a float32 batch of RGB pixels (0..255) and gives float32
features. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Protocol

import numpy as np

from ..config import EmbedConfig
from . import calibration

Status = Callable[[str], None]
OPENVINO_HINT = 'pip install "Orange3-TransferEmbed[openvino]"'
class Runtime(Protocol):
    """What the engine calls: one padded batch in, one row of features per image out."""

    name: str
    precision: str

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class ConversionFailed(Exception):
    """The backbone did not convert; the engine runs it on Keras instead.

    ``lasting`` is False where the cause was not the backbone (memory, an
    interruption): the next run tries to convert it again.
    """

    def __init__(self, reason: str, lasting: bool = True):
        super().__init__(reason)
        self.lasting = lasting


def threads() -> int:
    """The cores this process may use: every runtime's thread count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def gpu_available() -> bool:
    """Whether TensorFlow would run on a GPU here, judged without importing it."""
    cuda = Path("/dev/nvidia0").exists() and (
        importlib.util.find_spec("nvidia") is not None
        or importlib.util.find_spec("tensorrt") is not None)
    return cuda or importlib.util.find_spec("tensorflow_metal") is not None


def int8_pays_off() -> bool | None:
    """Whether this CPU has int8 dot-product instructions (VNNI, ARM's dotprod), where
    int8 models run several times faster than fp32; None where it cannot be told."""
    if sys.platform == "darwin":
        return platform.machine() == "arm64"
    try:
        flags = " ".join(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith(("flags", "Features")))
    except OSError:
        return None
    return any(flag in flags.split() for flag in ("avx512_vnni", "avx_vnni", "amx_int8",
                                                  "asimddp", "i8mm"))


def has_openvino() -> bool:
    return importlib.util.find_spec("openvino") is not None


def _version(*names: str) -> str:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


def converter_identity(config: EmbedConfig) -> str:
    """What a converted model's output depends on besides the model: the converter,
    the engine that runs it, and for int8 the calibration set."""
    if config.runtime == "keras":
        return ""
    parts = [f"tf{_version('tensorflow', 'tensorflow-cpu', 'tf-nightly')}"]
    if config.runtime == "openvino":
        parts.append(f"ov{_version('openvino')}")
    if config.precision == "int8":
        parts.append(calibration.IDENTITY)
    return "+".join(parts)


def converted_key(config: EmbedConfig) -> str:
    """The key of a converted model file (shared by TFLite and OpenVINO)."""
    return config.converted_key(converter_identity(config.with_(runtime="tflite")))


