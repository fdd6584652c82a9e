"""Collections: embeddings stored in SQLite, with content hashes and cosine similarity search.

One database (default ``<data.dir>/embeddings.db``) holds any number of named collections.
Each collection is tied to the model that embedded it. Unchanged texts (same sha256 of
the content) are not embedded again. Search is exact: the collection's vectors are
loaded into one float32 matrix and compared with a matrix-vector product.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from provender_embedding._embedder import Embedder
from provender_embedding.errors import CollectionError, CollectionNotFoundError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS collections (
    name TEXT PRIMARY KEY, model TEXT NOT NULL, dimension INTEGER, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    collection TEXT NOT NULL REFERENCES collections(name) ON DELETE CASCADE,
    id TEXT NOT NULL, content TEXT, content_hash TEXT NOT NULL, metadata TEXT,
    embedding BLOB NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (collection, id)
);
"""


@dataclass(frozen=True)
class Hit:
    """One result of `Collection.similar`: cosine ``score`` in [-1, 1], higher is closer."""

    id: str
    score: float
    content: str | None
    metadata: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "content": self.content, "metadata": self.metadata}


@dataclass
class AddResult:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    ids: list[str] = field(default_factory=list)


def default_db_path() -> Path:
    from provender import load_settings

    return load_settings().data.dir / "embeddings.db"


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def content_id(digest: str, known: dict[str, str]) -> str:
    """The id of an item given without one: the first 16 hex digits of its content's sha256.

    The same text always gets the same id (stored once), and a different text never takes
    an existing item's id: if the short id is taken by other content, the whole hash is used.
    """
    short = digest[:16]
    return short if known.get(short, digest) == digest else digest


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, timeout=60.0, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA foreign_keys=ON")
    con.executescript(_SCHEMA)
    return con


class Collection:
    """A named, persistent set of embedded texts.

    ``Collection(name, model)`` opens or creates it; a new collection needs a model, and
    an existing one keeps its own (naming another is an error, as vectors of two models
    do not compare).
    """

    def __init__(
        self,
        name: str,
        model: str | None = None,
        *,
        db_path: str | Path | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise CollectionError(f"invalid collection name {name!r}")
        self.name = name
        self.db_path = Path(db_path) if db_path is not None else default_db_path()
        self._con = _connect(self.db_path)
        row = self._con.execute("SELECT model FROM collections WHERE name=?", (name,)).fetchone()
        if row is None:
            if model is None and embedder is None:
                raise CollectionNotFoundError(name)
            self.model = model or (embedder.model if embedder else "")
            self._con.execute("INSERT INTO collections VALUES (?, ?, NULL, ?)", (name, self.model, time.time()))
        else:
            self.model = row[0]
            if model is not None and model != self.model:
                raise CollectionError(
                    f"collection {name!r} was embedded with {self.model!r}, not {model!r}; "
                    "use that model or a new collection"
                )
        self._embedder = embedder
        self._matrix: tuple[tuple[int, float], list[str], np.ndarray] | None = None

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = Embedder(self.model)
        return self._embedder

    # -- writing -------------------------------------------------------------------------

    def add(self, id: str, text: str, metadata: dict[str, Any] | None = None, *, store_content: bool = True) -> bool:
        """Embed and store one text; False if it was already stored unchanged."""
        result = self.add_many([(id, text, metadata)], store_content=store_content)
        return result.unchanged == 0

    def add_many(
        self,
        items: Iterable[Any],
        *,
        batch_size: int = 32,
        store_content: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> AddResult:
        """Store many items: a text, ``(id, text)``, ``(id, text, metadata)`` or ``{"id", "text", "metadata"}``.

        An item without an id (a bare text, ``id`` None or absent) gets one from its content
        (`content_id`): it never replaces another item, and the same text is stored once. An
        existing item is updated only when the caller names its id. Every item is checked
        before anything is embedded or written; texts whose content is unchanged are skipped.
        Writes happen one batch per transaction, so an interruption keeps every batch
        already written and loses nothing stored before.
        """
        known = dict(self._con.execute("SELECT id, content_hash FROM items WHERE collection=?", (self.name,)))
        result = AddResult()
        seen: dict[str, str] = {}
        todo = []
        for n, item in enumerate(items):
            item_id, text, meta = _normalise_item(item, n)
            digest = content_hash(text)
            if item_id is None:
                item_id = content_id(digest, known)
                if seen.get(item_id) == digest:  # the same text twice, without ids: stored once
                    result.ids.append(item_id)
                    result.unchanged += 1
                    continue
            if item_id in seen:
                raise CollectionError(f"id {item_id!r} appears twice in the input")
            seen[item_id] = digest
            result.ids.append(item_id)
            if known.get(item_id) == digest:
                result.unchanged += 1
            else:
                todo.append((item_id, text, meta))
        if progress is not None and result.unchanged:
            progress(result.unchanged)
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            vectors = self.embedder.embed([t for _, t, _ in batch], batch_size=batch_size)
            self._check_dimension(vectors.shape[1])
            now = time.time()
            with self._transaction() as con:
                for (item_id, text, meta), vector in zip(batch, vectors, strict=True):
                    existed = item_id in known
                    con.execute(
                        "INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            self.name,
                            item_id,
                            text if store_content else None,
                            content_hash(text),
                            json.dumps(meta) if meta is not None else None,
                            vector.astype(np.float32).tobytes(),
                            now,
                        ),
                    )
                    if existed:
                        result.updated += 1
                    else:
                        result.added += 1
            if progress is not None:
                progress(len(batch))
        self._matrix = None
        return result

    def delete(self, id: str) -> bool:
        cur = self._con.execute("DELETE FROM items WHERE collection=? AND id=?", (self.name, id))
        self._matrix = None
        return cur.rowcount > 0

    def drop(self) -> None:
        """Delete the collection and everything in it."""
        with self._transaction() as con:
            con.execute("DELETE FROM items WHERE collection=?", (self.name,))
            con.execute("DELETE FROM collections WHERE name=?", (self.name,))
        self._matrix = None

    # -- reading -------------------------------------------------------------------------

    def count(self) -> int:
        return int(self._con.execute("SELECT COUNT(*) FROM items WHERE collection=?", (self.name,)).fetchone()[0])

    def get(self, id: str) -> dict[str, Any] | None:
        row = self._con.execute(
            "SELECT content, metadata, embedding FROM items WHERE collection=? AND id=?", (self.name, id)
        ).fetchone()
        if row is None:
            return None
        return {
            "id": id,
            "content": row[0],
            "metadata": json.loads(row[1]) if row[1] else None,
            "embedding": np.frombuffer(row[2], dtype=np.float32),
        }

    def similar(self, query: str, n: int = 5) -> list[Hit]:
        """The `n` stored items closest to `query` by cosine similarity, closest first."""
        if not isinstance(query, str):
            raise CollectionError("the query must be a string")
        return self.similar_by_vector(self.embedder.embed([query])[0], n)

    def similar_by_id(self, id: str, n: int = 5) -> list[Hit]:
        item = self.get(id)
        if item is None:
            raise CollectionError(f"no item {id!r} in collection {self.name!r}")
        return [h for h in self.similar_by_vector(item["embedding"], n + 1) if h.id != id][:n]

    def similar_by_vector(self, vector: np.ndarray, n: int = 5) -> list[Hit]:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise CollectionError(f"n must be an integer >= 1, not {n!r}")
        ids, matrix = self._load_matrix()
        if not ids:
            return []
        query = np.asarray(vector, dtype=np.float32)
        if query.shape != (matrix.shape[1],):
            raise CollectionError(f"query has dimension {query.shape}, the collection {matrix.shape[1]}")
        scores = matrix @ (query / max(float(np.linalg.norm(query)), 1e-12))
        if n < len(ids):  # partial selection, then sort just the n best
            best = np.argpartition(-scores, n - 1)[:n]
            top = best[np.argsort(-scores[best])]
        else:
            top = np.argsort(-scores)
        hits = []
        for i in top:
            row = self._con.execute(
                "SELECT content, metadata FROM items WHERE collection=? AND id=?", (self.name, ids[i])
            ).fetchone()
            hits.append(Hit(ids[i], float(scores[i]), row[0], json.loads(row[1]) if row[1] else None))
        return hits

    def _load_matrix(self) -> tuple[list[str], np.ndarray]:
        version = self._con.execute(
            "SELECT COUNT(*), COALESCE(MAX(updated), 0) FROM items WHERE collection=?", (self.name,)
        ).fetchone()
        if self._matrix is None or self._matrix[0] != tuple(version):
            ids, blobs = [], []
            for item_id, blob in self._con.execute(
                "SELECT id, embedding FROM items WHERE collection=? ORDER BY id", (self.name,)
            ):
                ids.append(item_id)
                blobs.append(blob)
            matrix = (
                np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(ids), -1)
                if ids
                else np.zeros((0, 0), dtype=np.float32)
            )
            norms = np.linalg.norm(matrix, axis=1, keepdims=True) if ids else None
            if norms is not None:
                matrix = matrix / np.maximum(norms, 1e-12)
            self._matrix = (tuple(version), ids, matrix)  # type: ignore[assignment]
        return self._matrix[1], self._matrix[2]

    def _check_dimension(self, dim: int) -> None:
        row = self._con.execute("SELECT dimension FROM collections WHERE name=?", (self.name,)).fetchone()
        if row is None:
            raise CollectionError(f"collection {self.name!r} was dropped")
        if row[0] is None:
            self._con.execute("UPDATE collections SET dimension=? WHERE name=?", (dim, self.name))
        elif row[0] != dim:
            raise CollectionError(f"collection {self.name!r} holds {row[0]}-dimensional vectors, got {dim}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._con.execute("BEGIN IMMEDIATE")
        try:
            yield self._con
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")

    @staticmethod
    def list(db_path: str | Path | None = None) -> list[dict[str, Any]]:
        """Every collection: name, model, dimension, count, created."""
        con = _connect(Path(db_path) if db_path is not None else default_db_path())
        rows = con.execute(
            "SELECT c.name, c.model, c.dimension, c.created, COUNT(i.id) FROM collections c "
            "LEFT JOIN items i ON i.collection = c.name GROUP BY c.name ORDER BY c.name"
        ).fetchall()
        con.close()
        return [{"name": r[0], "model": r[1], "dimension": r[2], "created": _iso(r[3]), "count": r[4]} for r in rows]

    @staticmethod
    def exists(name: str, db_path: str | Path | None = None) -> bool:
        return any(c["name"] == name for c in Collection.list(db_path))

    def close(self) -> None:
        self._con.close()

    def __repr__(self) -> str:
        return f"Collection({self.name!r}, model={self.model!r})"


def _iso(timestamp: float) -> str:
    """ISO 8601 in UTC, as `provender cache ls` shows times."""
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC).isoformat()


def _normalise_item(item: Any, n: int) -> tuple[str | None, str, dict[str, Any] | None]:
    if isinstance(item, str):
        return None, item, None
    if isinstance(item, dict):
        item_id, text, meta = item.get("id"), item.get("text", item.get("content")), item.get("metadata")
    elif isinstance(item, (tuple, list)) and len(item) in (2, 3):
        item_id, text, meta = item[0], item[1], item[2] if len(item) == 3 else None
    else:
        raise CollectionError(f"item {n}: expected (id, text), (id, text, metadata) or a dict, got {item!r:.60}")
    if isinstance(item_id, int) and not isinstance(item_id, bool):
        item_id = str(item_id)
    if item_id is not None and (not isinstance(item_id, str) or not item_id):
        raise CollectionError(f"item {n}: the id must be a non-empty string or None, got {item_id!r}")
    if not isinstance(text, str):
        raise CollectionError(f"item {n} ({item_id}): the text must be a string, got {type(text).__name__}")
    if meta is not None and not isinstance(meta, dict):
        raise CollectionError(f"item {n} ({item_id}): metadata must be a JSON object")
    return item_id, text, meta
