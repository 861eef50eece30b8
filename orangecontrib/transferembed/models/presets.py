"""keras-hub preset folders: finding them offline, checking them, downloading them.

A foundation encoder's published weights are a keras-hub preset: a folder
holding ``config.json``, ``model.weights.h5`` and the image converter's
``image_converter.json``. Its home is ``$KERAS_HOME/presets/<preset>/``
(``~/.keras/presets/`` by default), beside Keras' own weights cache; a copy
that kagglehub already downloaded is used where it is. Finding a folder makes
no network call. Without one, the download is tried only where Kaggle answers
within seconds (kagglehub itself would retry for minutes); otherwise the error
says where to get the preset and where to put it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path

from ..errors import WeightsUnavailableError
from .registry import Backbone
from .weights import check_private, file_digest, keras_home

#: The one line that adds keras-hub (see doc/foundation.md, "The dependency").
INSTALL_HINT = 'pip install "Orange3-TransferEmbed[foundation]"'
KAGGLE_HOST = "www.kaggle.com"
CONNECT_TIMEOUT_S = 4
#: What keras-hub's ``from_preset`` needs in a folder.
REQUIRED = ("config.json", "model.weights.h5")
#: The backbone class keras-hub writes in ``config.json``, by architecture kind.
CLASSES = {"dinov2": "DINOV2Backbone", "siglip": "SigLIPBackbone", "clip": "CLIPBackbone"}


def require_keras_hub(backbone: Backbone) -> None:
    """Refuse a foundation encoder where keras-hub is not installed, saying the one line
    that adds it (found without importing it)."""
    if importlib.util.find_spec("keras_hub") is None:
        raise WeightsUnavailableError(
            f"{backbone.name} is a keras-hub encoder, and keras-hub is not installed; "
            f"add it with: {INSTALL_HINT}")


def presets_dir() -> Path:
    """Where downloaded presets live: ``$KERAS_HOME/presets``."""
    return keras_home() / "presets"


def preset_folder(backbone: Backbone) -> Path:
    """The folder the preset of ``backbone`` belongs in."""
    return presets_dir() / backbone.weights_filename()


def _kagglehub_copy(backbone: Backbone) -> Path:
    """Where kagglehub keeps the preset once it has downloaded it."""
    cache = os.environ.get("KAGGLEHUB_CACHE") or Path.home() / ".cache" / "kagglehub"
    return Path(cache) / "models" / backbone.architecture.kaggle_handle


def find_preset(backbone: Backbone) -> Path | None:
    """The preset folder of ``backbone`` on this machine, if there is one."""
    for folder in (preset_folder(backbone), _kagglehub_copy(backbone)):
        if all((folder / name).is_file() for name in REQUIRED):
            return folder
    return None


def check_preset(backbone: Backbone, folder: Path) -> None:
    """Refuse a folder that is not a preset of ``backbone``'s kind, or that others can
    write."""
    missing = [name for name in REQUIRED if not (folder / name).is_file()]
    if missing:
        raise WeightsUnavailableError(
            f"{folder} is not a keras-hub preset folder: it has no {' or '.join(missing)}.",
            f"{folder} is not a keras-hub preset folder (no {' or '.join(missing)}).")
    for name in REQUIRED:
        check_private(folder / name)
    try:
        found = json.loads((folder / "config.json").read_text(encoding="utf-8"))["class_name"]
    except (OSError, ValueError, KeyError, TypeError):
        found = "an unreadable config.json"
    expected = CLASSES[backbone.architecture.kind]
    if found != expected:
        raise WeightsUnavailableError(
            f"{folder} holds a {found} preset; {backbone.name} needs a {expected} preset.")


def resolve_preset(backbone: Backbone, weights: str) -> str:
    """The preset folder to load for ``weights`` ("imagenet": the published preset)."""
    if weights != "imagenet":
        folder = Path(weights)
        if folder.is_file():
            raise WeightsUnavailableError(
                f"{backbone.name} loads a keras-hub preset folder, not the file {folder}.",
                f"{backbone.name} loads a keras-hub preset folder: choose the folder's "
                f"config.json.")
        check_preset(backbone, folder)
        return str(folder)
    folder = find_preset(backbone) or download_preset(backbone)
    check_preset(backbone, folder)
    return str(folder)


def offline_message(backbone: Backbone, reason: str) -> WeightsUnavailableError:
    """Where to get a preset and where to put it, for the command line and the GUI."""
    arch, folder = backbone.architecture, preset_folder(backbone)
    head = (f"The weights of {backbone.name} (a keras-hub preset, about "
            f"{backbone.download_mb:g} MB) are not on this machine, and cannot be "
            f"downloaded ({reason}).\nDownload the preset from Kaggle:\n  "
            f"{backbone.weights_url()}\n(Kaggle handle {arch.kaggle_handle}; keras-hub lists "
            f"no Hugging Face mirror for it), e.g. on a machine with internet access:\n  "
            f"python -c \"import kagglehub; print(kagglehub.model_download("
            f"'{arch.kaggle_handle}'))\"\nand put its files (config.json, model.weights.h5, "
            f"image_converter.json...) in the folder\n  {folder}{os.sep}\n(that is "
            f"$KERAS_HOME/presets/{backbone.name}/); the same command then works offline. ")
    return WeightsUnavailableError(
        head + "Or pass a preset folder with -weights FOLDER, or use -weights None for "
               "random weights.",
        head.replace("the same command", "the same settings")
        + "Or choose the folder's config.json under Weights › File…, or use Weights › None "
          "(random).")


def _reachable(host: str, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """None where ``host`` answers on port 443 within ``timeout`` seconds, else why not.

    The name lookup runs in a thread of its own: it has no timeout of its own.
    """
    outcome: dict[str, str | None] = {"reason": "no answer within "
                                                f"{timeout:g} s from {host}"}

    def connect():
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            outcome["reason"] = None
        except OSError as exc:
            outcome["reason"] = f"no connection to {host}: {exc.strerror or exc}"

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome["reason"]


def download_preset(backbone: Backbone) -> Path:
    """Download the preset with kagglehub into :func:`preset_folder`; its path."""
    reason = _reachable(KAGGLE_HOST)
    if reason is not None:
        raise offline_message(backbone, reason)
    target = preset_folder(backbone)
    try:
        import kagglehub

        source = Path(kagglehub.model_download(backbone.architecture.kaggle_handle))
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{backbone.name}-", dir=target.parent))
        for item in source.iterdir():
            if item.is_file():
                shutil.copy2(item, staging / item.name)
        os.replace(staging, target)
    except Exception as exc:  # noqa: BLE001 - kagglehub raises many kinds
        raise offline_message(backbone, f"the download failed: {exc}") from None
    return target


def default_input_size(backbone: Backbone, weights: str | None) -> int:
    """The input size of a preset folder's image converter, else the registry's."""
    if not backbone.foundation or weights in (None, "imagenet"):
        return backbone.input_size
    try:
        config = json.loads((Path(weights) / "image_converter.json").read_text("utf-8"))
        return int(config["config"]["image_size"][0])
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return backbone.input_size


def folder_digest(folder: Path) -> str:
    """A hash of a preset folder's files (their names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix in (".json", ".h5"):
            digest.update(f"{path.name}:{file_digest(path, 'sha256')}\n".encode())
    return digest.hexdigest()
