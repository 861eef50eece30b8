"""The first stages of a job: read and hash each item, look it up in the cache,
decode it; in a small thread pool that runs ahead of inference.

Items come out in source order. The pool works ahead by at most a window of
items and a budget of bytes of decoded pixels, whichever is reached first:
small images keep two batches ready, 12-megapixel photos a few at a time.
Pillow and the hashing release the GIL, so decoding overlaps inference.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from ..config import EmbedConfig
from ..errors import ImageError
from .cache import EmbeddingCache
from .sources import Source


class Prepared:
    """One item after the first stages: a cached vector, pixels, or an error."""

    __slots__ = ("index", "key", "embedding", "pixels", "error")

    def __init__(self, index: int, key: str | None = None, embedding=None, pixels=None,
                 error: str | None = None):
        self.index, self.key, self.embedding = index, key, embedding
        self.pixels, self.error = pixels, error

    @property
    def nbytes(self) -> int:
        return 0 if self.pixels is None else self.pixels.nbytes


def default_decode_threads() -> int:
    """At least 4, even on 2 cores: decoding then keeps ahead of inference
    when other processes load the machine (bench/README.md, thread counts)."""
    return max(4, min(8, os.cpu_count() or 1))


class Reader:
    """Reads, hashes, looks up and decodes one item (called from pool threads)."""

    def __init__(self, source: Source, config: EmbedConfig, cache: EmbeddingCache | None,
                 embedding_key: str):
        self.source, self.config, self.cache = source, config, cache
        self.embedding_key = embedding_key
        side = None if config.native else int(config.input_size)
        self.size = (side, side) if side else None
        self.width = config.known_feature_size

    def __call__(self, index: int) -> Prepared:
        try:
            raw = self.source.read(index, self.config.max_image_bytes)
            key = None
            if self.cache is not None:
                key = self.cache.key(self.embedding_key, self.source.content_hash(raw))
                hit = self.cache.get(key)
                if hit is not None and (self.width is None or hit.shape == (self.width,)):
                    return Prepared(index, key, embedding=hit)
            pixels = self.source.decode(raw, self.size, self.config.resize,
                                        self.config.backbone.min_input_size)
            return Prepared(index, key, pixels=pixels)
        except ImageError as exc:
            return Prepared(index, error=str(exc))
        except MemoryError:
            return Prepared(index, error="out of memory while decoding the image")


class Prefetcher:
    """Runs a :class:`Reader` ahead of its consumer; iterate to get items in order.

    ``reserved()`` tells how many bytes the consumer holds already (the batch
    being filled), which the budget leaves room for.
    """

    def __init__(self, reader: Callable[[int], Prepared], total: int, window: int,
                 budget: int, threads: int, reserved: Callable[[], int] = lambda: 0):
        self.reader, self.total, self.window = reader, total, max(1, window)
        self.budget, self.reserved, self.threads = budget, reserved, threads
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="transferembed-decode")
        self.pending: deque[Future] = deque()
        self.next_index = 0
        self.held = 0  #: bytes of decoded pixels done but not yet taken
        self.largest = 0  #: the largest decoded item so far: the guess for running ones
        self._lock = threading.Lock()

    def _read(self, index: int) -> Prepared:
        item = self.reader(index)
        with self._lock:
            self.held += item.nbytes
            self.largest = max(self.largest, item.nbytes)
        return item

    def _room(self) -> bool:
        if not self.pending:
            return True  # always one item in flight, however large
        if len(self.pending) >= self.window:
            return False
        if not self.largest and len(self.pending) >= self.threads:
            return False  # no size seen yet: as many as decode at once
        with self._lock:
            running = sum(not f.done() for f in self.pending)
            expected = self.held + (running + 1) * self.largest
        return expected + self.reserved() <= self.budget

    def __iter__(self) -> Iterator[Prepared]:
        while self.pending or self.next_index < self.total:
            while self.next_index < self.total and self._room():
                self.pending.append(self.pool.submit(self._read, self.next_index))
                self.next_index += 1
            item = self.pending.popleft().result()
            with self._lock:
                self.held -= item.nbytes
            yield item

    def close(self) -> None:
        for future in self.pending:
            future.cancel()
        self.pending.clear()
        self.pool.shutdown(wait=True, cancel_futures=True)
