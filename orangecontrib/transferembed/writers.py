"""Writing results: the npy pair, CSV, Orange's tab file and the skipped list, all
atomically.

Every file is written under a temporary name in its target folder and then
renamed over the target, so a failed or interrupted run never leaves a
half-written file and never clobbers an existing one. The temporary file is
created with the mode ``open()`` would give it (the kernel applies the umask).
Files written together are committed with signals held back, and a pair never
mixes a new file with an old one: the old partner is removed before the new
files are renamed into place. A temporary file names the host and process that
write it, so that one left by a killed run (``kill -9``) is removed by the next
write of the same output on that host.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import secrets
import signal
import socket
import threading
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from glob import escape as glob_escape
from pathlib import Path
from typing import IO

import numpy as np

from .errors import TransferEmbedError
from .pipeline.results import EmbeddingResult, Skipped
from .pipeline.sources import printable

#: Rows of a CSV formatted at once: bounds the memory of formatting.
CSV_BLOCK_ROWS = 256
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class OutputError(TransferEmbedError):
    """An output file that cannot be written (disk full, folder gone, no permission)."""


class _Staged:
    """A temporary file beside ``target``, renamed over it by :meth:`commit`."""

    def __init__(self, target: Path, mode: str = "wb"):
        self.target = target
        _remove_orphans(target)
        self.tmp = target.parent / f".{target.name}.{_owner()}.{secrets.token_hex(4)}.part"
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        kwargs = {"newline": "", "encoding": "utf-8"} if "b" not in mode else {}
        self.file: IO = os.fdopen(fd, mode, **kwargs)

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()

    def commit(self) -> None:
        os.replace(self.tmp, self.target)

    def discard(self) -> None:
        if not self.file.closed:
            self.file.close()
        self.tmp.unlink(missing_ok=True)


def _owner() -> str:
    """This host and process, as a temporary file's name records them."""
    return f"{socket.gethostname().replace('.', '_')}-{os.getpid()}"


def _remove_orphans(target: Path) -> None:
    """Remove the temporary files of ``target`` that a process of this host, now gone,
    left behind (killed before it could clean up)."""
    host = socket.gethostname().replace(".", "_")
    for part in target.parent.glob(f".{glob_escape(target.name)}.{host}-*.part"):
        pid = part.name[len(target.name) + len(host) + 3:].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            part.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


@contextlib.contextmanager
def _signals_held():
    """Hold SIGINT and SIGTERM back while files are renamed into place."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def write_atomically(targets: Sequence[Path], write: Callable[..., None],
                     mode: str = "wb") -> None:
    """Call ``write(*files)`` on temporaries, then rename them all into place.

    An ``OSError`` becomes an :class:`OutputError` that names the file.
    """
    staged: list[_Staged] = []
    current = Path(targets[0])
    try:
        with ExitStack() as stack:
            for target in targets:
                current = Path(target)
                stage = _Staged(current, mode)
                staged.append(stage)
                stack.callback(stage.discard)
            write(*(stage.file for stage in staged))
            for stage in staged:
                current = stage.target
                stage.close()
            with _signals_held():
                for stage in staged[1:]:  # never a new first file beside an old partner
                    stage.target.unlink(missing_ok=True)
                for stage in staged:
                    stage.commit()
    except OSError as exc:
        raise OutputError(f"cannot write {current}: {exc.strerror or exc}") from None


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
    """Labels as the strings a user wrote: ``2``, never ``2.0``, ``007`` kept;
    missing as ``""``; bytes of a folder name that is not UTF-8 as ``\\xff``."""
    n = len(labels) if n is None else n
    column = label_column(labels, n)[:, 0]
    if column.dtype.kind == "S":
        column = np.char.decode(column, "utf-8", errors="replace")
    if column.dtype.kind == "f":
        return ["" if not np.isfinite(v) else str(int(v)) if v.is_integer() else repr(v)
                for v in column.tolist()]
    return [printable(str(v).strip()) for v in column.tolist()]


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
    """``<name>.csv`` with the header ``Class,n0,...,n{K-1}``; one row per image.

    Rows are formatted :data:`CSV_BLOCK_ROWS` at a time from the float32
    array (which may be a disk-backed map), never all at once.
    """
    path = Path(folder) / f"{name}.csv"
    embeddings = result.embeddings
    row_format = ",".join(["%.9g"] * embeddings.shape[1]) + "\n"  # float32 round-trips
    labels = [_csv_cell(text) for text in label_texts(result.labels, len(result))]

    def write(file):
        csv.writer(file, lineterminator="\n").writerow(["Class", *result.feature_names])
        for start in range(0, len(labels), CSV_BLOCK_ROWS):
            stop = start + CSV_BLOCK_ROWS
            block = np.asarray(embeddings[start:stop], np.float32).tolist()
            file.write("".join(label + "," + row_format % tuple(row)
                               for label, row in zip(labels[start:stop], block, strict=True)))

    write_atomically([path], write, mode="w")
    return path


def _csv_cell(text: str, delimiter: str = ",") -> str:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="").writerow([text])
    return buffer.getvalue()


def tab_paths(folder: Path, name: str) -> tuple[Path, Path]:
    """``<name>.tab`` and the ``<name>.tab.metadata`` where Orange keeps its attributes."""
    return folder / f"{name}.tab", folder / f"{name}.tab.metadata"


def write_tab(result: EmbeddingResult, folder: str | os.PathLike,
              name: str) -> tuple[Path, Path]:
    """``<name>.tab``, Orange's native format: ``Class`` the class variable (discrete),
    ``n0..`` continuous features; and ``<name>.tab.metadata``, the table's attributes
    (the settings that made it, :meth:`~.EmbedConfig.provenance`) as Orange writes
    them in text: one ``key: value`` a line. Orange's File widget reads both."""
    tab, metadata = tab_paths(Path(folder), name)
    embeddings, features = result.embeddings, result.feature_names
    row_format = "\t".join(["%.9g"] * embeddings.shape[1]) + "\n"
    labels = [_csv_cell(text, "\t") if text else "?"
              for text in label_texts(result.labels, len(result))]
    attributes = result.config.provenance()

    def write(tab_file, metadata_file):
        tab_file.write("\t".join(["Class", *features]) + "\n")
        tab_file.write("\t".join(["discrete", *["continuous"] * len(features)]) + "\n")
        tab_file.write("\t".join(["class", *[""] * len(features)]) + "\n")
        for start in range(0, len(labels), CSV_BLOCK_ROWS):
            stop = start + CSV_BLOCK_ROWS
            block = np.asarray(embeddings[start:stop], np.float32).tolist()
            tab_file.write("".join(label + "\t" + row_format % tuple(row)
                                   for label, row in zip(labels[start:stop], block,
                                                         strict=True)))
        metadata_file.write("\n".join(f"{key}: {value}" for key, value in attributes.items()))

    write_atomically([tab, metadata], write, mode="w")
    return tab, metadata


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
