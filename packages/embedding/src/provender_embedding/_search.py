"""A warm exact search in one SQLite statement, against the state the collection's last search read.

A search in a read transaction (BEGIN, the collection's state, the hits' rows, COMMIT) costs
four statements besides the product itself, a third of a query at 10,000 vectors. But a
collection's state (``store, generation, slots, dead``) only moves forward: every add takes new
slots, every delete counts its dead rows, a compaction takes the next generation and a drop
and re-create a new store, so two snapshots with the same state hold the same items in the same
slots. `search_as_seen` therefore scores the matrix mapped for the last state seen, then reads
the hits' rows in one statement that returns them only where the state, in that statement's
own snapshot, is still that one (an ``EXISTS`` on the ``collections`` row). Where it is not (a
commit by this or any other connection since) no row comes back and the caller searches afresh
in a read transaction; so does a search whose answer one statement cannot settle (fewer live
hits than asked among the candidates, more candidates than one statement takes).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from provender_embedding._items import Hit, best_hits, top_k, unit_vector

MAX_CANDIDATES = 500  # slots one statement reads (as `_store.select_in`)

_ROWS = (
    "SELECT slot, id, content, metadata FROM items WHERE collection=? AND slot IN ({}) AND EXISTS "
    "(SELECT 1 FROM collections WHERE name=? AND store=? AND generation=? AND slots=? AND dead=?)"
)
_sql: dict[int, str] = {}  # the statement for k candidates


@dataclass(frozen=True)
class State:
    """A collection's row: its vectors file (`store`, `generation`), committed rows and dead rows."""

    store: str
    generation: int
    slots: int
    dead: int
    dimension: int | None


def search_as_seen(
    con: sqlite3.Connection, name: str, state: State, matrix: np.ndarray, vector: Sequence[float] | np.ndarray, n: int
) -> list[Hit] | None:
    """The `n` best items for `vector` if the collection is still at `state` (`matrix`: its rows,
    mapped), read without a transaction; None where a search in one must answer instead."""
    k = min(state.slots, n + (16 if state.dead else 0))  # dead rows (zeroed) can rank among the best
    if k < n or k > MAX_CANDIDATES:
        return None  # fewer items than asked, or more candidates than one statement reads
    query = unit_vector(vector, "the query")
    if query.shape[0] != matrix.shape[1]:
        return None  # the other search says what is wrong
    scores = matrix @ query
    sql = _sql.get(k) or _sql.setdefault(k, _ROWS.format(",".join("?" * k)))
    seen = (name, state.store, state.generation, state.slots, state.dead)

    def rows(slots: list[int]) -> dict[int, tuple[Any, ...]]:
        return {row[0]: row[1:] for row in con.execute(sql, (name, *slots, *seen))}

    hits = best_hits(n, k, lambda size: top_k(scores, size, None), rows, spare=k - n)
    return hits if len(hits) == n else None  # none at all where the state has moved on
