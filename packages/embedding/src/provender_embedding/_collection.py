"""Collections: texts and their embeddings, kept on disk, searched by cosine similarity.

One database (default ``<data.dir>/embeddings.db``) holds any number of named collections,
each tied to the model that embedded it. SQLite keeps the items (id, content, sha256,
metadata); each collection's vectors are one float32 matrix file beside it, memory-mapped
by every process that searches (`provender_embedding._store` says how writes stay
crash-safe). Search is exact by default (one matrix-vector product over the mapped file);
``approximate=True`` uses an HNSW index (the ``ann`` extra). Unchanged texts (same sha256)
are not embedded again.
"""

from __future__ import annotations

import datetime
import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from provender_embedding._embedder import Embedder
from provender_embedding._filters import Where, where_sql
from provender_embedding._items import (
    AddResult,
    Hit,
    Item,
    best_hits,
    check_embeddings,
    check_id,
    check_ids,
    check_n,
    check_vector_dimensions,
    content_hash,
    content_id,
    normalise_item,
    top_k,
    unit_vector,
)
from provender_embedding._search import State as _State
from provender_embedding._search import search_as_seen
from provender_embedding._store import MatrixFile, MatrixView, connect, matrix_path, rewrite, select_in, vectors_dir
from provender_embedding.errors import CollectionError, CollectionNotFoundError

__all__ = ["AddResult", "Collection", "Hit", "content_hash", "content_id", "default_db_path"]

PRECOMPUTED_CHUNK = 8192  # items given with their vectors: written this many per transaction


def default_db_path() -> Path:
    from provender import load_settings

    return load_settings().data.dir / "embeddings.db"


class Collection:
    """A named, persistent set of embedded texts (or of vectors given precomputed).

    ``Collection(name, model)`` opens or creates it; a new collection needs a model, and
    an existing one keeps its own (naming another is an error, as vectors of two models
    do not compare). ``Collection(name, dimension=384)`` creates one without a model, for
    vectors given precomputed (searched with `similar_by_vector`).
    """

    def __init__(
        self,
        name: str,
        model: str | None = None,
        *,
        db_path: str | Path | None = None,
        embedder: Embedder | None = None,
        dimension: int | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise CollectionError(f"invalid collection name {name!r}")
        if dimension is not None and (isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 1):
            raise CollectionError(f"dimension must be an integer >= 1, not {dimension!r}")
        self.name = name
        self.db_path = Path(db_path) if db_path is not None else default_db_path()
        self._con = connect(self.db_path)
        row = self._con.execute("SELECT model, dimension FROM collections WHERE name=?", (name,)).fetchone()
        if row is None:
            if model is None and embedder is None and dimension is None:
                raise CollectionNotFoundError(name)
            self._con.execute(
                "INSERT OR IGNORE INTO collections (name, model, dimension, created, store) VALUES (?, ?, ?, ?, ?)",
                (name, model or (embedder.model if embedder else ""), dimension, time.time(), uuid.uuid4().hex),
            )
            row = self._con.execute("SELECT model, dimension FROM collections WHERE name=?", (name,)).fetchone()
        self.model: str = row[0]
        if model is not None and model != self.model:
            raise CollectionError(
                f"collection {name!r} was embedded with {self.model!r}, not {model!r}; "
                "use that model or a new collection"
            )
        if dimension is not None and row[1] is not None and row[1] != dimension:
            raise CollectionError(f"collection {name!r} holds {row[1]}-dimensional vectors, not {dimension}")
        self._embedder = embedder
        self._view = MatrixView()
        self._ann: Any = None
        self._seen: tuple[_State, np.ndarray] | None = None  # the last search's state and rows (`_search`)

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            if not self.model:
                raise CollectionError(
                    f"collection {self.name!r} has no model (its vectors were given precomputed): "
                    "add items with embedding= and query with similar_by_vector"
                )
            self._embedder = Embedder(self.model)
        return self._embedder

    # -- writing -------------------------------------------------------------------------

    def add(
        self,
        id: str,
        text: str | None = None,
        metadata: dict[str, Any] | None = None,
        *,
        embedding: Sequence[float] | np.ndarray | None = None,
        store_content: bool = True,
    ) -> bool:
        """Store one item, embedding `text` unless `embedding` is given; False if already stored unchanged."""
        item = {"id": id, "text": text, "metadata": metadata, "embedding": embedding}
        return self.add_many([item], store_content=store_content).unchanged == 0

    def add_many(
        self,
        items: Iterable[Any],
        *,
        embeddings: Sequence[Sequence[float]] | np.ndarray | None = None,
        batch_size: int = 32,
        store_content: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> AddResult:
        """Store many items: a text, ``(id, text)``, ``(id, text, metadata)`` or a dict
        ``{"id", "text", "metadata", "embedding"}``.

        Vectors given (a dict's ``embedding``, or ``embeddings=``: one row per item) are
        stored as given, normalised to unit length, and must have the collection's dimension;
        the others are embedded with the collection's model. An item without an id gets one
        from its content (`content_id`): it never replaces another item, and the same content
        is stored once. An existing item is updated only when the caller names its id. Every
        item is checked before anything is embedded or written; unchanged items are skipped.
        Each batch is one transaction: an interruption keeps every batch already written and
        loses nothing stored before.
        """
        items = list(items)
        rows = check_embeddings(embeddings, len(items))
        given = [
            normalise_item(item, n, None if rows is None else rows[n], checked=True) for n, item in enumerate(items)
        ]
        check_vector_dimensions(given, self._state().dimension, self.name)
        wanted = {i.id for i in given if i.id is not None} | {i.digest[:16] for i in given if i.id is None}
        known = self._hashes(wanted)
        result = AddResult()
        seen: dict[str, str] = {}
        todo: list[Item] = []
        for item in given:
            if item.id is None:  # from the content's hash (the text's, or the text's and the vector's)
                item.id = content_id(item.digest, known)
                if seen.get(item.id) == item.digest:  # the same content twice, without ids: stored once
                    result.ids.append(item.id)
                    result.unchanged += 1
                    continue
            if item.id in seen:
                raise CollectionError(f"id {item.id!r} appears twice in the input")
            seen[item.id] = item.digest
            result.ids.append(item.id)
            if known.get(item.id) == item.digest:
                result.unchanged += 1
            else:
                todo.append(item)
        if progress is not None and result.unchanged:
            progress(result.unchanged)
        ready = [i for i in todo if i.vector is not None]
        for start in range(0, len(ready), PRECOMPUTED_CHUNK):
            batch = ready[start : start + PRECOMPUTED_CHUNK]
            vectors = np.stack([i.vector for i in batch if i.vector is not None])
            self._write(batch, vectors, store_content, known, result, "given")
            if progress is not None:
                progress(len(batch))
        texts = [i for i in todo if i.vector is None]
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            vectors = self.embedder.embed([i.text or "" for i in batch], batch_size=batch_size)
            self._write(batch, vectors, store_content, known, result, f"model {self.model!r} gave")
            if progress is not None:
                progress(len(batch))
        return result

    def delete(self, id: str) -> bool:
        """Delete one item; False if there was none with this id."""
        return self.delete_many([check_id(id)]) == 1

    def delete_many(self, ids: Iterable[str]) -> int:
        """Delete these items (one transaction); the number that existed."""
        ids = check_ids(ids)
        with self._transaction() as con:
            state = self._state()
            slots = self._slots_of(ids)
            select_in(con, "DELETE FROM items WHERE collection=? AND id", self.name, ids)
            con.execute("UPDATE collections SET dead = dead + ? WHERE name=?", (len(slots), self.name))
        self._zero(state, list(slots.values()))
        return len(slots)

    def drop(self) -> None:
        """Delete the collection and everything in it (its vectors files too)."""
        with self._transaction() as con:
            state = self._state()
            con.execute("DELETE FROM items WHERE collection=?", (self.name,))
            con.execute("DELETE FROM collections WHERE name=?", (self.name,))
        self._seen = None
        self._view.release()
        self._ann = None
        for path in vectors_dir(self.db_path).glob(f"{state.store}.*"):
            path.unlink(missing_ok=True)

    def compact(self) -> None:
        """Rewrite the vectors file without the rows of deleted and replaced items.

        The live rows go to a new file (the next generation), fsynced before one transaction
        renumbers the items and switches to it; the old file is removed after. Runs by itself
        when over half the rows of a large collection are dead.
        """
        with self._transaction() as con:
            state = self._state()
            rewrite(con, self.db_path, self.name, state.store, state.generation, self._matrix(state))
        self._seen = None
        self._view.release()
        for path in vectors_dir(self.db_path).glob(f"{state.store}.{state.generation}.*"):
            path.unlink(missing_ok=True)

    # -- reading -------------------------------------------------------------------------

    def count(self) -> int:
        return int(self._con.execute("SELECT COUNT(*) FROM items WHERE collection=?", (self.name,)).fetchone()[0])

    @property
    def dimension(self) -> int | None:
        """The length of the collection's vectors (None until the first is stored)."""
        return self._state().dimension

    def get(self, id: str) -> dict[str, Any] | None:
        """The item's id, content, metadata and embedding; None if there is none with this id."""
        check_id(id)
        with self._snapshot():
            return self._get(id)

    def _get(self, id: str) -> dict[str, Any] | None:
        row = self._con.execute(
            "SELECT content, metadata, slot FROM items WHERE collection=? AND id=?", (self.name, id)
        ).fetchone()
        if row is None:
            return None
        return {
            "id": id,
            "content": row[0],
            "metadata": json.loads(row[1]) if row[1] else None,
            "embedding": np.array(self._matrix()[row[2]]),
        }

    def similar(self, query: str, n: int = 5, *, where: Where | None = None, approximate: bool = False) -> list[Hit]:
        """The `n` stored items closest to `query` by cosine similarity, closest first.

        `where` keeps only items whose metadata has these values (see `_filters`);
        `approximate` searches the HNSW index instead of every vector (the ``ann`` extra).
        """
        if not isinstance(query, str):
            raise CollectionError("the query must be a string")
        check_n(n)
        return self.similar_by_vector(self.embedder.embed([query])[0], n, where=where, approximate=approximate)

    def similar_by_id(self, id: str, n: int = 5, *, where: Where | None = None, approximate: bool = False) -> list[Hit]:
        item = self.get(id)
        if item is None:
            raise CollectionError(f"no item {id!r} in collection {self.name!r}")
        hits = self.similar_by_vector(item["embedding"], n + 1, where=where, approximate=approximate)
        return [h for h in hits if h.id != id][:n]

    def similar_by_vector(
        self,
        vector: Sequence[float] | np.ndarray,
        n: int = 5,
        *,
        where: Where | None = None,
        approximate: bool = False,
    ) -> list[Hit]:
        check_n(n)
        if self._seen is not None and where is None and not approximate and not self._con.in_transaction:
            hits = search_as_seen(self._con, self.name, *self._seen, vector, n)  # one statement, no transaction
            if hits is not None:
                return hits
        with self._snapshot():  # the state, the mapped rows and the items they hold: one view of the database
            return self._similar_by_vector(vector, n, where, approximate)

    def _similar_by_vector(
        self, vector: Sequence[float] | np.ndarray, n: int, where: Where | None, approximate: bool
    ) -> list[Hit]:
        clause, params = where_sql(where)
        self._seen = None  # no reference to the old mapping while it is replaced
        state = self._state()
        matrix = self._matrix(state)
        self._seen = (state, matrix)
        if matrix.shape[0] == 0:
            return []
        query = unit_vector(vector, "the query")
        spare = 16 if state.dead else 0  # dead rows (zeroed) can rank among the best: ask for a few more
        if query.shape[0] != matrix.shape[1]:
            raise CollectionError(
                f"the query has dimension {query.shape[0]}, the collection {self.name!r} {matrix.shape[1]}"
            )
        if clause:
            slots = np.fromiter(
                (
                    r[0]
                    for r in self._con.execute(
                        f"SELECT slot FROM items WHERE collection=? AND slot < ?{clause}",
                        (self.name, matrix.shape[0], *params),
                    )
                ),
                dtype=np.int64,
            )
            if not len(slots):
                return []
            scores = matrix[slots] @ query
            return best_hits(n, len(slots), lambda k: top_k(scores, k, slots), self._rows, spare=0)  # live rows only
        if approximate:
            if self._ann is None:
                from provender_embedding._ann import ApproximateIndex

                self._ann = ApproximateIndex()
            path = matrix_path(self.db_path, state.store, state.generation)
            return best_hits(n, matrix.shape[0], lambda k: self._ann.search(path, matrix, query, k), self._rows, spare)
        scores = matrix @ query
        return best_hits(n, matrix.shape[0], lambda k: top_k(scores, k, None), self._rows, spare)

    # -- internals -----------------------------------------------------------------------

    def _hashes(self, ids: Iterable[str]) -> dict[str, str]:
        return dict(
            select_in(self._con, "SELECT id, content_hash FROM items WHERE collection=? AND id", self.name, ids)
        )

    def _slots_of(self, ids: Iterable[str]) -> dict[str, int]:
        return dict(select_in(self._con, "SELECT id, slot FROM items WHERE collection=? AND id", self.name, ids))

    def _rows(self, slots: Iterable[int]) -> dict[int, tuple[str, str | None, str | None]]:
        sql = "SELECT slot, id, content, metadata FROM items WHERE collection=? AND slot"
        return {row[0]: row[1:] for row in select_in(self._con, sql, self.name, slots)}

    def _state(self) -> _State:
        row = self._con.execute(
            "SELECT store, generation, slots, dead, dimension FROM collections WHERE name=?", (self.name,)
        ).fetchone()
        if row is None:
            raise CollectionError(f"collection {self.name!r} was dropped")
        return _State(*row)

    def _matrix(self, state: _State | None = None) -> np.ndarray:
        """The committed rows of the vectors file, mapped (remapped when another process added rows)."""
        for attempt in range(3):
            state = state if state is not None and attempt == 0 else self._state()
            try:
                return self._view.get(
                    matrix_path(self.db_path, state.store, state.generation), state.slots, state.dimension or 0
                )
            except FileNotFoundError:  # compacted by another process between reading the state and opening
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _write(
        self,
        batch: list[Item],
        vectors: np.ndarray,
        store_content: bool,
        known: dict[str, str],
        result: AddResult,
        source: str,
    ) -> None:
        """One transaction: the vectors past the committed rows, fsynced, then the items and the row count."""
        size = int(vectors.shape[1])
        now = time.time()
        with self._transaction() as con:
            state = self._state()
            if state.dimension is None:
                con.execute("UPDATE collections SET dimension=? WHERE name=?", (size, self.name))
            elif state.dimension != size:
                raise CollectionError(
                    f"{source} {size}-dimensional vectors; collection {self.name!r} "
                    f"holds {state.dimension}-dimensional ones"
                )
            old = self._slots_of([i.id for i in batch if i.id is not None])
            with MatrixFile(matrix_path(self.db_path, state.store, state.generation), size) as out:
                out.write(state.slots, vectors)
                out.sync()
            con.executemany(
                "INSERT OR REPLACE INTO items (collection, id, content, content_hash, metadata, slot, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    (
                        self.name,
                        item.id,
                        item.text if store_content else None,
                        item.digest,
                        json.dumps(item.metadata) if item.metadata is not None else None,
                        state.slots + n,
                        now,
                    )
                    for n, item in enumerate(batch)
                ),
            )
            con.execute(
                "UPDATE collections SET slots=?, dead=dead+? WHERE name=?",
                (state.slots + len(batch), len(old), self.name),
            )
        for item in batch:
            assert item.id is not None
            known[item.id] = item.digest
        result.updated += len(old)
        result.added += len(batch) - len(old)
        self._zero(state, list(old.values()))

    def _zero(self, state: _State, slots: list[int]) -> None:
        """Blank the rows of deleted and replaced items (search drops them anyway), compacting past half dead."""
        if slots and state.dimension:
            try:
                with MatrixFile(matrix_path(self.db_path, state.store, state.generation), state.dimension) as out:
                    out.zero(slots)
            except FileNotFoundError:  # compacted meanwhile: the rows are gone already
                pass
        now = self._state()
        if now.dead >= 1024 and 2 * now.dead > now.slots:
            self.compact()

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """A read transaction (WAL: a consistent snapshot, blocking no writer)."""
        if self._con.in_transaction:
            yield
            return
        self._con.execute("BEGIN")
        try:
            yield
        finally:
            self._con.execute("COMMIT")

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
        con = connect(Path(db_path) if db_path is not None else default_db_path())
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
        self._seen = None
        self._view.release()
        self._ann = None
        self._con.close()

    def __repr__(self) -> str:
        return f"Collection({self.name!r}, model={self.model!r})"


def _iso(timestamp: float) -> str:
    """ISO 8601 in UTC, as `provender cache ls` shows times."""
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC).isoformat()
