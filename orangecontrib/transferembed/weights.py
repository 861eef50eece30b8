"""Finding, downloading and identifying backbone weights.

``"imagenet"`` weights live where Keras itself caches them,
``$KERAS_HOME/models/<file>`` (``~/.keras/models`` by default), so a file a
user or Keras already downloaded is reused and one we download is reused by
Keras. The download is ours so that it can report progress in bytes and fail
with a message that says what to do.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from .backbones import Backbone
from .errors import WeightsUnavailableError

#: ``progress(done_bytes, total_bytes)``; total is 0 when unknown.
ByteProgress = Callable[[int, int], None]
DOWNLOAD_TIMEOUT_S = 30
_CHUNK = 1 << 20


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
    """``"imagenet"``, ``None`` (random) or the path of a weights file.

    The original tool's ``-weights None`` (any case) means random weights.
    """
    if weights is None:
        return None
    text = os.fspath(weights)
    if text.strip().lower() in ("none", "random"):
        return None
    if not text.strip():
        raise WeightsUnavailableError("Give 'imagenet', 'None' (random weights) or the path "
                                      "of a weights file; the weights option is empty.")
    if text.strip().lower() == "imagenet":
        return "imagenet"
    path = Path(text).expanduser()
    if not path.is_file():
        raise WeightsUnavailableError(
            f"Weights file {text} does not exist. Give 'imagenet', 'None' "
            f"(random weights) or the path of a weights file.")
    return str(path.resolve())


def _candidate_dirs() -> list[Path]:
    dirs = [keras_models_dir(), Path(tempfile.gettempdir()) / ".keras" / "models"]
    return list(dict.fromkeys(dirs))


def find_imagenet_file(backbone: Backbone, alpha: float = 1.0) -> Path | None:
    """The cached ImageNet weights file, if Keras' cache already has it."""
    name = backbone.weights_filename(alpha)
    for folder in _candidate_dirs():
        if (folder / name).is_file() and (folder / name).stat().st_size > 0:
            return folder / name
    return None


def offline_message(backbone: Backbone, alpha: float, reason: str) -> str:
    """The actionable text for ImageNet weights that cannot be downloaded."""
    name = backbone.weights_filename(alpha)
    url = backbone.weights_url(alpha)
    return (
        f"Cannot download the ImageNet weights of {backbone.name} ({reason}).\n"
        f"Download {name} ({backbone.download_size(alpha):g} MB) from\n  {url}\n"
        f"on a machine with internet access and put it in {keras_models_dir()}/ "
        f"(that is $KERAS_HOME/models/), or pass its path with -weights PATH "
        f"(the widget: Weights > File). Use -weights None for random weights.")


def download_imagenet(backbone: Backbone, alpha: float = 1.0,
                      progress: ByteProgress | None = None) -> Path:
    """Download the ImageNet weights into Keras' cache; return the file's path."""
    folder = keras_models_dir()
    target = folder / backbone.weights_filename(alpha)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsUnavailableError(
            offline_message(backbone, alpha, f"cannot create {folder}: {exc.strerror}")) from None
    url = backbone.weights_url(alpha)
    tmp = None
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0)
            fd, tmp = tempfile.mkstemp(prefix=".download-", dir=folder)
            done = 0
            with os.fdopen(fd, "wb") as out:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        if total and done != total:
            raise OSError(f"got {done} of {total} bytes")
        os.replace(tmp, target)
        tmp = None
    except urllib.error.URLError as exc:
        raise WeightsUnavailableError(
            offline_message(backbone, alpha, f"no connection: {exc.reason}")) from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise WeightsUnavailableError(
            offline_message(backbone, alpha, f"the download failed: {exc!r}")) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return target


def resolve_weights(backbone: Backbone, weights: str | None, alpha: float = 1.0,
                    progress: ByteProgress | None = None) -> str | None:
    """The weights file to load (downloading ImageNet weights if needed), or None."""
    weights = normalize_weights(weights)
    if weights != "imagenet":
        return weights
    found = find_imagenet_file(backbone, alpha)
    if found is not None:
        return str(found)
    return str(download_imagenet(backbone, alpha, progress))


_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def weights_identity(backbone: Backbone, weights: str | None, alpha: float = 1.0) -> str:
    """A string that changes whenever the weights would give other embeddings.

    ImageNet weights are named by Keras' file name (those files never change);
    a user's file by a hash of its content; random weights by their seed.
    """
    weights = normalize_weights(weights)
    if weights is None:
        return f"random-v2-seed{RANDOM_SEED}"  # v2: seeds fixed per layer
    if weights == "imagenet":
        return "imagenet:" + backbone.weights_filename(alpha)
    stat = os.stat(weights)
    key = (weights, stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        digest = hashlib.sha256()
        with open(weights, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        _FILE_DIGESTS[key] = digest.hexdigest()
    return "file:" + _FILE_DIGESTS[key]


#: Random weights are seeded, so that ``weights=None`` runs are reproducible.
RANDOM_SEED = 0
