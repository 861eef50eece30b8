"""Finding, downloading, verifying and identifying backbone weights.

``"imagenet"`` weights live where Keras itself caches them,
``$KERAS_HOME/models/<file>`` (``~/.keras/models`` by default, and
``/tmp/.keras/models`` only where the home folder cannot be written, as
Keras decides), so a file a user or Keras already downloaded is reused and
one we download is reused by Keras. MobileNet's ImageNet weights at width
0.25 come with the package (:data:`BUNDLED_DIR`, Apache-2.0, their licence and
sha256 beside them), so that a first run works offline; a user's own copy in
Keras' cache is preferred. Weights are never loaded from a folder,
or a file, that other users can write; and a file is checked against the hash
Keras publishes for it, where Keras has one. The download is ours so that it
reports progress in bytes and fails with a message that says what to do.

The foundation encoders' weights are keras-hub preset folders, under
``$KERAS_HOME/presets/<preset>`` (the last section).
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import json
import os
import shutil
import socket
import stat
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from ..errors import WeightsUnavailableError
from .registry import Backbone

#: ``progress(done_bytes, total_bytes)``; total is 0 when unknown.
ByteProgress = Callable[[int, int], None]
DOWNLOAD_TIMEOUT_S = 30
_CHUNK = 1 << 20
#: The weights that ship inside the package, their licence and sha256 beside them.
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
#: The backbone and width whose ImageNet weights are in :data:`BUNDLED_DIR`.
BUNDLED = ("MobileNet", 0.25)
BUNDLED_HINT_CLI = "-tm MobileNet --alpha 0.25"
#: Random weights are seeded, so that ``weights=None`` runs are reproducible.
RANDOM_SEED = 0
_digests: dict[tuple[str, str, int, int], str] = {}  #: (algorithm, path, size, mtime) -> hex
_digest_lock = threading.Lock()


def keras_home() -> Path:
    """Keras' home folder, as Keras 3 itself chooses it."""
    if "KERAS_HOME" in os.environ:
        return Path(os.environ["KERAS_HOME"]).expanduser()
    base = Path.home()
    if not os.access(base, os.W_OK):
        base = Path(tempfile.gettempdir())
    return base / ".keras"


def keras_models_dir() -> Path:
    """The folder where Keras caches downloaded weights."""
    return keras_home() / "models"


def normalize_weights(weights: str | os.PathLike | None) -> str | None:
    """``"imagenet"`` (the published weights), ``None`` (random) or the path of a weights
    file or a keras-hub preset folder. Done once, by the job's settings: everything
    below takes the value it gives.

    The original tool's ``-weights None`` (any case) means random weights.
    """
    if weights is None:
        return None
    text = os.fspath(weights)
    if text.strip().lower() in ("none", "random"):
        return None
    if not text.strip():
        raise WeightsUnavailableError(
            "Give 'imagenet', 'None' (random weights) or the path of a weights file; the "
            "weights option is empty.", "Choose a weights file, or use ImageNet or random "
            "weights.")
    if text.strip().lower() == "imagenet":
        return "imagenet"
    path = Path(text).expanduser()
    if path.name == "config.json" and (path.parent / "model.weights.h5").is_file():
        path = path.parent  # a keras-hub preset, chosen by its config (file dialogs)
    if not path.is_file() and not path.is_dir():
        raise WeightsUnavailableError(
            f"Weights file {text} does not exist. Give 'imagenet', 'None' "
            f"(random weights), the path of a weights file or of a keras-hub preset folder.",
            f"Weights file {text} does not exist. Choose another under Weights › File…, "
            f"or use ImageNet or random weights.")
    return str(path.resolve())


def writable_by_others(path: Path) -> bool:
    """Whether a user other than us (and root) could change or replace ``path``.

    A folder with the sticky bit (``/tmp``) protects the files of its other
    users; a group of our own (a user-private group) is us.
    """
    info = path.stat()
    if info.st_uid not in (0, os.getuid()):
        return True
    shared = info.st_mode & stat.S_IWOTH or (
        info.st_mode & stat.S_IWGRP and info.st_gid != os.getgid())
    return bool(shared) and not (stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX)


def check_private(file: Path, top: Path | None = None) -> None:
    """Refuse weights that another user could have planted or changed: the file,
    its folder, and the folders up to ``top``."""
    chain = [file, file.parent]
    if top is not None and top in file.parents:
        chain += [p for p in file.parent.parents if p == top or top in p.parents]
    for path in chain:
        if writable_by_others(path):
            raise WeightsUnavailableError(
                f"Refusing to load weights from {file}: other users can write to "
                f"{path}, so they could have replaced the file. Keep weights in a folder "
                f"only you can write (set KERAS_HOME to it), or fix its permissions.")


def bundled_file(backbone: Backbone, alpha: float = 1.0) -> Path | None:
    """The ImageNet weights file shipped in the package for this backbone, if any."""
    path = BUNDLED_DIR / backbone.weights_filename(alpha)
    return path if path.is_file() else None


def find_imagenet_file(backbone: Backbone, alpha: float = 1.0) -> Path | None:
    """The published weights, if they are on this machine: the ImageNet file in Keras'
    cache, else the package's own; or a foundation encoder's preset folder."""
    if backbone.foundation:
        return find_preset(backbone)
    path = keras_models_dir() / backbone.weights_filename(alpha)
    if path.is_file() and path.stat().st_size > 0:
        return path
    return bundled_file(backbone, alpha)


def offline_message(backbone: Backbone, alpha: float, reason: str) -> WeightsUnavailableError:
    """The actionable error for ImageNet weights that cannot be downloaded."""
    name = backbone.weights_filename(alpha)
    head = (f"Cannot download the ImageNet weights of {backbone.name} ({reason}).\n"
            f"Download {name} ({backbone.download_size(alpha):g} MB) from\n  "
            f"{backbone.weights_url(alpha)}\non a machine with internet access and put it "
            f"in {keras_models_dir()}/ (that is $KERAS_HOME/models/), ")
    cli = head + "or pass its path with -weights PATH. Use -weights None for random weights."
    gui = head + "or choose it under Weights › File…. Or use Weights › None (random)."
    if (backbone.name, float(alpha)) != BUNDLED:
        cli += f"\nOr start at once with the bundled weights: {BUNDLED_HINT_CLI}"
        gui += ("\nOr start at once with MobileNet at width 0.25, whose weights come with "
                "the add-on.")
    return WeightsUnavailableError(cli, gui)


def file_digest(path: Path, algorithm: str) -> str:
    """The hex digest of a file, remembered while its size and time stay the same."""
    info = path.stat()
    key = (algorithm, str(path), info.st_size, info.st_mtime_ns)
    with _digest_lock:
        if key in _digests:
            return _digests[key]
    digest = hashlib.new(algorithm)
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    with _digest_lock:
        _digests[key] = digest.hexdigest()
    return _digests[key]


def matches_published_hash(backbone: Backbone, alpha: float, path: Path) -> bool | None:
    """Whether ``path`` has the hash Keras publishes (None where none is known)."""
    expected = backbone.weights_digest(alpha)
    if not expected:
        return None
    algorithm = "sha256" if len(expected) == 64 else "md5"
    return file_digest(path, algorithm) == expected


def verify(backbone: Backbone, alpha: float, path: Path) -> None:
    """Refuse a damaged, truncated or foreign ImageNet weights file, naming it."""
    check_private(path, BUNDLED_DIR if path.parent == BUNDLED_DIR else keras_home())
    if matches_published_hash(backbone, alpha, path) is False:
        raise WeightsUnavailableError(
            f"The weights file {path} is damaged or incomplete: it does not have the hash "
            f"Keras publishes for {backbone.weights_filename(alpha)}. Delete it and run "
            f"again to download it, or download it from {backbone.weights_url(alpha)}")


def _complete_hdf5(path: Path) -> bool:
    """Whether every dataset of an HDF5 file can be read (a truncated file fails)."""
    import h5py  # Keras' own dependency

    def read(_name, item):
        if isinstance(item, h5py.Dataset):
            item[()]

    try:
        with h5py.File(path, "r") as file:
            file.visititems(read)
    except (OSError, ValueError, KeyError, RuntimeError):
        return False
    return True


def download_imagenet(backbone: Backbone, alpha: float = 1.0,
                      progress: ByteProgress | None = None) -> Path:
    """Download the ImageNet weights into Keras' cache; return the file's path.

    A short read is refused: by the Content-Length where the server sends one,
    and by the published hash (or, for files without one, by reading the whole
    HDF5 file) in every case.
    """
    folder = keras_models_dir()
    target = folder / backbone.weights_filename(alpha)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise offline_message(backbone, alpha, f"cannot create {folder}: {exc.strerror}") \
            from None
    tmp = None
    try:
        tmp = _fetch(backbone.weights_url(alpha), folder, progress)
        complete = matches_published_hash(backbone, alpha, tmp)
        if complete is None:
            complete = _complete_hdf5(tmp)
        if not complete:
            raise OSError("the file arrived incomplete or damaged")
        os.replace(tmp, target)
        tmp = None
    except urllib.error.URLError as exc:
        raise offline_message(backbone, alpha, f"no connection: {exc.reason}") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise offline_message(backbone, alpha, f"the download failed: {exc}") from None
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()
    return target


def _fetch(url: str, folder: Path, progress: ByteProgress | None) -> Path:
    """Download ``url`` to a new temporary file in ``folder``."""
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        total = int(response.headers.get("Content-Length") or 0)
        fd, name = tempfile.mkstemp(prefix=".download-", dir=folder)
        try:
            done = 0
            with os.fdopen(fd, "wb") as out:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
            if total and done != total:
                raise OSError(f"got {done} of {total} bytes")
        except BaseException:
            os.unlink(name)
            raise
    return Path(name)


def resolve_weights(backbone: Backbone, weights: str | None, alpha: float = 1.0,
                    progress: ByteProgress | None = None) -> str | None:
    """The weights file or preset folder to load (downloading the published weights if
    needed), or None; ``weights`` as :func:`normalize_weights` gives it."""
    if backbone.foundation:
        require_keras_hub(backbone)  # before any work, converting included
        return None if weights is None else resolve_preset(backbone, weights)
    if weights is None:
        return None
    if Path(weights).is_dir():
        raise WeightsUnavailableError(
            f"{weights} is a folder; {backbone.name} loads a weights file "
            f"(as Keras' {backbone.weights_filename(alpha)}). Preset folders are for the "
            f"keras-hub encoders (transferembed --list-models).")
    if weights != "imagenet":
        check_private(Path(weights))
        return weights
    found = find_imagenet_file(backbone, alpha)
    if found is None:
        found = download_imagenet(backbone, alpha, progress)
    verify(backbone, alpha, found)
    return str(found)


def weights_identity(backbone: Backbone, weights: str | None, alpha: float = 1.0) -> str:
    """A string that changes whenever the weights would give other embeddings.

    ImageNet weights are named by Keras' file name (those files never change),
    a keras-hub preset by its name; a user's file or preset folder by a hash of its
    content; random weights by their seed. ``weights`` as :func:`normalize_weights`
    gives it.
    """
    if weights is None:
        return f"random-v2-seed{RANDOM_SEED}"  # v2: seeds fixed per layer
    if weights == "imagenet":
        return "imagenet:" + backbone.weights_filename(alpha)
    if Path(weights).is_dir():
        return "preset:" + folder_digest(Path(weights))
    return "file:" + file_digest(Path(weights), "sha256")


# --- keras-hub preset folders ---------------------------------------------------------
#
# A foundation encoder's published weights are a keras-hub preset: a folder holding
# ``config.json``, ``model.weights.h5`` and the image converter's ``image_converter.json``.
# Its home is ``$KERAS_HOME/presets/<preset>/`` (``~/.keras/presets/`` by default), beside
# Keras' own weights cache; a copy kagglehub already downloaded is used where it is.
# Finding a folder makes no network call. Without one, the download is tried only where
# Kaggle answers within seconds (kagglehub itself would retry for minutes); otherwise the
# error says where to get the preset and where to put it.

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


def preset_offline_message(backbone: Backbone, reason: str) -> WeightsUnavailableError:
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
        raise preset_offline_message(backbone, reason)
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
        raise preset_offline_message(backbone, f"the download failed: {exc}") from None
    return target


def default_input_size(backbone: Backbone, weights: str | None) -> int:
    """The input size of the preset's image converter (a folder given, or the published
    preset where it is here), else the registry's."""
    if not backbone.foundation or weights is None:
        return backbone.input_size
    folder = find_preset(backbone) if weights == "imagenet" else Path(weights)
    try:
        config = json.loads((folder / "image_converter.json").read_text("utf-8"))
        return int(config["config"]["image_size"][0])
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return backbone.input_size


def preset_files(folder: Path) -> list[Path]:
    """The files of a preset folder that make its model: its JSON and HDF5 files."""
    return [path for path in sorted(folder.iterdir())
            if path.is_file() and path.suffix in (".json", ".h5")]


def folder_digest(folder: Path) -> str:
    """A hash of a preset folder's files (their names and contents)."""
    digest = hashlib.sha256()
    for path in preset_files(folder):
        digest.update(f"{path.name}:{file_digest(path, 'sha256')}\n".encode())
    return digest.hexdigest()
