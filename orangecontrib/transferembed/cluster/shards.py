"""Shard files of a job run in parts: each part's rows, written by the worker.

A shard folder holds ``manifest.json`` (the job's settings and a fingerprint of
its input) and, for each part, ``part-NNNNN.indices.npy`` (global positions),
``.labels.npy`` and ``.embeddings.npy``, then ``part-NNNNN.json`` (skipped
items, counts, row layouts) written last, as the mark of a complete part.
Every file is written atomically; nothing is pickled. The folder may be a
prefix on an object store (``s3://bucket/prefix``): there each object
appears whole when written, and the JSON is still the last of a part's. A part
computed from a row layout other than the first carries it in its name
(``part-NNNNN-at5.*``), so that two candidates never share files. Files that do not have these names
(another program's ``part-*`` files) are never read or removed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import EmbedConfig
from ..errors import SettingsError
from ..pipeline import remote
from ..pipeline.batches import Layout
from ..pipeline.sources import ArraySource, FileSource, Source
from ..writers import label_column, write_atomically

FORMAT = "transferembed-shards/2"
MANIFEST = "manifest.json"
_KINDS = ("indices", "labels", "embeddings")


@dataclass
class PartResult:
    """What one part of a job gives back (plain data)."""

    number: int
    layout: Layout  #: the row layout the part started at
    end: Layout  #: the row layout it leaves for the next part
    indices: np.ndarray  #: global positions of the embedded rows
    embeddings: np.ndarray | None  #: None once written to a shard
    skipped: list[tuple[int, str]] = field(default_factory=list)  #: (global index, reason)
    n_cached: int = 0
    #: Cache keys of the computed rows, by global index: stored once the part is accepted.
    new_keys: dict[int, str] = field(default_factory=dict)


def part_stem(number: int, layout: Layout) -> str:
    """The name every file of a part starts with."""
    tag = f"-at{layout.rows}" if layout.rows else ""
    if layout.rows and layout.shape:
        tag += "x" + "x".join(map(str, layout.shape))
    return f"part-{number:05d}{tag}"


def fingerprint(source: Source) -> str:
    """A hash of the input: paths with sizes and times, or the array data; and labels."""
    digest = hashlib.sha256(f"{type(source).__name__}:{len(source)}".encode())
    if isinstance(source, FileSource):
        for path in source.paths:
            if remote.is_url(path):  # an object's name only: no request per image
                digest.update(f"{remote.display(path)}\n".encode())
                continue
            try:
                stat = os.stat(path)
                digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{path}\0missing\n".encode())
    elif isinstance(source, ArraySource):
        digest.update(f"{source.data.dtype.str}{source.row_shape}".encode())
        for start in range(0, len(source), 1024):
            digest.update(np.ascontiguousarray(source.data[start:start + 1024]).tobytes())
    else:
        for i in range(len(source)):
            digest.update(f"{source.describe(i)}\n".encode())
    if source.labels is not None:
        labels = np.asarray(source.labels)
        digest.update(labels.dtype.str.encode())
        digest.update(np.ascontiguousarray(labels).tobytes())
    return digest.hexdigest()


def job_settings(source: Source, config: EmbedConfig, part_size: int) -> dict:
    """What decides the shards' content: model, preprocessing, batching, input."""
    return {"model": config.model_key(), "batch_size": config.batch_size,
            "part_size": part_size, "items": len(source), "source": fingerprint(source)}


class LocalFolder:
    """A shard folder on this machine's file system: every file written atomically."""

    def __init__(self, location: str | os.PathLike):
        self.path = Path(location)
        self.location = str(self.path)

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def names(self, prefix: str) -> list[str]:
        return sorted(p.name for p in self.path.glob(f"{prefix}*"))

    def read_text(self, name: str) -> str | None:
        try:
            return (self.path / name).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def write_text(self, name: str, text: str) -> None:
        write_atomically([self.path / name], lambda f: f.write(text), mode="w")

    def write_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        def write(*files):
            for array, file in zip(arrays.values(), files, strict=True):
                np.save(file, array, allow_pickle=False)

        write_atomically([self.path / name for name in arrays], write)

    def load(self, name: str, mmap_mode: str | None = None) -> np.ndarray:
        return np.load(self.path / name, mmap_mode=mmap_mode, allow_pickle=False)

    def remove(self, name: str) -> None:
        (self.path / name).unlink(missing_ok=True)

    def scratch(self) -> str:
        """Where a gathered array's nameless file goes."""
        return self.location


class StoreFolder(LocalFolder):
    """A shard prefix on an object store (an fsspec URL). The store has no rename:
    each object appears whole when written, and a part's JSON is written last."""

    def __init__(self, location: str):
        self.location = location.rstrip("/")
        self.fs = remote.filesystem(self.location)

    def _url(self, name: str) -> str:
        return f"{self.location}/{name}"

    def create(self) -> None:
        pass  # a prefix exists once an object is under it

    def names(self, prefix: str) -> list[str]:
        return sorted(name for name, is_folder in remote.entries(self.location, prefix, self.fs)
                      if not is_folder)

    def read_text(self, name: str) -> str | None:
        try:
            data = remote.retrying(lambda: self.fs.cat_file(self._url(name)))
        except FileNotFoundError:
            return None
        return data.decode("utf-8")

    def _put(self, name: str, data: bytes) -> None:
        try:
            remote.retrying(lambda: self.fs.pipe_file(self._url(name), data))
        except Exception as exc:
            raise OSError(f"cannot write {remote.display(self._url(name))}: "
                          f"{remote.reason(exc)}") from None

    def write_text(self, name: str, text: str) -> None:
        self._put(name, text.encode("utf-8"))

    def write_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            self._put(name, buffer.getvalue())

    def load(self, name: str, mmap_mode: str | None = None) -> np.ndarray:
        data = remote.retrying(lambda: self.fs.cat_file(self._url(name)))
        return np.load(io.BytesIO(data), allow_pickle=False)

    def remove(self, name: str) -> None:
        try:
            remote.retrying(lambda: self.fs.rm_file(self._url(name)))
        except FileNotFoundError:
            pass

    def scratch(self) -> str:
        return tempfile.gettempdir()


def shard_folder(location: str | os.PathLike) -> LocalFolder:
    """The shard folder at ``location``: a local folder, or a prefix at a URL."""
    if remote.is_url(os.fspath(location)):
        return StoreFolder(os.fspath(location))
    return LocalFolder(location)


def open_shards(folder: str | os.PathLike,
                settings: dict) -> tuple[dict[int, dict[Layout, PartResult]], int]:
    """Create the folder and manifest, or check that they belong to this job.

    Returns the complete parts already there, by number and starting layout, and
    the part size: a resumed job keeps the part size of its first run.
    """
    shelf = shard_folder(folder)
    shown = remote.display(shelf.location)
    try:
        shelf.create()
        text = shelf.read_text(MANIFEST)
        if text is not None:
            stored = json.loads(text)
            job = stored.get("job")
            if isinstance(job, dict) and "part_size" in job:
                settings = {**settings, "part_size": job["part_size"]}
            if stored.get("format") != FORMAT or job != settings:
                raise SettingsError(
                    f"--shards folder {shown} holds shards of another job (other input or "
                    f"settings); delete it or choose another folder")
        else:
            shelf.write_text(MANIFEST, json.dumps({"format": FORMAT, "job": settings},
                                                  indent=1))
        size = int(settings["part_size"])
        names = shelf.names("part-")
    except (OSError, ValueError) as exc:
        if isinstance(exc, SettingsError):
            raise
        raise SettingsError(f"cannot use --shards folder {shown}: "
                            f"{remote.reason(exc)}") from None
    found: dict[int, dict[Layout, PartResult]] = {}
    for name in names:
        if name.endswith(".json"):
            part = _read_meta(shelf, name, set(names))
            if part is not None:
                found.setdefault(part.number, {})[part.layout] = part
    return found, size


def _read_meta(shelf: LocalFolder, name: str, names: set[str]) -> PartResult | None:
    try:
        meta = json.loads(shelf.read_text(name) or "")
        part = PartResult(int(meta["part"]), Layout.from_json(meta["layout"]),
                          Layout.from_json(meta["end"]), np.empty(0, np.int64), None,
                          [(int(i), str(r)) for i, r in meta["skipped"]], int(meta["n_cached"]))
        stem = part_stem(part.number, part.layout)
        if f"{stem}.json" != name:
            return None
        if any(f"{stem}.{kind}.npy" not in names for kind in _KINDS):
            return None
        return part
    except (OSError, ValueError, KeyError, TypeError):
        return None  # incomplete or foreign: the part is computed again


def write_part(folder: str | os.PathLike, part: PartResult, labels: np.ndarray | None) -> None:
    """Write a part's npy files, then its JSON (the mark that it is complete)."""
    shelf = shard_folder(folder)
    stem = part_stem(part.number, part.layout)
    shelf.write_arrays({
        f"{stem}.indices.npy": np.asarray(part.indices, np.int64),
        f"{stem}.labels.npy": label_column(labels, len(part.indices)),
        f"{stem}.embeddings.npy": np.ascontiguousarray(part.embeddings, np.float32)})
    meta = {"part": part.number, "layout": part.layout.as_json(), "end": part.end.as_json(),
            "rows": len(part.indices), "n_cached": part.n_cached,
            "skipped": [list(item) for item in part.skipped]}
    shelf.write_text(f"{stem}.json", json.dumps(meta))


def _load(shelf: LocalFolder, part: PartResult, kind: str,
          mmap_mode: str | None = None) -> np.ndarray:
    return shelf.load(f"{part_stem(part.number, part.layout)}.{kind}.npy", mmap_mode)


def read_part(folder: str | os.PathLike, part: PartResult) -> tuple[np.ndarray, np.ndarray]:
    """A complete part's global indices, and its embeddings (memory-mapped where local)."""
    shelf = shard_folder(folder)
    return _load(shelf, part, "indices"), _load(shelf, part, "embeddings", "r")


def gather(folder: str | os.PathLike,
           parts: list[PartResult]) -> tuple[np.ndarray, np.ndarray]:
    """All parts' global indices and embeddings, in order; the embeddings in one
    array backed by disk, not memory.

    The array maps a nameless temporary file (in a local ``folder``, else in the
    temporary folder), so a job larger than memory still gathers, and nothing is
    left behind. Parts are read one at a time.
    """
    shelf = shard_folder(folder)
    indices = [_load(shelf, part, "indices") for part in parts]
    rows = sum(len(block) for block in indices)
    all_indices = np.concatenate(indices).astype(np.int64) if indices \
        else np.empty(0, np.int64)
    filled = [(part, block) for part, block in zip(parts, indices, strict=True) if len(block)]
    if not filled:
        return all_indices, np.empty((0, 0), np.float32)
    out, start = None, 0
    for part, part_indices in filled:
        block = _load(shelf, part, "embeddings", "r")
        if out is None:
            width = block.shape[1]
            with tempfile.TemporaryFile(dir=shelf.scratch(), prefix="gathered-") as file:
                out = np.memmap(file, np.float32, "w+", shape=(rows, width))
        if block.shape != (len(part_indices), out.shape[1]):
            raise ValueError(f"shard folder {remote.display(shelf.location)}: part "
                             f"{part.number} holds embeddings of shape {block.shape}, "
                             f"expected {(len(part_indices), out.shape[1])}")
        out[start:start + len(block)] = block
        start += len(block)
    return all_indices, out


def remove_others(folder: str | os.PathLike, number: int, keep: Layout) -> None:
    """Delete the files of a part's candidates other than the accepted one (only
    names this module writes)."""
    shelf = shard_folder(folder)
    kept = part_stem(number, keep)
    pattern = re.compile(rf"part-{number:05d}(-at\d+(x\d+)*)?"
                         rf"(\.({'|'.join(_KINDS)})\.npy|\.json)$")
    for name in shelf.names(f"part-{number:05d}"):
        if pattern.fullmatch(name) and name.split(".")[0] != kept:
            shelf.remove(name)
