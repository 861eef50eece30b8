"""Reaching a Dask cluster (the optional ``[dask]`` extra): an address, a local
cluster of worker processes, or one in this process."""

from __future__ import annotations

import logging
from contextlib import contextmanager

from ..errors import SettingsError, TransferEmbedError

INSTALL_HINT = 'pip install "Orange3-TransferEmbed[dask]"'
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
    """A cluster that cannot be used: the extra is missing, it is unreachable, or it
    lost its workers."""


def require_distributed():
    """The ``distributed`` module, or one clear message saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise ClusterError(f"running on a Dask cluster needs the optional 'dask' extra; "
                           f"install it with: {INSTALL_HINT}") from None
    return distributed


@contextmanager
def connected(client):
    """A client: the one given, or one connected to a scheduler address (and closed)."""
    if not isinstance(client, str):
        yield client
        return
    distributed = require_distributed()
    try:
        connection = distributed.Client(client, timeout="20s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {client}: {exc}") from None
    try:
        yield connection
    finally:
        connection.close()


@contextmanager
def local_cluster(workers: int, processes: bool = True):
    """A ``LocalCluster`` of ``workers`` single-thread workers, and its client."""
    distributed = require_distributed()
    import dask

    with dask.config.set(WORKER_CONFIG):
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                           processes=processes, dashboard_address=None,
                                           silence_logs=logging.CRITICAL)
    try:
        with distributed.Client(cluster) as client:
            yield client
    finally:
        cluster.close()


@contextmanager
def cluster_client(scheduler: str | None = None, local_workers: int | None = None,
                   shards: str | None = None):
    """The client that the command line's cluster options ask for, or None for none.

    ``--shards`` alone runs the parts one after another in this process.
    """
    if scheduler and local_workers is not None:
        raise SettingsError("give either --scheduler or --local-cluster, not both")
    if local_workers is not None and local_workers < 1:
        raise SettingsError(f"--local-cluster needs at least 1 worker, got {local_workers}")
    if scheduler:
        with connected(scheduler) as client:
            yield client
    elif local_workers is not None:
        with local_cluster(local_workers) as client:
            yield client
    elif shards:
        with local_cluster(1, processes=False) as client:
            yield client
    else:
        yield None
