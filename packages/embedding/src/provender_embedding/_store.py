"""Where collections live: SQLite for the metadata, one float32 matrix file per collection for the vectors.

``embeddings.db`` holds the collections and their items (id, content, hash, metadata, and
the item's *slot*: its row in the matrix file). The vectors live beside it, in
``embeddings.db-vectors/<store>.<generation>.f32``: ``slots x dimension`` float32, row-major,
unit length, no header, so a new process maps the file instead of rebuilding a matrix.

Crash safety comes from one rule: a row of the matrix file that SQLite has committed is never
written again (until compaction writes a new file under a new generation). An add takes
SQLite's write lock, writes its vectors past the committed rows, fsyncs them, and only then
commits the items and the new row count in one transaction. A kill before the commit leaves
bytes past the committed count, which nothing reads and the next add overwrites; a kill after
leaves a complete add. A replaced or deleted item's old row becomes *dead*: it is zeroed
after the commit (best effort) and search drops any row SQLite no longer maps to an item.

Schema version 2 (``PRAGMA user_version``); a version-1 database (vectors as BLOBs in
``items``, what provender-embedding 0.1.0 wrote) is migrated in place on open.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from provender_embedding.errors import CollectionError

SCHEMA_VERSION = 2

_COLLECTIONS = """CREATE TABLE IF NOT EXISTS collections (
    name TEXT PRIMARY KEY, model TEXT NOT NULL, dimension INTEGER, created REAL NOT NULL,
    store TEXT NOT NULL DEFAULT '', slots INTEGER NOT NULL DEFAULT 0, dead INTEGER NOT NULL DEFAULT 0,
    generation INTEGER NOT NULL DEFAULT 0
)"""
_ITEMS = """CREATE TABLE IF NOT EXISTS {table} (
    collection TEXT NOT NULL REFERENCES collections(name) ON DELETE CASCADE,
    id TEXT NOT NULL, content TEXT, content_hash TEXT NOT NULL, metadata TEXT,
    slot INTEGER NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (collection, id)
)"""
_SLOT_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS items_slot ON items(collection, slot)"


def vectors_dir(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + "-vectors")


def matrix_path(db_path: Path, store: str, generation: int) -> Path:
    return vectors_dir(db_path) / f"{store}.{generation}.f32"


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating or migrating) the database at `path`, in autocommit mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=60.0, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA foreign_keys=ON")
    if con.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
        _upgrade(con, path)
    return con


def _upgrade(con: sqlite3.Connection, path: Path) -> None:
    con.execute("BEGIN IMMEDIATE")  # one migrator at a time; re-read the version under the lock
    try:
        version = con.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version > SCHEMA_VERSION:
            raise CollectionError(
                f"{path} has schema version {version}, written by a newer provender-embedding "
                f"(this one reads up to {SCHEMA_VERSION}); upgrade provender-embedding"
            )
        if version < SCHEMA_VERSION and "items" in tables:
            columns = {r[1] for r in con.execute("PRAGMA table_info(items)")}
            if version == 0 and "embedding" in columns:
                _migrate_v1(con, path)
            elif version != 0 or "slot" not in columns:
                raise CollectionError(f"{path} is not a provender-embedding database (unknown items table)")
        con.execute(_COLLECTIONS)
        con.execute(_ITEMS.format(table="items"))
        con.execute(_SLOT_INDEX)
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def _migrate_v1(con: sqlite3.Connection, path: Path) -> None:
    """Version 1 (BLOBs in ``items.embedding``) to 2, inside the caller's transaction.

    Each collection's vectors are written to its matrix file (slots in id order) and fsynced
    first; the tables change only at the commit. A kill before it leaves the version-1
    database as it was (the next open migrates again, into the same files).
    """
    collections = con.execute("SELECT name, dimension FROM collections").fetchall()
    for column, decl in (("store", "TEXT NOT NULL DEFAULT ''"), ("slots", "INTEGER NOT NULL DEFAULT 0")):
        con.execute(f"ALTER TABLE collections ADD COLUMN {column} {decl}")
    con.execute("ALTER TABLE collections ADD COLUMN dead INTEGER NOT NULL DEFAULT 0")
    con.execute("ALTER TABLE collections ADD COLUMN generation INTEGER NOT NULL DEFAULT 0")
    for name, dimension in collections:
        store = "m" + hashlib.sha256(name.encode()).hexdigest()[:24]  # the same files if migrated again
        rows = con.execute("SELECT id, embedding FROM items WHERE collection=? ORDER BY id", (name,))
        count = 0
        with MatrixFile(matrix_path(path, store, 0), dimension or 0) as out:
            for item_id, blob in rows:
                if dimension is None or len(blob) != 4 * dimension:
                    raise CollectionError(
                        f"{path}: item {item_id!r} of collection {name!r} has a {len(blob)}-byte vector, "
                        f"not {dimension} float32 values; nothing was migrated"
                    )
                out.append_raw(count, blob)
                count += 1
            out.sync()
        con.execute("UPDATE collections SET store=?, slots=? WHERE name=?", (store, count, name))
    con.execute(_ITEMS.format(table="items_v2"))
    con.execute(
        "INSERT INTO items_v2 SELECT collection, id, content, content_hash, metadata, "
        "ROW_NUMBER() OVER (PARTITION BY collection ORDER BY id) - 1, updated FROM items"
    )
    con.execute("DROP TABLE items")
    con.execute("ALTER TABLE items_v2 RENAME TO items")


def select_in(con: sqlite3.Connection, sql: str, name: str, keys: Iterable[Any], size: int = 500) -> list[Any]:
    """Run ``sql + " IN (...)"`` (its first parameter the collection's name) over `keys`, `size` at a time."""
    keys = list(keys)
    rows: list[Any] = []
    for start in range(0, len(keys), size):
        chunk = keys[start : start + size]
        rows.extend(con.execute(f"{sql} IN ({','.join('?' * len(chunk))})", (name, *chunk)))
    return rows


def rewrite(con: sqlite3.Connection, db_path: Path, name: str, store: str, generation: int, matrix: np.ndarray) -> None:
    """Compaction, inside the caller's write transaction: the live rows into generation + 1, fsynced,
    then the items renumbered (in slot order, so no two items ever hold one slot) and the switch."""
    live = con.execute("SELECT id, slot FROM items WHERE collection=? ORDER BY slot", (name,)).fetchall()
    slots = np.array([s for _, s in live], dtype=np.int64)
    with MatrixFile(matrix_path(db_path, store, generation + 1), matrix.shape[1]) as out:
        for start in range(0, len(slots), 65536):
            out.write(start, matrix[slots[start : start + 65536]])
        out.sync()
    con.executemany(
        "UPDATE items SET slot=? WHERE collection=? AND id=?",
        ((n, name, item_id) for n, (item_id, _) in enumerate(live)),
    )
    con.execute("UPDATE collections SET generation=?, slots=?, dead=0 WHERE name=?", (generation + 1, len(live), name))


class MatrixFile:
    """Writing rows of one matrix file (``pwrite`` at ``slot * row_bytes``)."""

    def __init__(self, path: Path, dimension: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.row_bytes = 4 * dimension
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    def append_raw(self, slot: int, data: bytes) -> None:
        os.pwrite(self._fd, data, slot * self.row_bytes)

    def write(self, slot: int, vectors: np.ndarray) -> None:
        data = np.ascontiguousarray(vectors, dtype=np.float32).tobytes()
        view, offset = memoryview(data), slot * self.row_bytes
        while view:  # pwrite may write less than asked
            done = os.pwrite(self._fd, view, offset)
            view, offset = view[done:], offset + done

    def zero(self, slots: list[int]) -> None:
        blank = bytes(self.row_bytes)
        for slot in slots:
            os.pwrite(self._fd, blank, slot * self.row_bytes)

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> MatrixFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MatrixView:
    """The committed rows of one matrix file, memory-mapped read-only and remapped as it grows."""

    def __init__(self) -> None:
        self.key: tuple[str, int, int] | None = None  # (path, rows, dimension)
        self._map: mmap.mmap | None = None
        self.array = np.zeros((0, 0), dtype=np.float32)

    def get(self, path: Path, rows: int, dimension: int) -> np.ndarray:
        key = (str(path), rows, dimension)
        if key != self.key:
            self.release()
            if rows and dimension:
                with open(path, "rb") as f:
                    size = rows * dimension * 4
                    if os.fstat(f.fileno()).st_size < size:
                        raise CollectionError(
                            f"{path} holds {os.fstat(f.fileno()).st_size} bytes, fewer than the "
                            f"{rows} committed rows need: the vectors file was truncated or replaced"
                        )
                    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
                    self._map = mmap.mmap(f.fileno(), size, flags=flags, prot=mmap.PROT_READ)
                self.array = np.frombuffer(self._map, dtype=np.float32, count=rows * dimension).reshape(rows, dimension)
            else:
                self.array = np.zeros((0, dimension), dtype=np.float32)
            self.key = key
        return self.array

    def release(self) -> None:
        self.array = np.zeros((0, 0), dtype=np.float32)
        self.key = None
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # an array handed out still points into it: the GC unmaps it later
                pass
            self._map = None
