"""The public Python API: :func:`embed`, :func:`compare`, :func:`validate` and
:func:`list_layers`."""

from __future__ import annotations

import os

from .config import (
    DEFAULT_LAYER,
    DEFAULT_MAX_IMAGE_BYTES,
    DEFAULT_MEMORY_LIMIT,
    DEFAULT_RESIZE,
    EmbedConfig,
)
from .jobs import check, layers, run_job
from .models.weights import ByteProgress
from .pipeline.engine import Hooks, IsCancelled, Notice, Progress
from .pipeline.results import EmbeddingResult
from .pipeline.sources import as_source


def embed(source, model: str = "MobileNet", *, labels=None,
          shape: tuple[int, int, int] | None = None,
          weights: str | os.PathLike | None = "imagenet", alpha: float = 1.0,
          input_size: int | str | None = None, resize: str = DEFAULT_RESIZE,
          layer: str = DEFAULT_LAYER, pooling: str | None = None, runtime: str = "auto",
          precision: str = "fp32", batch_size: int = 32,
          memory_limit: int = DEFAULT_MEMORY_LIMIT,
          max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES, cache: bool | str | os.PathLike = True,
          progress: Progress | None = None, is_cancelled: IsCancelled | None = None,
          download_progress: ByteProgress | None = None, status: Notice | None = None,
          notice: Notice | None = None, client=None,
          shards: str | os.PathLike | None = None) -> EmbeddingResult:
    """Embed images with a pretrained backbone: an ImageNet CNN or a foundation encoder
    (``"dinov2_small"``, ``"siglip2_base_patch16_224"``...; see doc/foundation.md).

    ``source`` is a folder (one subfolder per class), a ``label,path`` CSV,
    a ``.npy`` file (``labels`` then names the labels file, and ``shape``
    gives ``(height, width, channels)`` of flattened rows), an array of
    images, a list of image paths, or a :class:`~.sources.Source`. Paths may be
    fsspec URLs (``s3://bucket/photos`` as a folder, a CSV of URLs, a list of
    URLs; the ``[cloud]`` extra), which a cluster's workers read themselves.

    ``weights`` is ``"imagenet"`` (the published weights: Keras' cache under
    ``$KERAS_HOME/models``, or a foundation encoder's keras-hub preset under
    ``$KERAS_HOME/presets``; downloaded if missing), ``None`` for random weights,
    a weights file, or a keras-hub preset folder.
    ``input_size`` is None for the backbone's own size, a number, or
    ``"native"`` for each image's own size (pooled backbones only).
    ``resize`` is ``"crop"`` (the centre box of the input's shape, then
    resized; the default) or ``"stretch"`` (the whole image, as the original tool).
    ``layer`` is a Keras layer name (:func:`list_layers`) or ``"default"``, and a
    spatial layer or a transformer's tokens are pooled by ``pooling`` (``"avg"``,
    ``"max"``, or ``"cls"``, the class token; None: the backbone's own).
    ``runtime`` is ``"auto"``, ``"keras"``, ``"tflite"`` or ``"openvino"``;
    ``precision`` ``"fp32"`` (exact) or ``"int8"`` (faster, approximate).
    ``memory_limit`` bounds the bytes of decoded pixels in flight, and an image
    file of more than ``max_image_bytes`` is skipped unread.

    ``progress(done, total)`` is called as batches finish, and the run stops
    with :class:`~.errors.EmbeddingCancelled` once ``is_cancelled()`` is true.
    ``status(text)`` hears of slow stages (a first conversion), ``notice(text)``
    of what the user should know (also in ``result.notices``). With ``client``
    (a ``dask.distributed`` client or a scheduler address) the job runs on that
    cluster, and with ``shards`` it keeps its parts in that folder.

    Items that cannot be read are skipped and listed with their reasons in
    ``result.skipped``; ``result.embeddings`` is float32 ``(n, K)``.
    """
    config = EmbedConfig(model=model, weights=weights, alpha=alpha, input_size=input_size,
                         resize=resize, layer=layer, pooling=pooling, runtime=runtime,
                         precision=precision, batch_size=batch_size,
                         memory_limit=memory_limit, max_image_bytes=max_image_bytes,
                         cache=cache if cache is not None else False)
    check(config)  # before the input is opened
    hooks = Hooks(progress, is_cancelled, download_progress, status, notice)
    return run_job(as_source(source, labels, shape, is_cancelled), config, hooks,
                   client=client, shards=shards)


def validate(model: str = "MobileNet", **settings) -> EmbedConfig:
    """Check every setting of :func:`embed` (``weights``, ``alpha``, ``layer``, ...) before
    any work, and return them as an :class:`EmbedConfig`; a bad one raises a
    :class:`~.errors.TransferEmbedError` with one message. Checking a layer name
    builds the backbone once with random weights (seconds; then it is remembered)."""
    return check(EmbedConfig(model=model, **settings))


def list_layers(model: str, alpha: float = 1.0, cache: bool | str | os.PathLike = True):
    """The layers of a backbone that can give features (imports TensorFlow the first
    time; the list is then kept in the cache folder, ``cache`` as :func:`embed` takes it)."""
    return layers(model, alpha, cache)


def compare(source, candidates, *, labels=None, shape: tuple[int, int, int] | None = None,
            folds: int = 5, progress: Progress | None = None,
            is_cancelled: IsCancelled | None = None, client=None, estimator=None,
            **settings):
    """Embed ``source`` with each candidate and score it by cross-validation.

    ``estimator`` is the scikit-learn classifier that scores each representation
    (a clone per fold; it may have a ``name``); None is a standardised logistic
    regression. Each score's ``scorer`` names it.

    ``candidates`` is a list (or comma-separated text) of ``"BACKBONE"`` or
    ``"BACKBONE:LAYER"``; ``settings`` are :func:`embed`'s (weights, alpha,
    input_size, runtime, ...), shared by every candidate. Returns
    :class:`~.comparison.Score` objects, best first: ``ca``, ``auc``, ``f1``,
    ``ca_folds``, ``features``, ``seconds`` (``cached`` where the cache served every
    image), ``error`` (why a candidate has no scores), ``scorer`` and ``result`` (its
    :class:`EmbeddingResult`).
    """
    from . import comparison as comparing

    if isinstance(candidates, str):
        candidates = comparing.parse_candidates(candidates)
    candidates = [c if isinstance(c, comparing.Candidate) else comparing.Candidate.parse(c)
                  for c in candidates]
    comparing.check_candidates(candidates, settings)  # before the input is opened
    hooks = Hooks(progress, is_cancelled)
    scores = comparing.compare(as_source(source, labels, shape, is_cancelled), candidates,
                               settings, folds, hooks, client, estimator)
    return comparing.ranked(scores)
