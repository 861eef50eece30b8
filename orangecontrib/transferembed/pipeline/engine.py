"""The embedding engine: a job as a pipeline of small stages.

    read and hash -> cache lookup -> decode  (prefetch.py: a bounded pool)
        -> batch (batches.py: the row layout) -> infer (runtimes/) -> sink

:func:`run` is the local job: its sink fills the result array and stores
computed vectors in the cache. A cluster runs :class:`Pipeline` on each part
of a job with a sink of its own (distributed.py), described by a
:class:`~.batches.Part`. Progress, cancellation and notices go through
:class:`Hooks`: ``progress(done, total)`` and ``is_cancelled()`` are what
Orange's ``TaskState`` offers and what tqdm needs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..config import EmbedConfig
from ..errors import check_cancelled
from ..models.weights import ByteProgress, resolve_weights
from ..runtimes import choice
from ..runtimes.base import ConversionFailed, Runtime, converter_identity
from .batches import Batch, Part
from .cache import EmbeddingCache, open_cache
from .prefetch import Prefetcher, Prepared, Reader, default_decode_threads
from .results import EmbeddingResult, Skipped
from .sources import Source

Progress = Callable[[int, int], None]
IsCancelled = Callable[[], bool]
Notice = Callable[[str], None]
#: Batches of decoded images that the pool may keep ready, at most.
WINDOW_BATCHES = 2


@dataclass
class Hooks:
    """How a job talks to its face: progress, cancel, downloads, stages and notices."""

    progress: Progress | None = None
    is_cancelled: IsCancelled | None = None
    download: ByteProgress | None = None
    status: Notice | None = None  #: a stage that takes a while (a conversion)
    notice: Notice | None = None  #: something the user should know (a fallback)
    notices: list[str] = field(default_factory=list)

    def check_cancelled(self) -> None:
        check_cancelled(self.is_cancelled)

    def with_progress(self, progress: Progress | None) -> Hooks:
        """These hooks for a part of the work: its own progress and notices kept."""
        return Hooks(progress, self.is_cancelled, self.download, self.status, self.notice)

    def report(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)

    def tell(self, text: str | None) -> None:
        """Pass on a notice, once."""
        if text and text not in self.notices:
            self.notices.append(text)
            if self.notice is not None:
                self.notice(text)


class Inference:
    """The runtime of a config, loaded (and converted) on the first batch only,
    so that a job served from the cache never imports TensorFlow."""

    def __init__(self, config: EmbedConfig, hooks: Hooks):
        self.config, self.hooks = config, hooks
        self.runtime: Runtime | None = None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if self.runtime is None:
            config = self.config
            if self.hooks.status is not None:
                self.hooks.status(loading_text(config.model))
            weights = resolve_weights(config.backbone, config.weights, config.alpha,
                                      self.hooks.download)
            self.runtime = choice.load(config, weights, self.hooks.status,
                                         self.hooks.is_cancelled)
        return self.runtime(batch)


def loading_text(model: str) -> str:
    """The stage before the first batch: TensorFlow (once per process) and the model."""
    if "tensorflow" in sys.modules:
        return f"Loading {model}"
    return f"Loading TensorFlow and {model} (a few seconds, once)"


class Sink:
    """Where a job's vectors go: :class:`LocalSink` here, a part's sink on a cluster."""

    def cached(self, item: Prepared) -> None:
        raise NotImplementedError

    def computed(self, items: Sequence[Prepared], vectors: np.ndarray) -> None:
        raise NotImplementedError

    def skipped(self, item: Prepared) -> None:
        raise NotImplementedError

    def finish(self, layout) -> None:
        """The row layout the job ends at (where a following part would start)."""


class ArraySink(Sink):
    """Fills one float32 row per item (allocated on the first vector) and lists skips."""

    def __init__(self, source: Source, width: int | None):
        self.source = source
        self.out = None if width is None else np.empty((len(source), width), np.float32)
        self.embedded = np.zeros(len(source), bool)
        self.skips: list[Skipped] = []
        self.n_cached = 0

    def _put(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        if self.out is None:
            self.out = np.empty((len(self.source), vectors.shape[-1]), np.float32)
        self.out[rows] = vectors
        self.embedded[rows] = True

    def cached(self, item: Prepared) -> None:
        self._put(np.array([item.index]), item.embedding[None])
        self.n_cached += 1

    def computed(self, items, vectors) -> None:
        self._put(np.fromiter((item.index for item in items), int, len(items)), vectors)

    def skipped(self, item: Prepared) -> None:
        self.skips.append(Skipped(item.index, self.source.describe(item.index), item.error))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The indices of the embedded items and their vectors, in source order."""
        indices = np.flatnonzero(self.embedded)
        if self.out is None:
            return indices, np.empty((0, 0), np.float32)
        return indices, self.out if len(indices) == len(self.out) else self.out[indices]


class LocalSink(ArraySink):
    """The local job's sink: the result array, and computed vectors into the cache."""

    def __init__(self, source: Source, config: EmbedConfig, cache: EmbeddingCache | None):
        super().__init__(source, config.known_feature_size)
        self.config, self.cache = config, cache

    def computed(self, items, vectors) -> None:
        super().computed(items, vectors)
        if self.cache is not None:
            self.cache.put_many({item.key: vector for item, vector in zip(items, vectors,
                                                                          strict=True)})

    def result(self, notices: list[str]) -> EmbeddingResult:
        indices, embeddings = self.arrays()
        return EmbeddingResult(embeddings, indices, self.skips, self.source, self.config,
                               self.n_cached, notices=list(notices))


class Pipeline:
    """The stages of one job (or one part of one): run once, into ``sink``."""

    def __init__(self, source: Source, config: EmbedConfig, sink: Sink,
                 cache: EmbeddingCache | None, hooks: Hooks, part: Part = Part()):
        self.source, self.config, self.sink, self.hooks = source, config, sink, hooks
        self.cache = cache
        backbone = config.backbone
        self.batch = Batch(config.batch_size, backbone.input_size, config.native, part.layout)
        self.infer = Inference(config, hooks)
        key = config.embedding_key(converter_identity(config))
        self.prefetcher = Prefetcher(
            Reader(source, config, cache, key), len(source),
            window=WINDOW_BATCHES * config.batch_size, budget=config.memory_limit,
            threads=config.decode_threads or default_decode_threads(),
            reserved=lambda: self.batch.nbytes)

    def _flush(self) -> None:
        if not self.batch.items:
            return
        buffer, rows, items = self.batch.take()
        features = self.infer(buffer)
        self.sink.computed(items, features[rows])

    def _take(self, item: Prepared) -> None:
        if item.error is not None:
            self.sink.skipped(item)
        elif item.embedding is not None:
            self.sink.cached(item)
        else:
            if not self.batch.fits(item.pixels):
                self._flush()
            self.batch.add(item)
            if self.batch.full:
                self.hooks.check_cancelled()
                self._flush()

    def run(self) -> None:
        total, hooks = len(self.source), self.hooks
        done = reported = 0
        hooks.check_cancelled()
        try:
            for item in self.prefetcher:
                self._take(item)
                done += 1
                if done - reported >= self.config.batch_size:
                    hooks.check_cancelled()
                    reported = done
                    hooks.report(done - len(self.batch.items), total)
            hooks.check_cancelled()
            self.sink.finish(self.batch.layout())
            self._flush()
        finally:
            self.prefetcher.close()
        if self.cache is not None and self.cache.damaged:
            hooks.tell(f"{self.cache.damaged} cached embedding(s) failed their checksum; "
                       f"they were computed again and replaced")
        hooks.report(total, total)


def run(source: Source, config: EmbedConfig, hooks: Hooks | None = None) -> EmbeddingResult:
    """Embed every item of ``source`` here; skip (with reasons) those that cannot be read.

    ``hooks.status`` hears of stages that take a while (converting a model),
    ``hooks.notice`` of what the user should know (the result keeps those too).
    """
    hooks = hooks or Hooks()
    config, note = choice.resolve(config)
    hooks.tell(note)
    try:
        return _run_local(source, config, hooks)
    except ConversionFailed as exc:
        config, note = choice.fall_back(config, str(exc))
        hooks.tell(note)
        return _run_local(source, config, hooks)


def _run_local(source: Source, config: EmbedConfig, hooks: Hooks) -> EmbeddingResult:
    cache = open_cache(config.cache, notice=hooks.tell)
    sink = LocalSink(source, config, cache)
    try:
        Pipeline(source, config, sink, cache, hooks).run()
    finally:
        if cache is not None:
            cache.close()
    return sink.result(hooks.notices)
