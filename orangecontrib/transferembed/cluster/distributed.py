"""Running an embedding job on a Dask cluster (the optional ``[dask]`` extra).

The source is cut into parts of whole batches, a few hundred items each. A
worker runs the engine's :class:`~.engine.Pipeline` on a part, with a
:class:`PartSink`: the part's vectors and cache keys go back to the job. Array
data is scattered to the cluster once per part; file parts carry only paths.

An image's features depend, in their last bits, on its row in the batch. So
that the result is bitwise equal to a single process, every part starts at the
row layout where the single-process run would be at its first image: the
layout the part before ends at. Parts run in parallel on a guess (the layout
the known parts lead to; nothing changes when no image is skipped or cached);
a part whose guess proves wrong runs again. For the same reason workers only
read the embedding cache; the job stores a part's vectors once it is accepted.

Workers share nothing with the driver but the scheduler: the job ships them the
weights and converted model it runs (:mod:`.shipping`), and parts of files carry
only their paths or URLs, which each worker reads itself.
"""

from __future__ import annotations

import math
import time
import uuid
from pathlib import Path

import numpy as np

from ..config import EmbedConfig
from ..pipeline import remote
from ..pipeline.batches import START, Layout, Part
from ..pipeline.cache import EmbeddingCache, open_cache
from ..pipeline.engine import ArraySink, Hooks, Pipeline
from ..pipeline.results import EmbeddingResult, Skipped
from ..pipeline.sources import FileSource, Source
from ..runtimes import choice
from . import shards, shipping
from .connect import ClusterError, cluster_client, connected
from .shards import PartResult
from .shipping import Shipment

#: Largest part, in items; parts are whole batches.
MAX_PART = 512
#: Parts per worker thread that a job aims at, for an even load.
PARTS_PER_THREAD = 8
#: How often a part may be lost with its worker before the job fails.
MAX_LOST = 5
#: How long a job waits for a cluster that has no workers before it gives up.
NO_WORKERS_TIMEOUT_S = 60.0
_POLL_S = 0.02
_CHECK_WORKERS_S = 1.0


def part_size(total: int, batch_size: int, threads: int) -> int:
    """Items per part: whole batches, enough parts for every thread, at most ~MAX_PART."""
    batches = math.ceil(total / (batch_size * max(1, threads) * PARTS_PER_THREAD))
    return batch_size * max(1, min(batches, MAX_PART // batch_size))


class PartSink(ArraySink):
    """A part's sink on a worker: vectors by global index, computed keys kept for
    the job to store once the part is accepted, and the layout the part ends at."""

    def __init__(self, source: Source, config: EmbedConfig, part: Part):
        super().__init__(source, config.known_feature_size)
        self.part = part
        self.new_keys: dict[int, str] = {}
        self.end = START

    def computed(self, items, vectors) -> None:
        super().computed(items, vectors)
        self.new_keys.update((self.part.start + item.index, item.key) for item in items
                             if item.key is not None)

    def finish(self, layout: Layout) -> None:
        self.end = layout

    def result(self, number: int) -> PartResult:
        indices, embeddings = self.arrays()
        return PartResult(number, self.part.layout, self.end, indices + self.part.start,
                          embeddings, [(s.index + self.part.start, s.reason)
                                       for s in self.skips], self.n_cached, self.new_keys)


_tensorflow_configured = False


def _configure_tensorflow(threads: int) -> None:
    """Set TensorFlow's inter-op threads to the worker's thread count, once.

    Intra-op threads stay at TensorFlow's default (the machine's cores), as in
    a single-process run: the last bits of the features depend on it.
    """
    global _tensorflow_configured
    if _tensorflow_configured:
        return
    _tensorflow_configured = True
    from ..models.tfimport import import_tensorflow

    import_tensorflow()
    import tensorflow as tf

    try:
        tf.config.threading.set_inter_op_parallelism_threads(max(1, threads))
    except RuntimeError:
        pass  # TensorFlow already runs in this process (a thread-based worker)


def embed_part(source: Source, config: EmbedConfig, number: int, part: Part,
               shard_dir: str | None, shipment: Shipment | None = None) -> PartResult:
    """Run on a worker: embed one part, starting at its row layout, with the files
    the driver shipped (the worker reads the part's images itself)."""
    config = shipping.install(shipment, config)
    try:
        from distributed import get_worker

        threads = get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        threads = 1
    _configure_tensorflow(threads)
    cache = open_cache(config.cache, read_only=True)
    sink = PartSink(source, config, part)
    try:
        Pipeline(source, config, sink, cache, Hooks(), part).run()
    finally:
        if cache is not None:
            cache.close()
    result = sink.result(number)
    if shard_dir is not None:
        labels = None if source.labels is None \
            else source.labels[result.indices - part.start]
        shards.write_part(shard_dir, result, labels)
        result.embeddings = None
    return result


class Job:
    """Submits parts, checks their row layouts in order, and resubmits wrong guesses."""

    def __init__(self, client, source: Source, config: EmbedConfig, size: int,
                 shard_dir: str | None, found: dict[int, dict[Layout, PartResult]],
                 window: int, cache: EmbeddingCache | None = None, shipment=None):
        self.client, self.source, self.config = client, source, config
        self.cache, self.shipment = cache, shipment  #: the scattered Shipment, if any
        self.bounds = [(s, min(s + size, len(source))) for s in range(0, len(source), size)]
        self.shard_dir = shard_dir
        self.candidates = found
        self.window = window
        self.accepted: list[PartResult] = []
        self.layout: Layout = START  #: the exact layout the first unaccepted part starts at
        self.running: dict[str, tuple[int, Layout]] = {}  #: future key -> part, layout
        self.futures: dict[str, object] = {}
        self.chunks: dict[int, object] = {}  #: scattered data of parts not yet accepted
        self.lost: dict[int, int] = {}
        self.token = uuid.uuid4().hex[:8]

    @property
    def frontier(self) -> int:
        return len(self.accepted)

    def done_items(self) -> int:
        parts = {p for p, layouts in self.candidates.items() if layouts}
        return sum(b - a for k, (a, b) in enumerate(self.bounds)
                   if k < self.frontier or k in parts)

    def _wanted(self) -> list[tuple[int, Layout]]:
        """Parts to compute next, each from its best-guess layout, in order."""
        wanted = []
        layout = self.layout
        for k in range(self.frontier, len(self.bounds)):
            known = self.candidates.get(k, {}).get(layout)
            if known is None:
                wanted.append((k, layout))
                if len(wanted) >= self.window:
                    break
            else:
                layout = known.end
        return wanted

    def _data(self, k: int):
        if k not in self.chunks:
            start, stop = self.bounds[k]
            chunk = self.source.subset(range(start, stop))
            if not isinstance(chunk, FileSource):  # arrays: scattered once, not in the task
                chunk = self._scatter(chunk)
            self.chunks[k] = chunk
        return self.chunks[k]

    def _scatter(self, chunk):
        for attempt in range(MAX_LOST):
            try:
                return self.client.scatter(chunk, hash=False)
            except TimeoutError:  # "No valid workers found"
                break
            except OSError:  # the worker it went to died; the scheduler learns it soon
                time.sleep(0.2 * (attempt + 1))
        try:
            return self.client.scatter(chunk, hash=False, timeout=NO_WORKERS_TIMEOUT_S)
        except TimeoutError:
            raise ClusterError(f"the Dask cluster has no workers to take the data (waited "
                               f"{NO_WORKERS_TIMEOUT_S:g} s); start workers, or run without "
                               f"a cluster") from None

    def schedule(self) -> None:
        """Cancel stale guesses, submit the wanted parts."""
        wanted = self._wanted()
        stale = [key for key, job in self.running.items() if job not in wanted]
        for key in stale:
            self.futures.pop(key).cancel()
            del self.running[key]
        busy = set(self.running.values())
        for k, layout in wanted:
            if (k, layout) not in busy:
                key = f"transferembed-part-{k:05d}-{self.token}-{uuid.uuid4().hex[:6]}"
                part = Part(self.bounds[k][0], layout)
                self.futures[key] = self.client.submit(
                    embed_part, self._data(k), self.config, k, part, self.shard_dir,
                    self.shipment, key=key, pure=False)
                self.running[key] = (k, layout)

    def finished(self) -> list:
        return [f for f in self.futures.values() if f.done()]

    def collect(self, future) -> None:
        k, _ = self.running.pop(future.key)
        del self.futures[future.key]
        if future.status == "finished":
            part = future.result()
            self.candidates.setdefault(k, {})[part.layout] = part
            return
        error = future.exception() if future.status == "error" else None
        if type(error).__name__ == "KilledWorker":
            raise ClusterError(f"part {k} of the job killed its workers again and again "
                               f"(out of memory?): {error}")
        if error is not None and not _is_lost(error):
            raise error
        self.lost[k] = self.lost.get(k, 0) + 1
        if self.lost[k] > MAX_LOST:
            raise ClusterError(f"part {k} of the job was lost with its worker "
                               f"{self.lost[k]} times: {error or 'cancelled'}")
        self.chunks.pop(k, None)  # its data may be lost too: scatter it again

    def accept(self) -> None:
        while self.frontier < len(self.bounds):
            part = self.candidates.get(self.frontier, {}).get(self.layout)
            if part is None:
                return
            if self.shard_dir is not None:
                shards.remove_others(self.shard_dir, part.number, part.layout)
            self.candidates.pop(self.frontier)
            self.chunks.pop(self.frontier, None)
            self._store(part)
            self.accepted.append(part)
            self.layout = part.end

    def _store(self, part: PartResult) -> None:
        """Put an accepted part's computed vectors into the cache."""
        if self.cache is None or not part.new_keys:
            return
        if part.embeddings is None:  # in the shard folder
            indices, embeddings = shards.read_part(self.shard_dir, part)
        else:
            indices, embeddings = part.indices, part.embeddings
        rows = {int(index): row for row, index in enumerate(indices)}
        self.cache.put_many({key: embeddings[rows[index]]
                             for index, key in part.new_keys.items() if index in rows})

    def cancel(self) -> None:
        pending = list(self.futures.values()) + [c for c in self.chunks.values()
                                                  if not isinstance(c, Source)]
        if pending:
            self.client.cancel(pending)
        self.futures.clear()
        self.running.clear()
        self.chunks.clear()


def _is_lost(error: BaseException) -> bool:
    """Whether a part failed because the cluster lost its data (a worker died)."""
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {"CancelledError", "FutureCancelledError"})


class _Watch:
    """Gives up on a cluster that has had no workers for ``timeout`` seconds."""

    def __init__(self, client, timeout: float):
        self.client, self.timeout = client, timeout
        self.checked = self.since = time.monotonic()

    def check(self) -> None:
        now = time.monotonic()
        if now - self.checked < _CHECK_WORKERS_S:
            return
        self.checked = now
        if self.client.nthreads():
            self.since = now
        elif now - self.since > self.timeout:
            raise ClusterError(f"the Dask cluster has had no workers for {self.timeout:g} s; "
                               f"start workers, or run without a cluster")


def drive(job: Job, hooks: Hooks, timeout: float | None = None) -> None:
    """Run ``job`` until every part is accepted, reporting progress as parts finish;
    give up once the cluster has had no workers for ``timeout`` seconds."""
    total = len(job.source)
    watch = _Watch(job.client, NO_WORKERS_TIMEOUT_S if timeout is None else timeout)
    job.accept()
    reported = -1
    while job.frontier < len(job.bounds):
        job.schedule()
        finished = job.finished()
        while not finished:
            hooks.check_cancelled()
            watch.check()
            time.sleep(_POLL_S)
            finished = job.finished()
        for future in finished:
            job.collect(future)
        job.accept()
        done = job.done_items()
        if done != reported:
            reported = done
            hooks.report(min(done, total), total)
    hooks.report(total, total)


def run_distributed(source: Source, config: EmbedConfig, client=None, *,
                    shard_dir: str | None = None, hooks: Hooks | None = None) -> EmbeddingResult:
    """Run the job on a Dask cluster: ``client`` is a ``Client``, a scheduler address,
    or None (the parts then run one after another in this process).

    The result is in input order and bitwise equal to :func:`.engine.run`'s.
    With ``shard_dir`` every part is also written there (see :mod:`.shards`),
    and a re-run computes only the parts that are missing.
    """
    hooks = hooks or Hooks()
    with cluster_client(shards=shard_dir) if client is None else connected(client) as client:
        config, note = choice.resolve(config)
        hooks.tell(note)
        config = choice.prepare(config, hooks)  # converted once, here, not per worker
        shipment = _ship(client, shipping.pack(config, hooks.download))
        threads = sum(client.nthreads().values()) or 1
        size = part_size(len(source), config.batch_size, threads)
        found: dict[int, dict[Layout, PartResult]] = {}
        if shard_dir is not None:
            settings = shards.job_settings(source, config, size)
            found, size = shards.open_shards(shard_dir, settings)
            if not remote.is_url(shard_dir):
                shard_dir = str(Path(shard_dir).resolve())
        cache = open_cache(config.cache, notice=hooks.tell)
        job = Job(client, source, config, size, shard_dir, found, window=max(2, 2 * threads),
                  cache=cache, shipment=shipment)
        try:
            drive(job, hooks)
        finally:
            job.cancel()
            if cache is not None:
                cache.close()
    return _gather(job, source, config, shard_dir, hooks.notices)


def _ship(client, shipment: Shipment):
    """The job's files scattered to every worker once (a future), or None for none."""
    if not shipment.files:
        return None
    return client.scatter(shipment, broadcast=True, hash=False)


def _gather(job: Job, source: Source, config: EmbedConfig, shard_dir: str | None,
            notices: list[str]) -> EmbeddingResult:
    """The accepted parts as one result; from the shard files when there are some."""
    if shard_dir is not None:
        indices, embeddings = shards.gather(shard_dir, job.accepted)
    else:
        filled = [part for part in job.accepted if len(part.indices)]
        indices = np.concatenate([np.empty(0, np.int64)]
                                 + [part.indices for part in filled]).astype(np.int64)
        embeddings = np.concatenate([part.embeddings for part in filled]) if filled \
            else np.empty((0, config.known_feature_size or 0), np.float32)
    skipped = [Skipped(i, source.describe(i), reason)
               for part in job.accepted for i, reason in part.skipped]
    return EmbeddingResult(np.ascontiguousarray(embeddings, np.float32), indices,
                           skipped, source, config,
                           sum(part.n_cached for part in job.accepted), notices=list(notices))

