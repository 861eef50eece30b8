"""The settings of an embedding job, checked once, as plain picklable data."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import SettingsError
from .models.registry import POOLINGS as POOLINGS  # the choices, for the faces
from .models.registry import Backbone, get_backbone
from .models.weights import default_input_size, normalize_weights, weights_identity

#: ``input_size`` value that embeds each image at its own size (pooled backbones).
NATIVE = "native"
#: The backbone's own features: its global pool, or VGG's ``fc2``.
DEFAULT_LAYER = "default"
RUNTIMES = ("auto", "keras", "tflite", "openvino")
PRECISIONS = ("fp32", "int8")
#: Pixels in flight (decoded images waiting and the batch being filled), by default.
DEFAULT_MEMORY_LIMIT = 1 << 30
MIN_MEMORY_LIMIT = 64 << 20
#: Resize policies: crop the largest centred box of the input's aspect ratio,
#: then resize (the default: how ImageNet models are evaluated, and on the
#: hymenoptera photos it gave 2-5 points more accuracy than stretching), or
#: stretch the whole image to the input (as the original tool did).
RESIZE_POLICIES = ("crop", "stretch")
DEFAULT_RESIZE = "crop"
#: Bytes read of one image at most, by default: above any real photo.
DEFAULT_MAX_IMAGE_BYTES = 256 << 20
#: Bytes read of a CSV list at most.
MAX_CSV_BYTES = 1 << 30
#: Bumped whenever the same settings would give other vectors.
KEY_VERSION = "v2"
#: The environment variable that moves the default cache folder.
CACHE_DIR_ENV = "TRANSFEREMBED_CACHE_DIR"


@dataclass(frozen=True)
class EmbedConfig:
    """Everything that decides the embeddings, plus how to compute them.

    ``input_size`` is given as None (the backbone's own size), a number of
    pixels, or ``"native"``, and is kept as the number or ``"native"``.
    ``runtime`` ``"auto"`` is resolved to a concrete runtime when a job
    starts (:func:`.runtimes.resolve`).
    """

    model: str = "MobileNet"
    weights: str | None = "imagenet"
    alpha: float = 1.0
    input_size: int | str | None = None
    resize: str = DEFAULT_RESIZE
    batch_size: int = 32
    cache: bool | str = True  #: True: the default cache; False: none; or a folder
    layer: str = DEFAULT_LAYER  #: a Keras layer name, or "default"
    pooling: str | None = None  #: how a map or tokens become one vector; None: the backbone's
    runtime: str = "auto"
    precision: str = "fp32"
    memory_limit: int = DEFAULT_MEMORY_LIMIT  #: bytes of pixels in flight
    decode_threads: int = 0  #: 0: chosen from the CPU count
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES  #: a larger image file is skipped

    def __post_init__(self):
        backbone = get_backbone(self.model)
        self._set("model", backbone.name)
        self._set("weights", normalize_weights(self.weights))
        self._set("alpha", float(self.alpha))
        backbone.features(self.alpha)  # validates alpha
        _check_choice(self.resize, RESIZE_POLICIES, "resize")
        self._set("pooling", backbone.pooling(self.pooling))
        _check_choice(self.runtime, RUNTIMES, "runtime")
        _check_choice(self.precision, PRECISIONS, "precision")
        self._set("layer", str(self.layer).strip() or DEFAULT_LAYER)
        self._set("batch_size", _at_least(self.batch_size, 1, "batch size"))
        self._set("memory_limit", _at_least(self.memory_limit, MIN_MEMORY_LIMIT,
                                            "memory limit (bytes)"))
        self._set("decode_threads", _at_least(self.decode_threads, 0, "decode threads"))
        self._set("max_image_bytes", _at_least(self.max_image_bytes, 1, "image size limit (bytes)"))
        self._set("input_size", _input_size(backbone, self.input_size, self.weights))
        if self.cache is not True and self.cache is not False:
            self._set("cache", os.fspath(self.cache))

    def _set(self, name: str, value) -> None:
        object.__setattr__(self, name, value)

    @property
    def backbone(self) -> Backbone:
        return get_backbone(self.model)

    @property
    def native(self) -> bool:
        return self.input_size == NATIVE

    @property
    def default_layer(self) -> bool:
        return self.layer == DEFAULT_LAYER

    @property
    def known_feature_size(self) -> int | None:
        """The number of features, where the registry knows it for sure: the default layer
        of a classic CNN (a keras-hub preset folder may hold any width)."""
        return self.backbone.features(self.alpha) \
            if self.default_layer and not self.backbone.foundation else None

    @property
    def cache_folder(self) -> Path:
        """Where this job keeps its caches (embeddings and converted models): the
        folder it names, else the user's default, also when the embedding cache is off."""
        return cache_folder(self.cache)

    def on_keras(self) -> EmbedConfig:
        """This job on the reference runtime: Keras, in fp32."""
        return self.with_(runtime="keras", precision="fp32")

    def _model_fields(self) -> list[str]:
        return [self.model, f"alpha={self.alpha:g}",
                weights_identity(self.backbone, self.weights, self.alpha),
                f"size={self.input_size}", f"layer={self.layer}", f"pooling={self.pooling}"]

    def model_key(self) -> str:
        """What decides a model's output: backbone, weights, size, layer, runtime."""
        return "|".join([KEY_VERSION, *self._model_fields(), f"runtime={self.runtime}",
                         f"precision={self.precision}"])

    def converted_key(self, converter: str) -> str:
        """The key of this job's converted model file, made by ``converter``."""
        return "|".join([KEY_VERSION, "converted-v1", *self._model_fields(),
                         f"precision={self.precision}", converter])

    def embedding_key(self, calibration: str = "") -> str:
        """What the cache key needs besides the image: the model and the preprocessing."""
        return f"{self.model_key()}|resize={self.resize}|calibration={calibration}"

    def provenance(self) -> dict[str, str]:
        """What made the features, as text, for a table's attributes: backbone, width,
        layer, pooling, weights (``imagenet``, ``random`` or the file's sha256), input
        size, resize, runtime and precision (those that ran, once a job resolved them)."""
        if self.weights in (None, "imagenet"):
            weights = "random" if self.weights is None else "imagenet"
        else:  # a file's sha256, or a preset folder's (over its files' names and hashes)
            kind, digest = weights_identity(self.backbone, self.weights, self.alpha).split(":")
            weights = f"{'sha256' if kind == 'file' else 'preset-sha256'}:{digest}"
        return {"backbone": self.model, "width": f"{self.alpha:g}", "layer": self.layer,
                "pooling": self.pooling, "weights": weights,
                "input_size": str(self.input_size), "resize": self.resize,
                "runtime": self.runtime, "precision": self.precision}

    def with_(self, **changes) -> EmbedConfig:
        return replace(self, **changes)


def cache_folder(cache: bool | str | os.PathLike) -> Path:
    """The folder of caches that ``cache`` names: a folder, or (True or False) the
    user's default."""
    return Path(cache) if not isinstance(cache, bool) else default_cache_dir()


def default_cache_dir() -> Path:
    """``$TRANSFEREMBED_CACHE_DIR``, else the platform's user cache folder."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("transferembed", appauthor=False))


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise SettingsError(f"{what} must be one of {', '.join(choices)}, got {value!r}")


def _at_least(value, low: int, what: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{what} must be a whole number, got {value!r}") from None
    if number < low:
        raise SettingsError(f"{what} must be at least {low}, got {number}")
    return number


def _input_size(backbone: Backbone, requested, weights: str | None) -> int | str:
    """The square input size in pixels, or NATIVE; refuses what the backbone cannot take."""
    own = default_input_size(backbone, weights)
    if requested is None:
        return own
    if requested == NATIVE:
        if backbone.fixed_input or not backbone.pooled:
            raise SettingsError(
                f"{backbone.name} ({backbone.feature_description}) needs a fixed "
                f"{backbone.input_size}x{backbone.input_size} input; embedding at the "
                f"image's own size works only for pooled backbones that take any input size")
        return NATIVE
    size = _at_least(requested, 1, "input size")
    backbone.check_input_size(size, own)
    return size


def parse_memory(text: str, what: str = "memory limit") -> int:
    """``2G``, ``512M``, ``1.5GiB`` or a number of bytes, as bytes."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    value = str(text).strip().upper().removesuffix("IB").removesuffix("B")
    unit = value[-1:] if value[-1:] in units and value[-1:] else ""
    try:
        number = float(value[:-1] if unit else value)
    except ValueError:
        raise SettingsError(f"{what} must be a size such as 2G or 512M, "
                            f"got {text!r}") from None
    return int(number * units[unit])


def size_text(count: int) -> str:
    """A number of bytes as a person reads it: ``3 MB`` or ``512 bytes``."""
    return f"{count / (1 << 20):.0f} MB" if count >= 1 << 20 else f"{count} bytes"
