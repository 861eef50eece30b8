"""Running an embedding job on a Dask cluster (the optional ``[dask]`` extra).

The source is cut into parts of whole batches, a few hundred items each. A
worker runs :func:`engine.run` on a part, with the backbone it built for the
first part (the per-process extractor cache). Array data is scattered to the
cluster once per part; file parts carry only their paths.

An image's features depend, in their last bits, on its row in the batch. So
that the result is bitwise equal to a single process, every part starts at the
batch row where the single-process run would put its first image: the
``tail`` of the part before. Parts run in parallel on a guess (the state the
known parts lead to; nothing changes when no image is skipped or cached); a
part whose guess proves wrong runs again. For the same reason workers only
read the embedding cache; a part's vectors are stored once it is accepted.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import engine, shards
from .cache import EmbeddingCache, open_cache
from .engine import EmbedConfig, EmbeddingResult, Skipped
from .errors import EmbeddingCancelled, SettingsError, TransferEmbedError
from .shards import START, PartResult, State
from .sources import FileSource, Source

INSTALL_HINT = 'pip install "Orange3-TransferEmbed[dask]"'
#: Largest part, in items; parts are whole batches.
MAX_PART = 512
#: Parts per worker thread that a job aims at, for an even load.
PARTS_PER_THREAD = 8
#: How often a part may be lost with its worker before the job fails.
MAX_LOST = 5
_POLL_S = 0.02
#: Dask's defaults for worker processes that slow TensorFlow down: a low
#: ``MALLOC_TRIM_THRESHOLD_`` (half again the CPU per image) and one-thread
#: math libraries; and the worker's sampling profiler. A single process has none.
WORKER_CONFIG = {
    **{f"distributed.nanny.pre-spawn-environ.{name}": None
       for name in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                    "OPENBLAS_NUM_THREADS")},
    "distributed.worker.profile.enabled": False,
}


class ClusterError(TransferEmbedError):
    """A cluster that cannot be used: the extra is missing, or it is unreachable."""


def require_distributed():
    """The ``distributed`` module, or one clear message saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise ClusterError(f"running on a Dask cluster needs the optional 'dask' extra; "
                           f"install it with: {INSTALL_HINT}") from None
    return distributed


def part_size(total: int, batch_size: int, threads: int) -> int:
    """Items per part: whole batches, enough parts for every thread, at most ~MAX_PART."""
    batches = math.ceil(total / (batch_size * max(1, threads) * PARTS_PER_THREAD))
    return batch_size * max(1, min(batches, MAX_PART // batch_size))


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
    from .extractor import import_tensorflow

    import_tensorflow()
    import tensorflow as tf

    try:
        tf.config.threading.set_inter_op_parallelism_threads(max(1, threads))
    except RuntimeError:
        pass  # TensorFlow already runs in this process (a thread-based worker)


def embed_part(source: Source, config: EmbedConfig, number: int, start: int, state: State,
               shard_dir: str | None) -> PartResult:
    """Run on a worker: embed one part, starting at batch state ``state``."""
    try:
        from distributed import get_worker

        threads = get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        threads = 1
    _configure_tensorflow(threads)
    # The cache is only read here: a part that runs on a wrong guess, or whose worker
    # dies, must not leave vectors that its own re-run would then read.
    result = engine.run(source, config, offset=state[0], offset_shape=state[1], store=False)
    part = PartResult(number, state, result.tail, result.indices + start, result.embeddings,
                      [(item.index + start, item.reason) for item in result.skipped],
                      result.n_cached,
                      {index + start: key for index, key in result.new_keys.items()})
    if shard_dir is not None:
        shards.write_part(shard_dir, part, result.labels)
        part.embeddings = None
    return part


class _Job:
    """Submits parts, checks their batch states in order, and resubmits the wrong guesses."""

    def __init__(self, client, source: Source, config: EmbedConfig, size: int,
                 shard_dir: str | None, found: dict[int, dict[State, PartResult]],
                 window: int, cache: EmbeddingCache | None = None):
        self.client, self.source, self.config = client, source, config
        self.cache = cache
        self.bounds = [(s, min(s + size, len(source))) for s in range(0, len(source), size)]
        self.shard_dir = shard_dir
        self.candidates = found
        self.window = window
        self.accepted: list[PartResult] = []
        self.state: State = START  #: the exact start state of the first unaccepted part
        self.running: dict[str, tuple[int, State]] = {}  #: future key -> part, state
        self.futures: dict[str, object] = {}
        self.chunks: dict[int, object] = {}  #: scattered data of parts not yet accepted
        self.lost: dict[int, int] = {}
        self.token = uuid.uuid4().hex[:8]

    @property
    def frontier(self) -> int:
        return len(self.accepted)

    def done_items(self) -> int:
        parts = {p for p, states in self.candidates.items() if states}
        return sum(b - a for k, (a, b) in enumerate(self.bounds)
                   if k < self.frontier or k in parts)

    def _wanted(self) -> list[tuple[int, State]]:
        """Parts to compute next, each from its best-guess state, in order."""
        wanted = []
        state = self.state
        for k in range(self.frontier, len(self.bounds)):
            known = self.candidates.get(k, {}).get(state)
            if known is None:
                wanted.append((k, state))
                if len(wanted) >= self.window:
                    break
            else:
                state = known.tail
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
            except OSError:  # the worker it went to died; the scheduler learns it soon
                time.sleep(0.2 * (attempt + 1))
        return self.client.scatter(chunk, hash=False)

    def schedule(self) -> None:
        """Cancel stale guesses, submit the wanted parts."""
        wanted = self._wanted()
        stale = [key for key, job in self.running.items() if job not in wanted]
        for key in stale:
            self.futures.pop(key).cancel()
            del self.running[key]
        busy = set(self.running.values())
        for k, state in wanted:
            if (k, state) not in busy:
                key = f"transferembed-part-{k:05d}-{self.token}-{uuid.uuid4().hex[:6]}"
                self.futures[key] = self.client.submit(
                    embed_part, self._data(k), self.config, k, self.bounds[k][0], state,
                    self.shard_dir, key=key, pure=False)
                self.running[key] = (k, state)

    def finished(self) -> list:
        return [f for key, f in self.futures.items() if f.done()]

    def collect(self, future) -> None:
        k, _ = self.running.pop(future.key)
        del self.futures[future.key]
        if future.status == "finished":
            part = future.result()
            self.candidates.setdefault(k, {})[part.state] = part
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
            part = self.candidates.get(self.frontier, {}).get(self.state)
            if part is None:
                return
            if self.shard_dir is not None:
                shards.remove_others(self.shard_dir, part.number, part.state)
            self.candidates.pop(self.frontier)
            self.chunks.pop(self.frontier, None)
            self._store(part)
            self.accepted.append(part)
            self.state = part.tail

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


def run_distributed(source: Source, config: EmbedConfig, client, *,
                    progress: Callable[[int, int], None] | None = None,
                    is_cancelled: Callable[[], bool] | None = None,
                    shard_dir: str | None = None) -> EmbeddingResult:
    """Run the job on a Dask cluster: ``client`` is a ``Client`` or a scheduler address.

    The result is in input order and bitwise equal to :func:`engine.run`'s.
    With ``shard_dir`` every part is also written there (see :mod:`.shards`),
    and a re-run computes only the parts that are missing.
    """
    with _connected(client) as client:
        threads = sum(client.nthreads().values()) or 1
        size = part_size(len(source), config.batch_size, threads)
        found: dict[int, dict[State, PartResult]] = {}
        if shard_dir is not None:
            settings = shards.job_settings(source, config, size)
            found, size = shards.open_shards(shard_dir, settings)
            shard_dir = str(Path(shard_dir).resolve())
        cache = open_cache(config.cache)
        job = _Job(client, source, config, size, shard_dir, found, window=max(2, 2 * threads),
                   cache=cache)
        try:
            _drive(job, progress, is_cancelled)
        finally:
            job.cancel()
            if cache is not None:
                cache.close()
    return _gather(job, source, config, shard_dir)


def _drive(job: _Job, progress, is_cancelled) -> None:
    total = len(job.source)
    job.accept()
    reported = -1
    while job.frontier < len(job.bounds):
        job.schedule()
        finished = job.finished()
        while not finished:
            if is_cancelled is not None and is_cancelled():
                raise EmbeddingCancelled()
            time.sleep(_POLL_S)
            finished = job.finished()
        for future in finished:
            job.collect(future)
        job.accept()
        done = job.done_items()
        if progress is not None and done != reported:
            reported = done
            progress(min(done, total), total)
    if progress is not None:
        progress(total, total)


def _gather(job: _Job, source: Source, config: EmbedConfig,
            shard_dir: str | None) -> EmbeddingResult:
    """The accepted parts as one result; from the shard files when there are some."""
    size = config.feature_size
    if shard_dir is not None:
        indices, embeddings = shards.gather(shard_dir, job.accepted, size)
    elif job.accepted:
        indices = np.concatenate([part.indices for part in job.accepted]).astype(np.int64)
        embeddings = np.concatenate([part.embeddings for part in job.accepted])
    else:
        indices, embeddings = np.empty(0, np.int64), np.empty((0, size), np.float32)
    skipped = [Skipped(i, source.describe(i), reason)
               for part in job.accepted for i, reason in part.skipped]
    return EmbeddingResult(np.ascontiguousarray(embeddings, np.float32), indices,
                           skipped, source, config,
                           sum(part.n_cached for part in job.accepted))


@contextmanager
def _connected(client):
    """A client: the one given, or one connected to a scheduler address (and closed)."""
    if not isinstance(client, str):
        yield client
        return
    distributed = require_distributed()
    try:
        connected = distributed.Client(client, timeout="20s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {client}: {exc}") from None
    try:
        yield connected
    finally:
        connected.close()


@contextmanager
def start_local_cluster(workers: int):
    """A ``LocalCluster`` of ``workers`` single-thread worker processes, and its client."""
    distributed = require_distributed()
    import dask

    with dask.config.set(WORKER_CONFIG):
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                           processes=True, dashboard_address=None,
                                           silence_logs=logging.CRITICAL)
    try:
        with distributed.Client(cluster) as client:
            yield client
    finally:
        cluster.close()


def run_cli_job(source: Source, config: EmbedConfig, *, scheduler: str | None = None,
                local_cluster: int | None = None, shards: str | None = None,
                progress: Callable[[int, int], None] | None = None,
                is_cancelled: Callable[[], bool] | None = None) -> EmbeddingResult:
    """The command line's cluster options: ``--scheduler``, ``--local-cluster``, ``--shards``.

    With only ``--shards``, the parts run one after another in this process.
    """
    require_distributed()
    if scheduler and local_cluster is not None:
        raise SettingsError("give either --scheduler or --local-cluster, not both")
    if local_cluster is not None and local_cluster < 1:
        raise SettingsError(f"--local-cluster needs at least 1 worker, got {local_cluster}")
    if scheduler:
        cluster = _connected(scheduler)
    elif local_cluster is not None:
        cluster = start_local_cluster(local_cluster)
    else:
        cluster = _in_process()
    with cluster as client:
        return run_distributed(source, config, client, progress=progress,
                               is_cancelled=is_cancelled, shard_dir=shards)


@contextmanager
def _in_process():
    import distributed

    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None,
                                  silence_logs=logging.CRITICAL) as cluster:
        with distributed.Client(cluster) as client:
            yield client
