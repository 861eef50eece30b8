"""Converted models on disk, in the job's cache folder, keyed like the embedding cache.

A model is ``<digest>.tflite`` with ``<digest>.json`` beside it, holding its
key, size and sha256: a file that does not match is damaged and is converted
again. Both are written under temporary names and renamed, the JSON last, so a
process killed while writing leaves either the old pair or a model that fails
its check; a model that another process stored meanwhile is kept, not written
again. Temporary files that a killed process left are removed after a day. A
backbone that failed to convert leaves ``<digest>.failed`` with the reason,
so that later runs go straight to Keras. A folder that other users can write
is never read (a converted model is as trusted as weights).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from ..config import EmbedConfig
from ..models.weights import writable_by_others

log = logging.getLogger(__name__)
FOLDER = "converted"
#: Age after which a temporary file is taken as left by a killed process.
STALE_PART_S = 24 * 3600


def store_folder(config: EmbedConfig) -> Path:
    """The folder of ``config``'s converted models: ``converted/`` in its cache folder."""
    return config.cache_folder / FOLDER


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:40]


def _usable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        return not writable_by_others(folder)
    except OSError:
        return False


def _write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(key: str, folder: Path) -> Path | None:
    """The stored model for ``key``, or None (missing, damaged or not ours)."""
    stem = folder / _digest(key)
    model, meta = stem.with_suffix(".tflite"), stem.with_suffix(".json")
    if not _usable(folder) or not meta.is_file() or not model.is_file():
        return None
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
        data = model.read_bytes()
    except (OSError, ValueError):
        return None
    if info.get("key") != key or hashlib.sha256(data).hexdigest() != info.get("sha256"):
        log.warning("converted model %s is damaged; converting it again", model)
        return None
    return model


def save(key: str, data: bytes, folder: Path) -> Path | None:
    """Store a converted model; its path, or None where the folder cannot be used."""
    if not _usable(folder):
        return None
    stored = load(key, folder)
    if stored is not None:  # another process converted it meanwhile
        return stored
    _remove_stale_parts(folder)
    stem = folder / _digest(key)
    info = {"key": key, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    try:
        _write(stem.with_suffix(".tflite"), data)
        _write(stem.with_suffix(".json"), json.dumps(info, indent=1).encode())
    except OSError as exc:
        log.warning("cannot store the converted model in %s: %s", folder, exc)
        return None
    return stem.with_suffix(".tflite")


def _remove_stale_parts(folder: Path) -> None:
    now = time.time()
    for part in folder.glob(".*.part"):
        try:
            if now - part.stat().st_mtime > STALE_PART_S:
                part.unlink()
        except OSError:
            pass


def failure(key: str, folder: Path) -> str | None:
    """Why the model of ``key`` did not convert before, or None."""
    path = folder / (_digest(key) + ".failed")
    try:
        return path.read_text(encoding="utf-8") or "it did not convert"
    except OSError:
        return None


def mark_failed(key: str, reason: str, folder: Path) -> None:
    if _usable(folder):
        try:
            _write(folder / (_digest(key) + ".failed"), reason.encode())
        except OSError:
            pass
