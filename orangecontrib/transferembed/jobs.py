"""The one door under every face: a job runs in this process or on a Dask cluster."""

from __future__ import annotations

import os

from .config import EmbedConfig, cache_folder
from .pipeline import engine
from .pipeline.engine import Hooks
from .pipeline.results import EmbeddingResult
from .pipeline.sources import Source

#: The folder (under the cache folder) that keeps each backbone's layer names.
LAYERS_FOLDER = "layers"


def check(config: EmbedConfig) -> EmbedConfig:
    """Check the settings that :class:`EmbedConfig` cannot check alone, before any
    conversion, download or image read: the layer (by the backbone's layer names,
    built once with random weights and kept), and the runtime and precision here.
    Raises :class:`~.errors.SettingsError`; returns ``config``. The faces call it
    before they open an input; :func:`run_job` calls it too."""
    from .models.layers import check_layer
    from .runtimes.choice import resolve

    resolve(config)  # the keras runtime's int8, openvino not installed
    if not config.default_layer:
        check_layer(config.backbone, config.alpha, config.layer,
                    config.cache_folder / LAYERS_FOLDER)
    return config


def layers(model: str, alpha: float = 1.0, cache: bool | str | os.PathLike = True):
    """The layers of a backbone that can give features, kept once listed in the folder
    of caches that ``cache`` names (as :attr:`EmbedConfig.cache` does)."""
    from .models.layers import known_layers
    from .models.registry import get_backbone

    return known_layers(get_backbone(model), alpha, cache_folder(cache) / LAYERS_FOLDER)


def run_job(source: Source, config: EmbedConfig, hooks: Hooks | None = None, *,
            client=None, shards: str | os.PathLike | None = None) -> EmbeddingResult:
    """Run a job in this process, or on a Dask cluster when ``client`` (a client or a
    scheduler address) or ``shards`` (a folder of part files) is given."""
    hooks = hooks or Hooks()
    check(config)
    if client is None and shards is None:
        return engine.run(source, config, hooks)
    from .cluster.distributed import run_distributed  # needs the [dask] extra

    return run_distributed(source, config, client,
                           shard_dir=None if shards is None else os.fspath(shards), hooks=hooks)
