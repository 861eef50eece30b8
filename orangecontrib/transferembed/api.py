"""The public Python API: :func:`embed`."""

from __future__ import annotations

import os

from . import engine
from .engine import EmbedConfig, EmbeddingResult, IsCancelled, Progress
from .images import DEFAULT_RESIZE
from .sources import as_source
from .weights import ByteProgress


def embed(source, model: str = "MobileNet", *, labels=None,
          shape: tuple[int, int, int] | None = None,
          weights: str | os.PathLike | None = "imagenet", alpha: float = 1.0,
          input_size: int | str | None = None, resize: str = DEFAULT_RESIZE,
          batch_size: int = 32, cache: bool | str | os.PathLike = True,
          progress: Progress | None = None, is_cancelled: IsCancelled | None = None,
          download_progress: ByteProgress | None = None,
          client=None) -> EmbeddingResult:
    """Embed images with an ImageNet-pretrained backbone.

    ``source`` is a folder (one subfolder per class), a ``label,path`` CSV,
    a ``.npy`` file (``labels`` then names the labels file, and ``shape``
    gives ``(height, width, channels)`` of flattened rows), an array of
    images, a list of image paths, or a :class:`~.sources.Source`.

    ``weights`` is ``"imagenet"`` (Keras' cache under ``$KERAS_HOME/models``,
    downloaded if missing), ``None`` for random weights, or a weights file.
    ``input_size`` is None for the backbone's own size, a number, or
    ``"native"`` for each image's own size (pooled backbones only).
    ``resize`` is ``"crop"`` (the centre box of the input's shape, then
    resized; the default) or ``"stretch"`` (the whole image, as the original tool).

    ``progress(done, total)`` is called as batches finish, and the run stops
    with :class:`~.errors.EmbeddingCancelled` between batches once
    ``is_cancelled()`` is true. With ``client`` (a ``dask.distributed``
    client or a scheduler address) the job runs on that cluster.

    Items that cannot be read are skipped and listed with their reasons in
    ``result.skipped``; ``result.embeddings`` is float32 ``(n, K)``.
    """
    config = EmbedConfig(model=model, weights=weights, alpha=alpha, input_size=input_size,
                         resize=resize, batch_size=batch_size,
                         cache=bool(cache) if cache is None or isinstance(cache, bool)
                         else os.fspath(cache))
    src = as_source(source, labels, shape)
    if client is not None:
        from .distributed import run_distributed

        return run_distributed(src, config, client, progress=progress,
                               is_cancelled=is_cancelled)
    return engine.run(src, config, progress=progress, is_cancelled=is_cancelled,
                      download_progress=download_progress)
