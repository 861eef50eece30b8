"""The embedding engine: the only place that knows about batches, threads,
progress, cancellation and the cache.

Items are read, hashed, looked up in the cache and decoded in a small thread
pool that runs ahead of inference by a bounded window; inference runs one
compiled step per batch on the calling thread; results are written in place
into a preallocated float32 array.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

from .backbones import Backbone, get_backbone
from .cache import EmbeddingCache, open_cache
from .errors import EmbeddingCancelled, ImageError, SettingsError
from .images import DEFAULT_RESIZE, RESIZE_POLICIES
from .sources import Source
from .weights import ByteProgress, normalize_weights, resolve_weights, weights_identity

Progress = Callable[[int, int], None]
IsCancelled = Callable[[], bool]
#: ``input_size`` value that embeds each image at its own size (pooled backbones).
NATIVE = "native"


@dataclass(frozen=True)
class EmbedConfig:
    """Everything that decides the embeddings, plus how to compute them.

    It is plain, picklable data, so that workers of a cluster can run it.
    """

    model: str = "MobileNet"
    weights: str | None = "imagenet"
    alpha: float = 1.0
    input_size: int | str | None = None  #: None: the backbone's; an int; or "native"
    resize: str = DEFAULT_RESIZE
    batch_size: int = 32
    cache: bool | str = True  #: True: the default cache; False: none; or a folder
    decode_threads: int = 0  #: 0: chosen from the CPU count

    def __post_init__(self):
        backbone = get_backbone(self.model)
        object.__setattr__(self, "model", backbone.name)
        object.__setattr__(self, "weights", normalize_weights(self.weights))
        object.__setattr__(self, "alpha", float(self.alpha))
        backbone.features(self.alpha)  # validates alpha
        if self.resize not in RESIZE_POLICIES:
            raise SettingsError(f"resize must be one of {', '.join(RESIZE_POLICIES)}, "
                             f"got {self.resize!r}")
        batch_size = _integer(self.batch_size, "batch size")
        if batch_size < 1:
            raise SettingsError(f"batch size must be at least 1, got {batch_size}")
        object.__setattr__(self, "batch_size", batch_size)
        if self.input_size not in (None, NATIVE):
            size = _integer(self.input_size, "input size")
            if backbone.fixed_input and size != backbone.input_size:
                raise SettingsError(f"{backbone.name} takes only {backbone.input_size}x"
                                 f"{backbone.input_size} input")
            if size < backbone.min_input_size:
                raise SettingsError(f"{backbone.name} needs an input size of at least "
                                 f"{backbone.min_input_size}, got {size}")
            object.__setattr__(self, "input_size", size)
        elif self.input_size == NATIVE and (backbone.fixed_input or not backbone.pooled):
            raise SettingsError(f"{backbone.name} ({backbone.feature_description}) needs a fixed "
                             f"{backbone.input_size}x{backbone.input_size} input; embedding "
                             f"at the image's own size works only for pooled backbones "
                             f"that take any input size")

    @property
    def backbone(self) -> Backbone:
        return get_backbone(self.model)

    @property
    def native(self) -> bool:
        return self.input_size == NATIVE

    @property
    def side(self) -> int | None:
        """The square input side, or None at the image's own size."""
        if self.native:
            return None
        return self.input_size or self.backbone.input_size

    @property
    def feature_size(self) -> int:
        return self.backbone.features(self.alpha)

    def model_key(self) -> str:
        """What the cache key needs besides the image: model, weights, preprocessing."""
        return "|".join(["v1", self.model, f"alpha={self.alpha:g}",
                         weights_identity(self.backbone, self.weights, self.alpha),
                         f"size={self.side or NATIVE}", f"resize={self.resize}"])

    def with_(self, **changes) -> EmbedConfig:
        return replace(self, **changes)


def _integer(value, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{what} must be a whole number, got {value!r}") from None


@dataclass
class Skipped:
    """An item that could not be embedded."""

    index: int  #: position in the source
    item: str  #: path or row, as the user knows it
    reason: str


@dataclass
class EmbeddingResult:
    """Embeddings of the items that could be embedded, and the rest with reasons."""

    embeddings: np.ndarray  #: float32 ``(n_embedded, K)``
    indices: np.ndarray  #: positions in the source of the embedded items
    skipped: list[Skipped]
    source: Source
    config: EmbedConfig
    n_cached: int = 0
    labels: np.ndarray | None = field(default=None)  #: labels of the embedded items
    #: Rows and item shape (native size only) of the last, partly filled batch:
    #: where the next part of a larger job continues (see ``offset`` of :func:`run`).
    tail: tuple[int, tuple | None] = (0, None)
    #: Cache keys of the items computed (not read from the cache), by position in
    #: the source; only when :func:`run` was told not to store them (``store=False``).
    new_keys: dict[int, str] = field(default_factory=dict)

    def __post_init__(self):
        if self.labels is None and self.source.labels is not None:
            self.labels = self.source.labels[self.indices]

    @property
    def feature_names(self) -> list[str]:
        return [f"n{i}" for i in range(self.embeddings.shape[1])]

    def __len__(self) -> int:
        return len(self.indices)


def default_decode_threads() -> int:
    """At least 4, even on 2 cores: decoding then keeps ahead of inference
    when other processes load the machine (bench/README.md, thread counts)."""
    return max(4, min(8, os.cpu_count() or 1))


class _Prepared:
    __slots__ = ("index", "key", "embedding", "pixels", "error")

    def __init__(self, index, key=None, embedding=None, pixels=None, error=None):
        self.index, self.key, self.embedding = index, key, embedding
        self.pixels, self.error = pixels, error


class _Batch:
    """Decoded images waiting for inference; always run at the full batch size.

    An image's features depend (in the last bits) on its row in the batch, so
    the first batch may start at row ``start`` (zeros before it): a part of a
    job then gives the same bits as the whole job.
    """

    def __init__(self, size: int, start: int = 0, start_shape: tuple | None = None):
        self.size = size
        self.start, self.start_shape = start, start_shape
        self.buffer: np.ndarray | None = None
        self.items: list[_Prepared] = []

    def fits(self, pixels: np.ndarray) -> bool:
        return self.buffer is None or self.buffer.shape[1:] == pixels.shape

    def add(self, item: _Prepared) -> None:
        if self.buffer is None or not self.fits(item.pixels):
            if self.start_shape not in (None, item.pixels.shape):
                self.start = 0
            self.buffer = np.zeros((self.size,) + item.pixels.shape, np.float32)
        self.buffer[self.start + len(self.items)] = item.pixels
        item.pixels = None
        self.items.append(item)

    @property
    def full(self) -> bool:
        return self.start + len(self.items) == self.size

    def tail(self, native: bool) -> tuple[int, tuple | None]:
        rows = self.start + len(self.items)
        shape = self.buffer.shape[1:] if self.buffer is not None else self.start_shape
        return rows, (tuple(shape) if native and rows and shape else None)


def run(source: Source, config: EmbedConfig, progress: Progress | None = None,
        is_cancelled: IsCancelled | None = None,
        download_progress: ByteProgress | None = None,
        cache: EmbeddingCache | None = None, *, offset: int = 0,
        offset_shape: tuple | None = None, store: bool = True) -> EmbeddingResult:
    """Embed every item of ``source``; skip (with reasons) those that fail.

    ``offset`` (with ``offset_shape`` at native size) is where the first
    batch starts: a part of a job continues the ``tail`` of the part before.
    With ``store=False`` the cache is only read, and the result lists the keys
    of the computed items instead (a cluster stores a part once it is accepted).
    """
    backbone = config.backbone
    total = len(source)
    out = np.empty((total, config.feature_size), np.float32)
    embedded = np.zeros(total, bool)
    skipped: list[Skipped] = []
    owns_cache = cache is None and bool(config.cache)
    if owns_cache:
        cache = open_cache(config.cache)
    model_key = config.model_key() if cache is not None else None
    side = config.side
    size = (side, side) if side else None
    extractor = None
    n_cached = 0
    done = 0
    new_keys: dict[int, str] = {}

    def prepare(index: int) -> _Prepared:
        try:
            raw = source.read(index)
            key = None
            if cache is not None:
                key = cache.key(model_key, source.content_hash(raw))
                hit = cache.get(key)
                if hit is not None and hit.shape == (config.feature_size,):
                    return _Prepared(index, key, embedding=hit)
            pixels = source.decode(raw, size, config.resize, backbone.min_input_size)
            return _Prepared(index, key, pixels=pixels)
        except ImageError as exc:
            return _Prepared(index, error=str(exc))
        except MemoryError:
            return _Prepared(index, error="out of memory while decoding the image")
        except Exception as exc:  # a decoder bug must cost one image, not the run
            return _Prepared(index, error=f"cannot read the image: {type(exc).__name__}: {exc}")

    def infer(batch: _Batch) -> None:
        nonlocal extractor, done
        if not batch.items:
            return
        if extractor is None:
            extractor = _load_extractor(config, download_progress)
        first = batch.start
        batch.buffer[:first] = 0
        batch.buffer[first + len(batch.items):] = 0
        features = extractor(batch.buffer)
        rows = np.fromiter((item.index for item in batch.items), int, len(batch.items))
        out[rows] = features[first:first + len(rows)]
        batch.start = 0
        embedded[rows] = True
        if cache is not None and store:
            cache.put_many({item.key: out[item.index] for item in batch.items})
        elif cache is not None:
            new_keys.update((item.index, item.key) for item in batch.items)
        done += len(batch.items)
        batch.items = []

    def check_cancel() -> None:
        if is_cancelled is not None and is_cancelled():
            raise EmbeddingCancelled()

    batch = _Batch(config.batch_size, offset % config.batch_size, offset_shape)
    window = 2 * config.batch_size
    threads = config.decode_threads or default_decode_threads()
    with ThreadPoolExecutor(threads, thread_name_prefix="transferembed-decode") as pool:
        pending: deque = deque()
        next_index = reported = 0
        try:
            while pending or next_index < total:
                while next_index < total and len(pending) < window:
                    pending.append(pool.submit(prepare, next_index))
                    next_index += 1
                item = pending.popleft().result()
                if item.error is not None:
                    skipped.append(Skipped(item.index, source.describe(item.index), item.error))
                    done += 1
                elif item.embedding is not None:
                    out[item.index] = item.embedding
                    embedded[item.index] = True
                    n_cached += 1
                    done += 1
                else:
                    if not batch.fits(item.pixels):
                        infer(batch)
                    batch.add(item)
                    if batch.full:
                        check_cancel()
                        infer(batch)
                if done - reported >= config.batch_size:
                    check_cancel()
                    reported = done
                    _report(progress, done, total)
            check_cancel()
            tail = batch.tail(config.native)
            infer(batch)
        finally:
            if owns_cache and cache is not None:
                cache.close()
            elif cache is not None:
                cache.flush()
            for future in pending:
                future.cancel()
    _report(progress, total, total)
    indices = np.flatnonzero(embedded)
    embeddings = out if len(indices) == total else out[indices]
    return EmbeddingResult(embeddings, indices, skipped, source, config, n_cached, tail=tail,
                           new_keys=new_keys)


def _report(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


def _load_extractor(config: EmbedConfig, download_progress: ByteProgress | None):
    from .extractor import get_extractor  # imports TensorFlow

    backbone = config.backbone
    weights_path = resolve_weights(backbone, config.weights, config.alpha, download_progress)
    return get_extractor(backbone, weights_path,
                         weights_identity(backbone, config.weights, config.alpha),
                         config.alpha, config.side)
