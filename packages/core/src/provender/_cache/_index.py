"""The cache's index: an SQLite database in WAL mode under ``cache.dir``.

The index remembers what the disk cannot tell cheaply: true last-used times,
hit/miss counts and the persistent stats. It is a cache of the truth on disk:
every provender-stored entry carries its own manifest and pins are marker files,
so a lost or corrupt index is rebuilt from the files (only counters are lost).
SQLite's own locking makes each statement atomic across processes; the cache
manager's file lock serialises the compound operations (add, evict, remove).

On a full disk the index cannot be opened (WAL needs its -shm file) or written. It is
then read from a private in-memory copy (``degraded``): listing, stats, removal and
pruning still work, and what they would have written is left for the next process
(the disk is the truth; the index catches up). An index this user cannot write is a
`CacheNotWritableError` naming the file, raised before SQLite creates anything.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypedDict, TypeVar

from provender._cache._layout import check_file
from provender.errors import CacheError, CacheNotWritableError, DiskFullError

logger = logging.getLogger(__name__)
T = TypeVar("T")
LOW_SPACE = 1 << 20  # below this many free bytes, an SQLite write error is taken for a full disk

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,              -- 'hub' | 'local' | 'prompt'
    name TEXT NOT NULL,
    path TEXT NOT NULL,              -- relative to cache.dir
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    last_used REAL,
    hits INTEGER NOT NULL DEFAULT 0,
    stamp INTEGER NOT NULL DEFAULT 0, -- mtime_ns of the entry's directory when size was taken
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS entries_name ON entries(name);
CREATE INDEX IF NOT EXISTS entries_lru ON entries(last_used);
CREATE TABLE IF NOT EXISTS stats (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
STAT_NAMES = (
    "hits",
    "misses",
    "evictions",
    "bytes_evicted",
    # the remote tier (remote.url): misses it served, misses it did not have, bytes it sent, failures
    "remote_hits",
    "remote_misses",
    "bytes_from_remote",
    "remote_errors",
)
COLUMNS = ("key", "kind", "name", "path", "size", "created", "last_used", "hits", "stamp", "metadata")


class IndexRow(TypedDict):
    """One row of the ``entries`` table, as the index returns it and takes it (`COLUMNS`)."""

    key: str
    kind: Literal["hub", "local", "prompt"]
    name: str
    path: str  # relative to cache.dir
    size: int
    created: float
    last_used: float | None
    hits: int
    stamp: int  # mtime_ns of the entry's directory when size was taken
    metadata: dict[str, Any]


class _IndexCorrupt(Exception):
    """The index file is not a usable database (internal; the manager rebuilds it)."""


def is_corruption(exc: BaseException) -> bool:
    """A damaged index, as opposed to a busy one: "locked" and "busy" are OperationalErrors."""
    return isinstance(exc, _IndexCorrupt) or (
        isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)
    )


def _inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


class Index:
    """Thread-safe access to the index database of one cache directory."""

    def __init__(self, path: Path, guard: Callable[[], None] | None = None) -> None:
        self.path = path
        self._guard = guard  # called before every (re)connection: the folder is still this cache
        self._local = threading.local()
        self.degraded: CacheError | None = None  # why the index is served from a private copy
        self._memory: sqlite3.Connection | None = None
        self._memory_lock = threading.RLock()

    def _files(self) -> list[Path]:
        return [Path(f"{self.path}{suffix}") for suffix in ("", "-wal", "-shm")]

    def _unwritable(self) -> CacheNotWritableError | None:
        """The index file (or its -wal / -shm) this user cannot write: checked before SQLite creates anything."""
        for path in self._files():
            if check_file(path) and not os.access(path, os.W_OK):  # check_file refuses a planted link
                return CacheNotWritableError(
                    path,
                    "this user cannot write the cache index (fix the mode of index.db, index.db-wal, index.db-shm)",
                )
        if not self.path.exists() and not os.access(self.path.parent, os.W_OK):
            return CacheNotWritableError(self.path.parent, "the cache index cannot be created here")
        return None

    def diagnose(self, exc: BaseException) -> CacheError | None:
        """The clear error behind an SQLite failure to write, or None if it is something else."""
        msg = str(exc).lower()
        if not isinstance(exc, sqlite3.OperationalError) or not any(
            word in msg for word in ("full", "disk i/o", "readonly", "unable to open")
        ):
            return None
        unwritable = self._unwritable()
        if unwritable is not None:
            return unwritable
        if "full" in msg or shutil.disk_usage(self.path.parent).free < LOW_SPACE:
            return DiskFullError(self.path)
        if "readonly" in msg:
            return CacheNotWritableError(self.path, str(exc))
        return None

    def degrade(self, reason: CacheError, source: sqlite3.Connection | None = None) -> sqlite3.Connection:
        """Serve the index from a private in-memory copy from now on (nothing more is written to disk)."""
        with self._memory_lock:
            if self._memory is not None:
                return self._memory
            memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            try:
                if source is None and self.path.exists():
                    uri = "file:" + self.path.as_posix().replace("?", "%3f").replace("#", "%23") + "?immutable=1"
                    source = sqlite3.connect(uri, uri=True)
                    try:
                        source.backup(memory)
                    finally:
                        source.close()
                elif source is not None:
                    source.backup(memory)
            except sqlite3.DatabaseError as exc:
                logger.warning("could not read the cache index %s (%s): listing from the files alone", self.path, exc)
            memory.executescript(_SCHEMA)
            logger.warning("%s: working from a read-only view of the cache index; it catches up later", reason)
            self.degraded = reason
            self._memory = memory
            return memory

    def _connect(self) -> sqlite3.Connection:
        if self._guard is not None:
            self._guard()
        unwritable = self._unwritable()
        if unwritable is not None:
            raise unwritable
        deadline = time.monotonic() + 60.0
        while True:
            con = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=True)
            try:
                con.execute("PRAGMA busy_timeout=60000")  # first: the statements below then wait, not fail
                con.execute("PRAGMA journal_mode=WAL")
                con.execute("PRAGMA synchronous=NORMAL")  # durable against process crashes; fsync at checkpoints
                con.executescript(_SCHEMA)
                row = con.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
                if row is None:
                    con.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                elif row[0] != str(SCHEMA_VERSION):
                    raise _IndexCorrupt(f"index schema {row[0]}, expected {SCHEMA_VERSION}")
                self._local.inode = _inode(self.path)
                return con
            except sqlite3.OperationalError as exc:
                con.close()
                # busy or locked (another process is setting the file up): wait, it is not corruption
                if ("locked" in str(exc) or "busy" in str(exc)) and time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                reason = self.diagnose(exc)
                if isinstance(reason, DiskFullError):  # WAL needs room for its -shm: read a private copy
                    return self.degrade(reason)
                if reason is not None:
                    raise reason from None
                raise
            except sqlite3.DatabaseError as exc:
                con.close()
                raise _IndexCorrupt(str(exc)) from exc
            except BaseException:
                con.close()
                raise

    @property
    def con(self) -> sqlite3.Connection:
        """This thread's connection; a new one if index.db was replaced (rebuilt by another process)."""
        if self._memory is not None:
            return self._memory
        con = getattr(self._local, "con", None)
        if con is not None and _inode(self.path) != self._local.inode:
            con.close()
            con = None
        if con is None:
            con = self._local.con = self._connect()
        return con

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    def transaction(self) -> Transaction:
        """BEGIN IMMEDIATE ... COMMIT: a write transaction other processes wait for
        (``with index.transaction() as con:``).

        A full disk or a read-only file raises DiskFullError / CacheNotWritableError.
        """
        return Transaction(self)

    def write(self, fn: Callable[[sqlite3.Connection], T], *, soft: bool = False) -> T:
        """Run `fn(con)` in a write transaction. ``soft``: on a full disk, apply it to a private copy
        instead (this process sees it; the disk is the truth the next process rebuilds from)."""
        try:
            with self.transaction() as con:
                return fn(con)
        except DiskFullError as exc:
            if not soft or self._memory is not None:
                raise
            source = getattr(self._local, "con", None)
            self.degrade(exc, source)
            with self.transaction() as con:
                return fn(con)

    # -- entries -----------------------------------------------------------------------

    def get(self, key: str) -> IndexRow | None:
        row = self.con.execute(f"SELECT {', '.join(COLUMNS)} FROM entries WHERE key=?", (key,)).fetchone()
        return _row(row) if row else None

    def by_name(self, name: str) -> list[IndexRow]:
        rows = self.con.execute(f"SELECT {', '.join(COLUMNS)} FROM entries WHERE name=?", (name,)).fetchall()
        return [_row(r) for r in rows]

    def all(self) -> list[IndexRow]:
        return [_row(r) for r in self.con.execute(f"SELECT {', '.join(COLUMNS)} FROM entries")]

    def stamps(self) -> dict[str, int]:
        """Each entry's key and stamp, without parsing its metadata (`Catalog.reconcile` needs no more)."""
        return dict(self.con.execute("SELECT key, stamp FROM entries").fetchall())

    def lru_order(self) -> list[IndexRow]:
        """Entries least recently used first (never-used entries by creation time)."""
        sql = f"SELECT {', '.join(COLUMNS)} FROM entries ORDER BY COALESCE(last_used, created), created"
        return [_row(r) for r in self.con.execute(sql)]

    def total_size(self, kind: str | None = None) -> int:
        """Bytes of every entry, or of the entries of one `kind` (``prompt``: the saved prompt caches)."""
        if kind is None:
            return int(self.con.execute("SELECT COALESCE(SUM(size), 0) FROM entries").fetchone()[0])
        sql = "SELECT COALESCE(SUM(size), 0) FROM entries WHERE kind=?"
        return int(self.con.execute(sql, (kind,)).fetchone()[0])

    def of_kind(self, kind: str) -> list[IndexRow]:
        """The rows of one kind (``prompt``), least recently used first."""
        sql = f"SELECT {', '.join(COLUMNS)} FROM entries WHERE kind=? ORDER BY COALESCE(last_used, created), created"
        return [_row(r) for r in self.con.execute(sql, (kind,))]

    def touch(self, key: str) -> None:
        """Mark an entry used and count it on the entry alone (a saved prompt cache read): the cache's
        hits and misses, which are the models', are not changed."""
        sql = "UPDATE entries SET last_used=?, hits=hits+1 WHERE key=?"
        self.write(lambda con: con.execute(sql, (time.time(), key)), soft=True)

    def upsert(self, con: sqlite3.Connection, entry: IndexRow) -> None:
        values: dict[str, Any] = dict(entry)
        values["metadata"] = json.dumps(values.get("metadata") or {}, sort_keys=True, default=str)
        con.execute(
            f"INSERT INTO entries ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
            "ON CONFLICT(key) DO UPDATE SET kind=excluded.kind, name=excluded.name, path=excluded.path, "
            "size=excluded.size, stamp=excluded.stamp, metadata=excluded.metadata, "
            "last_used=COALESCE(excluded.last_used, entries.last_used)",
            tuple(values.get(c, 0 if c in ("hits", "stamp") else None) for c in COLUMNS),
        )

    def delete(self, con: sqlite3.Connection, key: str) -> None:
        con.execute("DELETE FROM entries WHERE key=?", (key,))

    def record_hit(self, key: str) -> bool:
        """Mark an entry used and count a hit. False if the key is not indexed."""
        return self.hit(key, lambda _path: True) is not None

    def hit(self, key: str, exists: Callable[[str], bool]) -> tuple[str, str, dict[str, Any]] | None:
        """The hot path of a lookup, in one short write transaction.

        Marks the entry used, counts the hit and returns (kind, path, metadata); None if
        the key is not indexed. An indexed entry whose files vanished (``exists(path)``
        is False) leaves the index, and None is returned.
        """

        def update(con: sqlite3.Connection) -> Any:
            row = con.execute(
                "UPDATE entries SET last_used=?, hits=hits+1 WHERE key=? RETURNING kind, path, metadata",
                (time.time(), key),
            ).fetchone()
            if row is not None and not exists(row[1]):
                con.execute("DELETE FROM entries WHERE key=?", (key,))
                return None
            if row is not None:
                self.add_stat(con, "hits")
            return row

        row = self.write(update, soft=True)  # a lookup works on a full disk
        return None if row is None else (row[0], row[1], json.loads(row[2]))

    def add_stat(self, con: sqlite3.Connection, name: str, amount: int = 1) -> None:
        con.execute(
            "INSERT INTO stats VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value=value+excluded.value", (name, amount)
        )

    def stats(self) -> dict[str, int]:
        found = dict(self.con.execute("SELECT name, value FROM stats").fetchall())
        return {name: int(found.get(name, 0)) for name in STAT_NAMES}

    def set_meta(self, name: str, value: str) -> None:
        """Write a meta value, only if it changed (reading must not need to write)."""
        if self.get_meta(name) != value:
            self.write(lambda con: con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value)), soft=True)

    def get_meta(self, name: str) -> str | None:
        row = self.con.execute("SELECT value FROM meta WHERE name=?", (name,)).fetchone()
        return row[0] if row else None


class Transaction:
    """`Index.transaction`: a class, not a generator context manager, because every cache hit
    runs one (the generator machinery costs as much as two of its system calls)."""

    __slots__ = ("_con", "_index")

    def __init__(self, index: Index) -> None:
        self._index = index

    def __enter__(self) -> sqlite3.Connection:
        con = self._con = self._index.con
        try:
            con.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            self._raise_reason(exc)
            raise
        return con

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            try:
                self._con.execute("COMMIT")
                return
            except BaseException as failed:
                self._roll_back(failed)
                raise
        self._roll_back(exc)  # returns: the exception goes on as it is

    def _roll_back(self, exc: BaseException) -> None:
        if self._con.in_transaction:
            try:
                self._con.execute("ROLLBACK")
            except sqlite3.Error:
                pass
        self._raise_reason(exc)

    def _raise_reason(self, exc: BaseException) -> None:
        """A full disk or an unwritable index: raise what it means for the cache instead."""
        reason = self._index.diagnose(exc)
        if reason is not None:
            raise reason from exc


def _row(row: tuple[Any, ...]) -> IndexRow:
    entry = dict(zip(COLUMNS, row, strict=True))
    entry["metadata"] = json.loads(entry["metadata"] or "{}")
    return entry  # type: ignore[return-value]  # the columns are IndexRow's keys
