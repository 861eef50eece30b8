"""Writing results: the npy pair, CSV and the skipped list, all atomically.

Every file is written under a temporary name in its target folder and then
renamed over the target, so a failed or interrupted run never leaves a
half-written file and never clobbers an existing one.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import IO

import numpy as np

from .engine import EmbeddingResult, Skipped


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _Staged:
    """A temporary file beside ``target``, renamed over it by :meth:`commit`."""

    def __init__(self, target: Path, mode: str = "wb"):
        self.target = target
        fd, self.tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part",
                                        dir=target.parent)
        os.chmod(self.tmp, 0o666 & ~_umask())  # as open() would create it
        kwargs = {"newline": "", "encoding": "utf-8"} if "b" not in mode else {}
        self.file: IO = os.fdopen(fd, mode, **kwargs)

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.target)

    def discard(self) -> None:
        if not self.file.closed:
            self.file.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


def write_atomically(targets: Sequence[Path], write: Callable[..., None],
                     mode: str = "wb") -> None:
    """Call ``write(*files)`` on temporaries, then rename them all into place."""
    staged: list[_Staged] = []
    with ExitStack() as stack:
        for target in targets:
            stage = _Staged(Path(target), mode)
            staged.append(stage)
            stack.callback(stage.discard)
        write(*(stage.file for stage in staged))
        for stage in staged:
            stage.commit()


def label_column(labels: np.ndarray | None, n: int) -> np.ndarray:
    """Labels as an ``(n, 1)`` array; integral floats become integers, none become ""."""
    if labels is None:
        return np.full((n, 1), "", dtype=str)
    labels = np.asarray(labels)
    if labels.dtype.kind == "f" and np.all(np.isfinite(labels)) \
            and np.array_equal(labels, np.round(labels)):
        labels = labels.astype(np.int64)
    return labels.reshape(n, 1)


def label_texts(labels: np.ndarray | None, n: int | None = None) -> list[str]:
    """Labels as the strings a user wrote: ``2``, never ``2.0``; missing as ``""``."""
    n = len(labels) if n is None else n
    column = label_column(labels, n)[:, 0]
    if column.dtype.kind == "S":
        column = np.char.decode(column, "utf-8", errors="replace")
    if column.dtype.kind == "f":
        return ["" if not np.isfinite(v) else str(int(v)) if v.is_integer() else repr(v)
                for v in column.tolist()]
    return [str(v).strip() for v in column.tolist()]


def npy_paths(folder: Path, name: str) -> tuple[Path, Path]:
    return folder / f"{name}_data.npy", folder / f"{name}_labels.npy"


def write_npy_pair(result: EmbeddingResult, folder: str | os.PathLike,
                   name: str) -> tuple[Path, Path]:
    """``<name>_data.npy`` (N, K) float32 and ``<name>_labels.npy`` (N, 1)."""
    data_path, labels_path = npy_paths(Path(folder), name)
    labels = label_column(result.labels, len(result))

    def write(data_file, labels_file):
        np.save(data_file, np.ascontiguousarray(result.embeddings, np.float32),
                allow_pickle=False)
        np.save(labels_file, labels, allow_pickle=False)

    write_atomically([data_path, labels_path], write)
    return data_path, labels_path


def write_csv(result: EmbeddingResult, folder: str | os.PathLike, name: str) -> Path:
    """``<name>.csv`` with the header ``Class,n0,...,n{K-1}``; one row per image."""
    path = Path(folder) / f"{name}.csv"
    embeddings = result.embeddings
    row_format = ",".join(["%.9g"] * embeddings.shape[1])  # float32 round-trips at 9 digits
    labels = label_texts(result.labels, len(result))

    def write(file):
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["Class", *result.feature_names])
        buffer = io.StringIO()
        label_writer = csv.writer(buffer, lineterminator="")
        for label, row in zip(labels, embeddings.tolist(), strict=True):
            buffer.seek(0)
            buffer.truncate()
            label_writer.writerow([label])
            file.write(buffer.getvalue() + "," + row_format % tuple(row) + "\n")

    write_atomically([path], write, mode="w")
    return path


def skipped_path(folder: str | os.PathLike, name: str) -> Path:
    return Path(folder) / f"{name}_skipped.csv"


def write_skipped(skipped: Sequence[Skipped], folder: str | os.PathLike, name: str) -> Path:
    """``<name>_skipped.csv`` with ``path,reason`` rows."""
    path = skipped_path(folder, name)

    def write(file):
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(["path", "reason"])
        writer.writerows((item.item, item.reason) for item in skipped)

    write_atomically([path], write, mode="w")
    return path
