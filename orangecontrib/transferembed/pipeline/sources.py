"""Inputs as one stream of items: image files or array rows, with labels.

A source knows how many items it has, how to read item ``i`` (raising
:class:`ImageError` for an item that cannot be read), how to turn what it read
into pixels, and the label of each item. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import os
import posixpath
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ..config import DEFAULT_MAX_IMAGE_BYTES, MAX_CSV_BYTES, size_text
from ..errors import ImageError, SourceError, check_cancelled
from . import images, remote

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
#: Items between two looks at ``is_cancelled`` while a source is built.
CHECK_EVERY = 2000
IsCancelled = Callable[[], bool]
_NOT_FILES = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
              (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
              (stat.S_ISBLK, "a block device"))
_HEADER_WORDS = frozenset({"label", "labels", "class", "category", "target", "y", "path",
                           "paths", "file", "filename", "file_name", "image", "images",
                           "image_path", "img", "location"})


class Source:
    """A sequence of items to embed, each with an optional label."""

    labels: np.ndarray | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def describe(self, index: int) -> str:
        """The item as a user knows it: a path, or the row number."""
        raise NotImplementedError

    def read(self, index: int, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES):
        """The item's raw content (file bytes or a pixel array); a file of more
        than ``max_bytes`` is an :class:`ImageError`."""
        raise NotImplementedError

    def decode(self, raw, size: tuple[int, int] | None, policy: str, min_size: int) -> np.ndarray:
        """Raw content to a uint8 ``(H, W, 3)`` array, resized as asked."""
        raise NotImplementedError

    def content_hash(self, raw) -> str:
        """A hash of the item's content (and of how it is read), for the cache."""
        raise NotImplementedError

    def subset(self, indices: Sequence[int]) -> Source:
        """A source of the items at ``indices``, in that order."""
        raise NotImplementedError


class FileSource(Source):
    """Image files, by path; relative paths are taken from ``base``.

    An empty path is a row without an image (a blank CSV cell, a missing
    value in a table): it is skipped with that reason, and described by its
    entry in ``rows`` (such as ``"list.csv, line 7"``) where given. A path
    may be a URL (:mod:`.remote`), and ``base`` a folder URL; a URL is read
    where the item is read (on a cluster's worker), and shown without credentials.
    """

    def __init__(self, paths: Sequence[str | os.PathLike], labels=None,
                 base: str | os.PathLike | None = None, rows: Sequence[str] | None = None):
        self.paths = [_resolve(os.fspath(p), base) if os.fspath(p) else "" for p in paths]
        remote.check_protocols(self.paths)
        self.labels = _check_labels(labels, len(self.paths))
        self.rows = list(rows) if rows is not None else None

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self, index: int) -> str:
        if self.paths[index] or self.rows is None:
            return printable(remote.display(self.paths[index])) or f"row {index + 1}"
        return self.rows[index]

    def read(self, index: int, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> bytes:
        path = self.paths[index]
        if not path:
            raise ImageError("no image path in this row")
        if remote.is_url(path):
            return remote.read_bytes(path, max_bytes)
        return read_file(path, max_bytes)

    def decode(self, raw, size, policy, min_size):
        return images.decode_file_bytes(raw, size, policy, min_size)

    def content_hash(self, raw) -> str:
        return hashlib.sha256(raw).hexdigest()

    def subset(self, indices):
        sub = copy.copy(self)
        sub.paths = [self.paths[i] for i in indices]
        sub.rows = None if self.rows is None else [self.rows[i] for i in indices]
        sub.labels = None if self.labels is None else self.labels[np.asarray(indices, int)]
        return sub


class ArraySource(Source):
    """Images held in an array: ``(N, H, W)``, ``(N, H, W, C)``, or flattened
    ``(N, H*W*C)`` rows with ``shape=(H, W, C)`` given.

    The array may be memory-mapped; rows are read one batch at a time.
    """

    def __init__(self, data: np.ndarray, labels=None, shape: tuple[int, int, int] | None = None):
        data = np.asarray(data) if not isinstance(data, np.ndarray) else data
        if data.dtype.kind not in "biuf":
            raise SourceError(f"image data must be numeric, not {data.dtype}")
        if data.ndim == 2:
            if shape is None:
                raise SourceError("flattened image rows need the image height, width and "
                                  "channels (-he, -w, -c)",
                                  "flattened image rows need the image Height, Width and "
                                  "Channels")
            height, width, channels = (int(v) for v in shape)
            if min(height, width, channels) < 1:
                raise SourceError(f"height, width and channels must be positive, got {shape}")
            if channels not in (1, 3, 4):
                raise SourceError(f"channels must be 1, 3 or 4, got {channels}")
            if data.shape[1] != height * width * channels:
                text = (f"each data row has {data.shape[1]} values, but height {height} x "
                        f"width {width} x channels {channels} = {height * width * channels}")
                raise SourceError(f"{text}; check -he, -w and -c",
                                  f"{text}; check Height, Width and Channels")
            self.row_shape = (height, width, channels)
        elif data.ndim == 3:
            self.row_shape = data.shape[1:]
        elif data.ndim == 4:
            if data.shape[3] not in (1, 3, 4):
                raise SourceError(f"images must have 1, 3 or 4 channels, got shape {data.shape}")
            self.row_shape = data.shape[1:]
        else:
            raise SourceError(f"image data must be 2-, 3- or 4-dimensional, got shape "
                              f"{data.shape}")
        self.data = data
        self.labels = _check_labels(labels, len(data))
        self.scale = _data_scale(data)

    def __len__(self) -> int:
        return len(self.data)

    def describe(self, index: int) -> str:
        return f"row {index}"

    def read(self, index: int, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> np.ndarray:
        return np.asarray(self.data[index]).reshape(self.row_shape)

    def decode(self, raw, size, policy, min_size):
        return images.decode_array(raw, size, policy, min_size, self.scale)

    def content_hash(self, raw) -> str:
        digest = hashlib.sha256(f"{raw.dtype.str}{raw.shape}{self.scale!r}".encode())
        digest.update(np.ascontiguousarray(raw).tobytes())
        return digest.hexdigest()

    def subset(self, indices):
        sub = ArraySource.__new__(ArraySource)
        idx = np.asarray(indices, int)
        sub.data, sub.row_shape, sub.scale = self.data[idx], self.row_shape, self.scale
        sub.labels = None if self.labels is None else self.labels[idx]
        return sub


def printable(text: str) -> str:
    """A path or name as text that can be written anywhere: bytes of a name
    that is not valid UTF-8 (held as surrogates) shown as ``\\xff``."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class FileRefused(ImageError):
    """A path that is not read: ``reason`` as an image's, and ``as_input`` the same
    for an input file, a template of ``{what}`` (the kind of file) and ``{path}``."""

    def __init__(self, reason: str, as_input: str | None = None):
        super().__init__(reason)
        self.as_input = as_input or "{what} {path}: " + _literal(reason)

    def for_input(self, what: str, path) -> str:
        return self.as_input.format(what=what, path=path)


def _literal(text: str) -> str:
    """``text`` that ``str.format`` leaves as it is."""
    return text.replace("{", "{{").replace("}", "}}")


def _unreadable(exc: OSError) -> FileRefused:
    detail = str(exc.strerror or exc)
    return FileRefused(f"cannot read file: {detail}",
                       "cannot read {what} {path}: " + _literal(detail))


def read_file(path: str | os.PathLike, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> bytes:
    """The bytes of a regular file (a symbolic link's target), at most ``max_bytes``.

    Anything else (a folder, FIFO, socket or device) and a larger file raise
    :class:`ImageError` without being read. The file is opened non-blocking
    and checked again on the open descriptor, so a FIFO put in its place
    after the first check cannot block; a file that grows while read still
    stops at the bound.
    """
    try:
        _check_regular(os.stat(path), max_bytes)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        broken = os.path.lexists(path)
        raise ImageError("a symbolic link whose target does not exist" if broken
                         else "file not found") from None
    except NotADirectoryError:
        raise ImageError("file not found") from None
    except OSError as exc:
        raise _unreadable(exc) from None
    try:
        info = os.fstat(fd)
        _check_regular(info, max_bytes)
        data = _read_at_most(fd, info.st_size, max_bytes)
    except OSError as exc:
        raise _unreadable(exc) from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        grew = f"file grew past the limit of {size_text(max_bytes)}"
        raise FileRefused(f"{grew} for one image while it was read",
                          "{what} {path}: " + f"{grew} while it was read")
    return data


def _check_regular(info: os.stat_result, max_bytes: int) -> None:
    kind = next((name for is_kind, name in _NOT_FILES if is_kind(info.st_mode)), None)
    if kind is not None or not stat.S_ISREG(info.st_mode):
        kind = kind or "not a regular file"
        raise FileRefused(f"is {kind}, not an image file", "{what} {path} " + f"is {kind}, "
                          "not a file")
    if info.st_size > max_bytes:
        size = (f"file is {size_text(info.st_size)} ({info.st_size} bytes), more than the "
                f"limit of {size_text(max_bytes)}")
        raise FileRefused(f"{size} for one image", "{what} {path}: " + size)


def _read_at_most(fd: int, expected: int, max_bytes: int) -> bytes:
    """Up to ``max_bytes + 1`` bytes: one more than allowed shows a file that grew."""
    parts, total = [], 0
    want = min(expected, max_bytes) + 1
    while total <= max_bytes:
        chunk = os.read(fd, want)
        if not chunk:
            break
        parts.append(chunk)
        total += len(chunk)
        want = min(1 << 20, max_bytes + 1 - total)
    return b"".join(parts)


def _data_scale(data: np.ndarray, chunk_bytes: int = 64 << 20) -> float | None:
    """One pixel scale for the whole data set (None for uint8), read in chunks.

    Deciding per image would scale a dark image of a 0..255 float set as if
    it were in 0..1.
    """
    if data.dtype == np.uint8 or not len(data):
        return None
    rows = max(1, chunk_bytes // max(1, data[0].nbytes))
    low, high = np.inf, -np.inf
    for start in range(0, len(data), rows):
        chunk = np.asarray(data[start:start + rows])
        finite = chunk[np.isfinite(chunk)] if chunk.dtype.kind == "f" else chunk
        if finite.size:
            low, high = min(low, float(finite.min())), max(high, float(finite.max()))
    return images.pixel_scale(data.dtype, low, high)


def _resolve(path: str, base: str | os.PathLike | None) -> str:
    """A path or URL, with a relative path taken from ``base`` (a folder or a folder URL)."""
    if remote.is_url(path):
        return path
    if base is not None and remote.is_url(os.fspath(base)):
        return path if Path(path).is_absolute() else remote.join(os.fspath(base), path)
    resolved = Path(path).expanduser()
    if not resolved.is_absolute() and base is not None:
        resolved = Path(base) / resolved
    return str(resolved)


def _check_labels(labels, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    elif labels.ndim == 2:
        raise SourceError(
            f"labels have shape {labels.shape}: they look one-hot encoded. Give one label "
            f"per image, shape ({labels.shape[0]},) or ({labels.shape[0]}, 1); for example "
            f"np.argmax(labels, axis=1)")
    elif labels.ndim != 1:
        raise SourceError(f"labels must have shape (N,) or (N, 1), got {labels.shape}")
    if len(labels) != n:
        raise SourceError(f"there are {n} images but {len(labels)} labels; the counts must "
                          f"agree")
    return labels


def read_input(path: Path, what: str, max_bytes: int) -> bytes:
    """An input file's bytes, as :func:`read_file` reads them; a :class:`SourceError`
    that names the file when it cannot be read."""
    try:
        return read_file(path, max_bytes)
    except ImageError as exc:
        raise _input_error(path, what, exc) from None


def check_regular_file(path: str | os.PathLike, what: str) -> None:
    """A :class:`SourceError` unless ``path`` is a regular file (or a link to one)."""
    try:
        _check_regular(os.stat(path), max_bytes=1 << 62)
    except OSError:
        return  # reported by whoever opens it, in its own words
    except ImageError as exc:
        raise _input_error(path, what, exc) from None


def _input_error(path, what: str, exc: ImageError) -> SourceError:
    if not os.path.lexists(path):
        return SourceError(f"{what} {path} does not exist")
    if isinstance(exc, FileRefused):
        return SourceError(exc.for_input(what, path))
    return SourceError(f"{what} {path}: {exc}")


def load_npy(path: str | os.PathLike, what: str = "data") -> np.ndarray:
    """Load a npy file memory-mapped (read whole from a URL), refusing pickled objects
    and anything but a regular file (a FIFO or a device would block or never end)."""
    if remote.is_url(os.fspath(path)):
        return remote.read_npy(os.fspath(path), what)
    check_regular_file(path, f"npy {what} file")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise SourceError(f"npy {what} file {path} does not exist") from None
    except ValueError as exc:
        if not _has_npy_magic(path):
            raise SourceError(f"{what} file {path} is not a npy file (it does not start "
                              f"with the npy header)") from None
        if "allow_pickle" in str(exc) or "object" in str(exc).lower():
            raise SourceError(f"npy {what} file {path} holds Python objects; these are "
                              f"refused because loading them could run code") from None
        raise SourceError(f"cannot read npy {what} file {path}: {exc}") from None
    except (OSError, EOFError) as exc:
        raise SourceError(f"cannot read npy {what} file {path}: "
                          f"{exc or 'the file is empty'}") from None
    if not isinstance(array, np.ndarray) or array.dtype.hasobject:
        raise SourceError(f"npy {what} file {path} holds Python objects; refused")
    return array


def _has_npy_magic(path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(6) == b"\x93NUMPY"
    except OSError:
        return False


def npy_source(data_path: str | os.PathLike, labels_path: str | os.PathLike | None,
               height: int | None = None, width: int | None = None,
               channels: int | None = None) -> ArraySource:
    """The original tool's npy pair: flattened HWC rows and their labels."""
    data = load_npy(data_path, "data")
    labels = np.asarray(load_npy(labels_path, "labels")) if labels_path is not None else None
    shape = None
    if data.ndim == 2:
        shape = (height, width, channels)
        if None in shape:
            raise SourceError("flattened npy rows need -he, -w and -c",
                              "flattened npy rows need Height, Width and Channels")
    return ArraySource(data, labels, shape)


def csv_source(path: str | os.PathLike, is_cancelled: IsCancelled | None = None) -> FileSource:
    """A ``label,path`` CSV; paths are relative to the CSV's folder.

    A row whose path cell is blank stays in the source, to be skipped with
    that reason. A CSV at a URL holds URLs, or paths relative to its folder URL.
    """
    if remote.is_url(os.fspath(path)):
        return _csv_rows(os.fspath(path), remote.read_text(os.fspath(path), "CSV file"),
                         is_cancelled)
    path = Path(path)
    try:
        text = read_input(path, "CSV file", MAX_CSV_BYTES).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(f"CSV file {path} is not UTF-8 text (byte {exc.object[exc.start]:#x} "
                          f"at position {exc.start}); save it as UTF-8") from None
    return _csv_rows(path, text, is_cancelled)


def _csv_rows(path: Path | str, text: str, is_cancelled: IsCancelled | None) -> FileSource:
    """The source of a CSV's text; ``path`` is the CSV's path or URL."""
    base = remote.parent(path) if isinstance(path, str) else path.parent
    name = remote.display(path) if isinstance(path, str) else path
    short = posixpath.basename(name) if isinstance(path, str) else path.name
    rows = [(n, row) for n, row in enumerate(csv.reader(io.StringIO(text)), start=1)
            if row and any(cell.strip() for cell in row)]
    if rows and _is_header(rows[0][1], base):
        rows = rows[1:]
    if not rows:
        raise SourceError(f"CSV file {name} lists no images; expected rows of label,path")
    labels, paths, names = [], [], []
    for count, (line, row) in enumerate(rows):
        if count % CHECK_EVERY == 0:
            check_cancelled(is_cancelled)
        if len(row) < 2:
            raise SourceError(f"{name}, line {line}: expected label,path but got "
                              f"{','.join(row)!r}")
        labels.append(row[0].strip())
        paths.append(_locate_cell(row[1].strip(), base) if row[1].strip() else "")
        names.append(f"{short}, line {line}")
    return FileSource(paths, np.array(labels, dtype=str), rows=names)


def _locate_cell(cell: str, base: Path | str) -> str:
    """A CSV cell's image: a URL as it is, a path from a CSV at a URL joined to its
    folder URL, a local path found by :func:`locate`."""
    if remote.is_url(cell):
        return cell
    if isinstance(base, str):
        return remote.join(base, cell)
    return str(locate(cell, base))


def locate(path: str, base: Path) -> Path:
    """Find a CSV's relative path: from the CSV's folder first.

    CSVs written for the original tool hold paths relative to the folder it
    was run from, so the current folder is tried next, and then the path
    without its leading ``../`` parts, from the CSV's folder. The first that
    exists wins; if none does, the path from the CSV's folder is kept (and
    reported missing).
    """
    given = Path(path).expanduser()
    if given.is_absolute():
        return given
    candidates = [base / given, Path.cwd() / given]
    parts = given.parts
    while parts and parts[0] == "..":
        parts = parts[1:]
    if parts and len(parts) < len(given.parts):
        candidates.append(base.joinpath(*parts))
    return next((c for c in candidates if c.exists()), candidates[0])


def _is_header(row: list[str], base: Path | str) -> bool:
    """A first row of column names: known words, or a 'path' with no file extension
    that names no file."""
    if any(cell.strip().lower() in _HEADER_WORDS for cell in row[:2]):
        return True
    if len(row) < 2:
        return False
    path = row[1].strip()
    if remote.is_url(path) or isinstance(base, str):  # a request only without an extension
        return not posixpath.splitext(path)[1] and not remote.exists(_locate_cell(path, base))
    return not Path(path).suffix and not locate(path, base).exists()


def folder_source(root: str | os.PathLike, is_cancelled: IsCancelled | None = None) -> FileSource:
    """Images in a folder with one subfolder per class (nested folders too).

    The class is the first-level subfolder; images directly in ``root`` have
    an empty label. Hidden files and folders are ignored. Symbolic links are
    followed, and items keep the path as listed; a folder met again (a link
    loop, or a link to a folder already walked) is walked once. Every name
    with an image extension is an item, so a FIFO or a folder named
    ``x.jpg`` is skipped with its reason when read. ``root`` may be a folder
    URL (a prefix with one sub-prefix per class), listed page by page.
    """
    if remote.is_url(os.fspath(root)):
        return _remote_folder(os.fspath(root), is_cancelled)
    root = Path(root)
    if not root.is_dir():
        raise SourceError(f"image folder {root} does not exist or is not a folder")
    found = list(walk_images(root, is_cancelled))
    if not found:
        raise SourceError(f"image folder {root} holds no images "
                          f"({', '.join(sorted(IMAGE_EXTENSIONS))})")
    labels = np.array([label for label, _ in found], dtype=str)
    has_classes = any(labels)
    return FileSource([p for _, p in found], labels if has_classes else None)


def walk_images(root: Path, is_cancelled: IsCancelled | None = None
                ) -> Iterator[tuple[str, str]]:
    """``(label, path)`` of each image name under ``root``, depth first in name order.

    Holds one folder's names at a time (never a list of every entry); a
    folder is known by its device and inode, and ``root``'s own parents count
    as walked, so a link to any of them is not followed.
    """
    seen = {_identity(parent) for parent in root.resolve().parents} - {None}
    stack = [(os.fspath(root), "")]
    while stack:
        folder, label = stack.pop()
        identity = _identity(folder)
        if identity is None or identity in seen:
            continue
        seen.add(identity)
        files, folders = _list_folder(folder, is_cancelled)
        for name in files:
            yield label, os.path.join(folder, name)
        stack.extend((os.path.join(folder, name), label or name) for name in reversed(folders))


def _identity(path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _list_folder(folder: str, is_cancelled: IsCancelled | None) -> tuple[list[str], list[str]]:
    """The image names and the subfolders (links followed) of one folder, sorted;
    hidden ones left out. A folder that cannot be listed holds nothing."""
    files, folders = [], []
    check_cancelled(is_cancelled)
    try:
        with os.scandir(folder) as entries:
            for count, entry in enumerate(entries):
                if count % CHECK_EVERY == CHECK_EVERY - 1:
                    check_cancelled(is_cancelled)
                if entry.name.startswith("."):
                    continue
                if Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
                    files.append(entry.name)
                if _is_folder(entry):
                    folders.append(entry.name)
    except OSError:
        return [], []
    return sorted(files), sorted(folders)


def _is_folder(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _is_image_name(name: str) -> bool:
    return posixpath.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _remote_folder(root: str, is_cancelled: IsCancelled | None) -> FileSource:
    labels, urls = [], []
    for label, url in remote.walk(root, _is_image_name, lambda: check_cancelled(is_cancelled)):
        labels.append(label)
        urls.append(url)
    if not urls:
        raise SourceError(f"image folder {remote.display(root)} holds no images "
                          f"({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return FileSource(urls, np.array(labels, dtype=str) if any(labels) else None)


#: Input kinds, as the command line and the widgets name them.
SOURCE_KINDS = ("folder", "csv", "npy")


def open_source(kind: str, path: str | os.PathLike, labels=None,
                shape: tuple[int, int, int] | None = None,
                is_cancelled: IsCancelled | None = None) -> Source:
    """The source of one input kind: a ``folder``, a ``csv`` or a ``npy`` pair.

    ``labels`` and ``shape`` (height, width, channels of flattened rows) are
    for npy data; ``labels`` may be a path or an array.
    """
    if kind == "folder":
        return folder_source(path, is_cancelled)
    if kind == "csv":
        return csv_source(path, is_cancelled)
    if kind != "npy":
        raise SourceError(f"unknown kind of input {kind!r}; expected one of "
                          f"{', '.join(SOURCE_KINDS)}")
    if labels is not None and not isinstance(labels, (str, os.PathLike)):
        return ArraySource(load_npy(path), labels, shape)
    return npy_source(path, labels, *(shape or (None, None, None)))


def input_kind(path: str | os.PathLike) -> str:
    """The kind of input a path names: a folder, or a file by its extension. A URL
    that names no .csv or .npy file is a folder (a prefix)."""
    if remote.is_url(os.fspath(path)):
        suffix = posixpath.splitext(os.fspath(path).split("?")[0])[1].lower()
        return "npy" if suffix == ".npy" else "csv" if suffix in (".csv", ".txt", ".tsv") \
            else "folder"
    path = Path(path)
    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return "npy"
    if suffix in (".csv", ".txt", ".tsv"):
        return "csv"
    raise SourceError(f"{path} is not a folder, a .csv or a .npy file")


def as_source(source, labels=None, shape: tuple[int, int, int] | None = None,
              is_cancelled: IsCancelled | None = None) -> Source:
    """Whatever the API was given, as a :class:`Source`.

    A :class:`Source`; an array; a folder, a ``.csv`` or a ``.npy`` file
    (with ``labels`` a second ``.npy`` or an array); or a list of image paths.
    Reading a large folder or CSV stops once ``is_cancelled()`` says so.
    """
    if isinstance(source, Source):
        return source
    if isinstance(source, np.ndarray):
        return ArraySource(source, labels, shape)
    if isinstance(source, (str, os.PathLike)):
        return open_source(input_kind(source), source, labels, shape, is_cancelled)
    if isinstance(source, Sequence):
        return FileSource(list(source), labels)
    raise SourceError(f"cannot embed a {type(source).__name__}; give a folder, a CSV, a npy "
                      f"file, an array or a list of image paths")
