"""Shard files of a job run in parts: each part's rows, written by the worker.

A shard folder holds ``manifest.json`` (the job's settings and a fingerprint of
its input) and, for each part, ``part-NNNNN.indices.npy`` (global positions),
``.labels.npy`` and ``.embeddings.npy``, then ``part-NNNNN.json`` (skipped
items, counts, row layouts) written last, as the mark of a complete part.
Every file is written atomically; nothing is pickled. A part computed from a
row layout other than the first carries it in its name (``part-NNNNN-at5.*``),
so that two candidates never share files. Files that do not have these names
(another program's ``part-*`` files) are never read or removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import EmbedConfig
from ..errors import SettingsError
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


def part_stem(folder: Path, number: int, layout: Layout) -> Path:
    tag = f"-at{layout.rows}" if layout.rows else ""
    if layout.rows and layout.shape:
        tag += "x" + "x".join(map(str, layout.shape))
    return Path(folder) / f"part-{number:05d}{tag}"


def fingerprint(source: Source) -> str:
    """A hash of the input: paths with sizes and times, or the array data; and labels."""
    digest = hashlib.sha256(f"{type(source).__name__}:{len(source)}".encode())
    if isinstance(source, FileSource):
        for path in source.paths:
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


def open_shards(folder: str | os.PathLike,
                settings: dict) -> tuple[dict[int, dict[Layout, PartResult]], int]:
    """Create the folder and manifest, or check that they belong to this job.

    Returns the complete parts already there, by number and starting layout, and
    the part size: a resumed job keeps the part size of its first run.
    """
    folder = Path(folder)
    manifest = folder / MANIFEST
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if manifest.exists():
            stored = json.loads(manifest.read_text(encoding="utf-8"))
            job = stored.get("job")
            if isinstance(job, dict) and "part_size" in job:
                settings = {**settings, "part_size": job["part_size"]}
            if stored.get("format") != FORMAT or job != settings:
                raise SettingsError(
                    f"--shards folder {folder} holds shards of another job (other input or "
                    f"settings); delete it or choose another folder")
        else:
            text = json.dumps({"format": FORMAT, "job": settings}, indent=1)
            write_atomically([manifest], lambda f: f.write(text), mode="w")
        size = int(settings["part_size"])
    except (OSError, ValueError) as exc:
        if isinstance(exc, SettingsError):
            raise
        raise SettingsError(f"cannot use --shards folder {folder}: {exc}") from None
    found: dict[int, dict[Layout, PartResult]] = {}
    for meta in sorted(folder.glob("part-*.json")):
        part = _read_meta(meta)
        if part is not None:
            found.setdefault(part.number, {})[part.layout] = part
    return found, size


def _read_meta(path: Path) -> PartResult | None:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        part = PartResult(int(meta["part"]), Layout.from_json(meta["layout"]),
                          Layout.from_json(meta["end"]), np.empty(0, np.int64), None,
                          [(int(i), str(r)) for i, r in meta["skipped"]], int(meta["n_cached"]))
        stem = part_stem(path.parent, part.number, part.layout)
        if stem.with_suffix(".json") != path:
            return None
        if any(not Path(f"{stem}.{kind}.npy").exists() for kind in _KINDS):
            return None
        return part
    except (OSError, ValueError, KeyError, TypeError):
        return None  # incomplete or foreign: the part is computed again


def write_part(folder: str | os.PathLike, part: PartResult, labels: np.ndarray | None) -> None:
    """Write a part's npy files, then its JSON (the mark that it is complete)."""
    stem = part_stem(Path(folder), part.number, part.layout)
    arrays = {"indices": np.asarray(part.indices, np.int64),
              "labels": label_column(labels, len(part.indices)),
              "embeddings": np.ascontiguousarray(part.embeddings, np.float32)}

    def write(*files):
        for kind, file in zip(_KINDS, files, strict=True):
            np.save(file, arrays[kind], allow_pickle=False)

    write_atomically([Path(f"{stem}.{kind}.npy") for kind in _KINDS], write)
    meta = {"part": part.number, "layout": part.layout.as_json(), "end": part.end.as_json(),
            "rows": len(part.indices), "n_cached": part.n_cached,
            "skipped": [list(item) for item in part.skipped]}
    write_atomically([stem.with_suffix(".json")], lambda f: json.dump(meta, f), mode="w")


def _load(folder: str | os.PathLike, part: PartResult, kind: str,
          mmap_mode: str | None = None) -> np.ndarray:
    stem = part_stem(Path(folder), part.number, part.layout)
    return np.load(f"{stem}.{kind}.npy", mmap_mode=mmap_mode, allow_pickle=False)


def read_part(folder: str | os.PathLike, part: PartResult) -> tuple[np.ndarray, np.ndarray]:
    """A complete part's global indices, and its embeddings (memory-mapped)."""
    return _load(folder, part, "indices"), _load(folder, part, "embeddings", "r")


def gather(folder: str | os.PathLike,
           parts: list[PartResult]) -> tuple[np.ndarray, np.ndarray]:
    """All parts' global indices and embeddings, in order; the embeddings in one
    array backed by disk, not memory.

    The array maps a nameless temporary file in ``folder``, so a job larger
    than memory still gathers, and nothing is left behind. Parts are mapped
    one at a time.
    """
    indices = [_load(folder, part, "indices") for part in parts]
    rows = sum(len(block) for block in indices)
    all_indices = np.concatenate(indices).astype(np.int64) if indices \
        else np.empty(0, np.int64)
    filled = [(part, block) for part, block in zip(parts, indices, strict=True) if len(block)]
    if not filled:
        return all_indices, np.empty((0, 0), np.float32)
    width = _load(folder, filled[0][0], "embeddings", "r").shape[1]
    with tempfile.TemporaryFile(dir=folder, prefix="gathered-") as file:
        out = np.memmap(file, np.float32, "w+", shape=(rows, width))
    start = 0
    for part, part_indices in filled:
        block = _load(folder, part, "embeddings", "r")
        if block.shape != (len(part_indices), width):
            raise ValueError(f"shard folder {folder}: part {part.number} holds embeddings "
                             f"of shape {block.shape}, expected {(len(part_indices), width)}")
        out[start:start + len(block)] = block
        start += len(block)
    return all_indices, out


def remove_others(folder: str | os.PathLike, number: int, keep: Layout) -> None:
    """Delete the files of a part's candidates other than the accepted one (only
    names this module writes)."""
    kept = part_stem(Path(folder), number, keep).name
    pattern = re.compile(rf"part-{number:05d}(-at\d+(x\d+)*)?"
                         rf"(\.({'|'.join(_KINDS)})\.npy|\.json)$")
    for path in Path(folder).glob(f"part-{number:05d}*"):
        if pattern.fullmatch(path.name) and path.name.split(".")[0] != kept:
            path.unlink(missing_ok=True)
