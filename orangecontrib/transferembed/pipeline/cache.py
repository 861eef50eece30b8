"""A bounded, least-recently-used embedding cache in SQLite (never pickle).

Keys hash the model (backbone, weights identity, layer, runtime, preprocessing)
together with a hash of the image's content, so a renamed or touched file
still hits and a changed file misses. Each value is raw float32 bytes stored
with its width and a checksum: a vector that does not match them is a miss,
is computed again and replaces the damaged one. The database runs in WAL mode
(a rollback journal on network file systems, where WAL does not work), and
opening it waits out the other connections that open it at the same moment, so
several processes on one machine can read and write it at once. A damaged
database is moved aside and rebuilt; an error in the middle of a run turns the
cache off for that run instead of failing it. What went wrong is told to the
run's ``notice`` callback, in words for the user.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..config import default_cache_dir
from ..errors import SettingsError

log = logging.getLogger(__name__)

Notice = Callable[[str], None]
CACHE_SIZE_ENV = "TRANSFEREMBED_CACHE_MAX_MB"
DEFAULT_MAX_MB = 2048
DB_NAME = "embeddings-v2.sqlite3"
OPEN_TIMEOUT_S = 30.0
#: File systems where SQLite's WAL mode is unsafe (its shared memory needs one host).
NETWORK_FILE_SYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb", "smb3", "smbfs", "ceph", "cephfs", "lustre", "gpfs",
    "glusterfs", "fuse.glusterfs", "fuse.sshfs", "fuse.s3fs", "9p", "afs", "beegfs",
    "fuse.cephfs", "fuse.juicefs", "fuse.gcsfuse", "fuse.rclone", "panfs", "orangefs"})
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS embeddings (key TEXT PRIMARY KEY, vector BLOB NOT NULL, "
    "width INTEGER NOT NULL, checksum BLOB NOT NULL, used REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS embeddings_used ON embeddings(used)",
)


def checksum(blob: bytes) -> bytes:
    """A 64-bit hash of a stored vector's bytes."""
    return hashlib.blake2b(blob, digest_size=8).digest()


def max_bytes_from_environment() -> int:
    """``$TRANSFEREMBED_CACHE_MAX_MB`` in bytes; a bad value is a settings error."""
    text = os.environ.get(CACHE_SIZE_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_MB * 2**20
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise SettingsError(f"{CACHE_SIZE_ENV} must be a positive number of MB, "
                            f"got {text!r}")
    return int(value * 2**20)


def file_system_type(folder: Path) -> str:
    """The type of the file system holding ``folder`` ("" where unknown; Linux only)."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
        target = os.path.realpath(folder)
    except OSError:
        return ""
    best, kind = "", ""
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, kind = point, fields[2]
    return kind


class EmbeddingCache:
    """Embeddings by key, in one SQLite file, at most ``max_bytes`` large.

    With ``read_only`` the cache is only read: nothing is stored, and reads
    do not count as uses (cluster workers; the job stores accepted parts).
    """

    def __init__(self, folder: str | os.PathLike | None = None, max_bytes: int | None = None,
                 read_only: bool = False, notice: Notice | None = None):
        self.folder = Path(folder) if folder is not None else default_cache_dir()
        self.path = self.folder / DB_NAME
        self.max_bytes = max_bytes_from_environment() if max_bytes is None else max_bytes
        self.read_only = read_only
        self.notice = notice  #: told what went wrong, in words for the user
        self.damaged = 0  #: vectors that failed their checksum and were not served
        self._lock = threading.Lock()
        self._touched: list[str] = []
        self._conn: sqlite3.Connection | None = None
        self.journal = "delete" if file_system_type(self.folder) in NETWORK_FILE_SYSTEMS \
            else "wal"
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = self._connect()
        except sqlite3.OperationalError:
            raise  # locked, read-only or unopenable: run without the cache, keep the file
        except sqlite3.DatabaseError as exc:
            self._report(f"the embedding cache {self.path} was damaged ({exc}); it was "
                         f"moved aside and started anew")
            self._discard_file()
            self._conn = self._connect()

    def _report(self, problem: str) -> None:
        log.warning("%s", problem)
        if self.notice is not None:
            self.notice(problem)

    def _connect(self) -> sqlite3.Connection:
        """Open the database, waiting out other processes that open it at once.

        SQLite answers "database is locked" at once, without its busy handler,
        when several connections switch a new file to WAL or create its schema
        together; so opening is retried until ``OPEN_TIMEOUT_S`` has passed.
        """
        deadline = time.monotonic() + OPEN_TIMEOUT_S
        pause = 0.005
        while True:
            try:
                return self._open()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(2 * pause, 0.25)

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=OPEN_TIMEOUT_S, check_same_thread=False,
                               isolation_level=None)
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != self.journal:
                conn.execute(f"PRAGMA journal_mode = {self.journal.upper()}")
            conn.execute("PRAGMA synchronous = NORMAL")
            with _transaction(conn):
                for statement in _SCHEMA:
                    conn.execute(statement)
            conn.execute("SELECT count(*) FROM embeddings WHERE rowid < 2").fetchone()
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    def _discard_file(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            path = Path(str(self.path) + suffix)
            if path.exists():
                os.replace(path, f"{path}.damaged")

    def _disable(self, exc: Exception) -> None:
        self._report(f"the embedding cache {self.path} was turned off for this run: {exc}")
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    @staticmethod
    def key(model_key: str, content_hash: str) -> str:
        """The cache key of one image under one model."""
        return hashlib.sha256(f"{model_key}\0{content_hash}".encode()).hexdigest()

    def get(self, key: str) -> np.ndarray | None:
        """The cached embedding, or None (thread-safe). A vector that fails its
        checksum is counted in :attr:`damaged` and not served."""
        with self._lock:
            if self._conn is None:
                return None
            try:
                row = self._conn.execute(
                    "SELECT vector, width, checksum FROM embeddings WHERE key = ?",
                    (key,)).fetchone()
            except sqlite3.Error as exc:
                self._disable(exc)
                return None
            if row is None:
                return None
            blob, width, stored = row
            if len(blob) != 4 * width or checksum(blob) != stored:
                self.damaged += 1
                return None
            if not self.read_only:
                self._touched.append(key)
        return np.frombuffer(blob, dtype="<f4")

    def put_many(self, vectors: dict[str, np.ndarray]) -> None:
        """Store embeddings (one transaction), then evict the least recently used."""
        if self.read_only:
            return
        now = time.time()
        rows = []
        for key, vector in vectors.items():
            if key is not None:
                blob = np.ascontiguousarray(vector, "<f4").tobytes()
                rows.append((key, blob, len(blob) // 4, checksum(blob), now))
        with self._lock:
            if self._conn is None:
                return
            touched, self._touched = self._touched, []
            try:
                with _transaction(self._conn):
                    self._conn.executemany(
                        "INSERT OR REPLACE INTO embeddings(key, vector, width, checksum, used) "
                        "VALUES (?, ?, ?, ?, ?)", rows)
                    self._conn.executemany("UPDATE embeddings SET used = ? WHERE key = ?",
                                           [(now, key) for key in touched])
                self._evict()
            except sqlite3.Error as exc:
                self._disable(exc)

    def flush(self) -> None:
        """Record the use of the entries read since the last write."""
        self.put_many({})

    def _used_bytes(self) -> int:
        page_size, = self._conn.execute("PRAGMA page_size").fetchone()
        pages, = self._conn.execute("PRAGMA page_count").fetchone()
        free, = self._conn.execute("PRAGMA freelist_count").fetchone()
        return (pages - free) * page_size

    def _evict(self) -> None:
        while self._used_bytes() > self.max_bytes:
            count, = self._conn.execute("SELECT count(*) FROM embeddings").fetchone()
            if not count:
                return
            with _transaction(self._conn):
                self._conn.execute(
                    "DELETE FROM embeddings WHERE key IN (SELECT key FROM embeddings "
                    "ORDER BY used LIMIT ?)", (max(1, count // 10),))

    def __len__(self) -> int:
        with self._lock:
            if self._conn is None:
                return 0
            return self._conn.execute("SELECT count(*) FROM embeddings").fetchone()[0]

    def close(self) -> None:
        if not self.read_only:
            self.flush()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite refused because another connection holds a lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` on error."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb):
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")


def open_cache(cache: bool | str | os.PathLike | None = True, read_only: bool = False,
               notice: Notice | None = None) -> EmbeddingCache | None:
    """The cache for a run: True for the default folder, a folder, or off.

    A cache that cannot be opened at all is logged and left off.
    """
    if cache is None or cache is False:
        return None
    folder = None if cache is True else cache
    try:
        return EmbeddingCache(folder, read_only=read_only, notice=notice)
    except (OSError, sqlite3.Error) as exc:
        problem = f"the embedding cache is unavailable, running without it: {exc}"
        log.warning("%s", problem)
        if notice is not None:
            notice(problem)
        return None
