"""A backbone's layers, known before any work, so that a misspelt layer is one message.

Listing them needs the model: it is built once with random weights (TensorFlow's
import and a few seconds), and the list is then kept per backbone, width and
Keras version in a small JSON file (never a pickle) in the cache folder given,
and in this process.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import tempfile
import threading
from importlib import metadata
from pathlib import Path

from ..errors import SettingsError
from .builders import Layer
from .registry import Backbone
from .weights import writable_by_others

log = logging.getLogger(__name__)
_known: dict[str, list[Layer]] = {}
_lock = threading.Lock()


def _key(backbone: Backbone, alpha: float) -> str:
    try:
        keras = metadata.version("keras")
    except metadata.PackageNotFoundError:
        keras = "unknown"
    return f"{backbone.name}-alpha{float(alpha):g}-keras{keras}"


def _read(path: Path) -> list[Layer] | None:
    try:
        if writable_by_others(path.parent) or writable_by_others(path):
            return None
        rows = json.loads(path.read_text(encoding="utf-8"))
        return [Layer(str(r["name"]), int(r["features"]), bool(r["spatial"]),
                      bool(r["default"])) for r in rows]
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _write(path: Path, layers: list[Layer]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if writable_by_others(path.parent):
            return
        fd, tmp = tempfile.mkstemp(prefix=".layers-", suffix=".part", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump([dataclasses.asdict(layer) for layer in layers], file)
        os.replace(tmp, path)
    except OSError as exc:
        log.info("cannot keep the layer list in %s: %s", path.parent, exc)


def known_layers(backbone: Backbone, alpha: float = 1.0,
                 folder: Path | None = None) -> list[Layer]:
    """The layers of ``backbone`` that can give features (see :func:`.builders.list_layers`),
    from this process, ``folder``'s JSON file, or built now and kept in both."""
    from .builders import list_layers

    key = _key(backbone, alpha)
    path = None if folder is None else Path(folder) / f"{key}.json"
    kept = path is not None and path.is_file()
    with _lock:
        layers = _known.get(key)
    if layers is None and kept:
        layers = _read(path)
        kept = layers is not None
    if layers is None:
        layers = list_layers(backbone, alpha)
    if path is not None and not kept:
        _write(path, layers)
    with _lock:
        _known[key] = layers
    return layers


def check_layer(backbone: Backbone, alpha: float, layer: str,
                folder: Path | None = None) -> None:
    """Raise one :class:`SettingsError` naming ``layer`` where ``backbone`` has no such
    layer that gives features; ``"default"`` is always there."""
    if layer == "default":
        return
    names = [found.name for found in known_layers(backbone, alpha, folder)]
    if layer in names:
        return
    close = difflib.get_close_matches(layer, names, n=1)
    hint = f"; did you mean {' or '.join(repr(n) for n in close)}?" if close else "."
    if backbone.foundation:
        hint = f"; its layers are {names[0]} to {names[-1]} (transformer blocks){hint}"
    raise SettingsError(
        f"{backbone.name} has no layer {layer!r} that gives features{hint} See "
        f"transferembed --list-layers {backbone.name}"
        + (f" --alpha {float(alpha):g}" if backbone.has_alpha else ""),
        f"{backbone.name} has no layer {layer!r}{hint} Choose one from the Layer list.")
