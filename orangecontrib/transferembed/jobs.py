"""The one door under every face: a job runs in this process or on a Dask cluster."""

from __future__ import annotations

import os

from .config import EmbedConfig
from .pipeline import engine
from .pipeline.engine import Hooks
from .pipeline.results import EmbeddingResult
from .pipeline.sources import Source


def run_job(source: Source, config: EmbedConfig, hooks: Hooks | None = None, *,
            client=None, shards: str | os.PathLike | None = None) -> EmbeddingResult:
    """Run a job in this process, or on a Dask cluster when ``client`` (a client or a
    scheduler address) or ``shards`` (a folder of part files) is given."""
    hooks = hooks or Hooks()
    if client is None and shards is None:
        return engine.run(source, config, hooks)
    from .cluster.distributed import run_distributed  # needs the [dask] extra

    return run_distributed(source, config, client,
                           shard_dir=None if shards is None else os.fspath(shards), hooks=hooks)
