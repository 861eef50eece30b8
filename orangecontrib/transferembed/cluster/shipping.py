"""What a cluster's workers need from the driver, shipped with the job.

Workers share nothing with the driver but the scheduler: no home folder, no
Keras cache, no converted models. So the driver packs the weights file it
resolved (ImageNet weights from its Keras cache, or the user's file) and, for
a converted runtime, the converted model, each with its sha256, into one
:class:`Shipment` that is scattered to every worker once. A worker checks each
file's sha256 and keeps it in its own folders, once per process:

- ImageNet weights in its own Keras cache (``$KERAS_HOME/models``), where
  Keras and :func:`~..models.weights.resolve_weights` look; a different file
  already there is left alone and the driver's copy is used from the worker's
  cache folder instead;
- a user's weights file in the worker's cache folder, under its hash (the
  job's weights identity is that hash, so cache keys stay the driver's);
- a keras-hub preset folder's files likewise, in a folder named by the hash of
  them all (the identity of a preset folder);
- a converted model in the worker's own store of converted models.

The worker then runs exactly the driver's model, bit for bit.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..config import EmbedConfig
from ..models.weights import (
    file_digest,
    folder_digest,
    keras_models_dir,
    preset_files,
    resolve_weights,
)
from ..runtimes import store
from ..runtimes.base import converted_key

#: The worker's folder of shipped files, under its cache folder.
FOLDER = "shipped"


class ShipmentError(Exception):
    """A shipped file that arrived damaged."""


@dataclass(frozen=True)
class ShippedFile:
    kind: str  #: "imagenet", "weights" (a user's file), "preset" or "converted"
    name: str  #: the file name (ImageNet: Keras' name; preset: folder/file; converted: key)
    sha256: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class Shipment:
    """The files of one job, as plain data."""

    files: tuple[ShippedFile, ...] = ()

    @property
    def nbytes(self) -> int:
        return sum(len(f.data) for f in self.files)


def _packed(kind: str, name: str, path: Path) -> ShippedFile:
    data = path.read_bytes()
    return ShippedFile(kind, name, hashlib.sha256(data).hexdigest(), data)


def pack(config: EmbedConfig, download=None) -> Shipment:
    """The files that ``config`` (resolved and prepared) needs, from this machine."""
    files = []
    weights = resolve_weights(config.backbone, config.weights, config.alpha, download)
    if weights is not None and Path(weights).is_dir():  # a keras-hub preset
        folder = Path(weights)
        digest = folder_digest(folder)
        files += [_packed("preset", f"{digest}/{path.name}", path)
                  for path in preset_files(folder)]
    elif weights is not None:
        kind = "imagenet" if config.weights == "imagenet" else "weights"
        files.append(_packed(kind, Path(weights).name, Path(weights)))
    if config.runtime != "keras":
        converted = store.load(converted_key(config), store.store_folder(config))
        if converted is not None:
            files.append(_packed("converted", converted_key(config), converted))
    return Shipment(tuple(files))


_lock = threading.Lock()
_installed: dict[tuple[str, str], str | None] = {}  #: (kind, sha256) -> weights path


def install(shipment: Shipment | None, config: EmbedConfig) -> EmbedConfig:
    """Put the shipped files where this worker's run finds them (once per process);
    ``config`` as this worker runs it (a user's weights file at its local path)."""
    if shipment is None:
        return config
    with _lock:
        for shipped in shipment.files:
            key = (shipped.kind, shipped.sha256)
            if key not in _installed:
                _installed[key] = _install(shipped, config)
            if _installed[key] is not None:
                config = config.with_(weights=_installed[key])
    return config


def _install(shipped: ShippedFile, config: EmbedConfig) -> str | None:
    if hashlib.sha256(shipped.data).hexdigest() != shipped.sha256:
        raise ShipmentError(f"the shipped {shipped.kind} file {shipped.name} arrived damaged")
    if shipped.kind == "converted":
        folder = store.store_folder(config)
        if store.load(shipped.name, folder) is None:
            store.save(shipped.name, shipped.data, folder)
        return None
    if shipped.kind == "imagenet":
        target = keras_models_dir() / shipped.name
        if not target.exists():
            _write(target, shipped.data)
        if file_digest(target, "sha256") == shipped.sha256:
            return None  # found by resolve_weights, under the job's own identity
    if shipped.kind == "preset":  # every file of the folder lands in one folder
        target = config.cache_folder / FOLDER / shipped.name
        if not target.is_file() or file_digest(target, "sha256") != shipped.sha256:
            _write(target, shipped.data)
        return str(target.parent)
    target = config.cache_folder / FOLDER / shipped.sha256 / shipped.name
    if not target.is_file() or file_digest(target, "sha256") != shipped.sha256:
        _write(target, shipped.data)
    return str(target)


def _write(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all, in folders only this user can write."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
