"""A long-lived collection's warm searches (issue 24 item 1): a search answers in one statement,
without a transaction, against the state the last search read (`provender_embedding._search`),
so every change committed in between, by another process, another connection or this one, must
still be seen by the next search. Real processes, real SQLite, real files; no model needed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from provender_embedding import Collection, CollectionError
from provender_embedding._search import search_as_seen

DIM = 24
N = 1200


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)  # type: ignore[no-any-return]


def expected(vectors: dict[str, np.ndarray], query: np.ndarray, n: int) -> list[str]:
    """The `n` ids closest to `query` by numpy over `vectors` (id -> vector), ties in id order."""
    ids = sorted(vectors)
    scores = unit(np.stack([vectors[i] for i in ids])) @ unit(query)
    return [ids[k] for k in np.argsort(-scores, kind="stable")[:n]]


def in_another_process(db: Path, code: str) -> None:
    """Run `code` in a new Python with ``c``: the collection "c" of `db`, opened there."""
    script = (
        "import sys, numpy as np\nfrom provender_embedding import Collection\n"
        "c = Collection('c', db_path=sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", script + code, str(db)], check=True, timeout=120, capture_output=True)


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, Collection, dict[str, np.ndarray]]:
    """A collection of N items (vectors of a fixed seed), opened and searched once (its state seen)."""
    db = tmp_path / "s.db"
    vectors = np.random.default_rng(3).standard_normal((N, DIM)).astype(np.float32)
    coll = Collection("c", dimension=DIM, db_path=db)
    coll.add_many([{"id": f"i{k:04d}", "text": f"t{k}", "metadata": {"k": k}} for k in range(N)], embeddings=vectors)
    known = {f"i{k:04d}": vectors[k] for k in range(N)}
    assert [h.id for h in coll.similar_by_vector(vectors[5], 3)] == expected(known, vectors[5], 3)
    return db, coll, known


def test_a_delete_and_a_re_add_of_the_same_id_by_another_process_is_seen(filled) -> None:  # type: ignore[no-untyped-def]
    db, coll, known = filled
    old = known["i0007"].copy()
    assert coll.similar_by_vector(old, 1)[0].id == "i0007"  # searched twice: the one-statement path
    new = np.random.default_rng(99).standard_normal(DIM).astype(np.float32)
    in_another_process(
        db,
        "c.delete('i0007')\n"
        f"c.add('i0007', 'again', {{'k': -7}}, embedding=np.array({new.tolist()}, dtype=np.float32))\n",
    )
    known["i0007"] = new
    hit = coll.similar_by_vector(new, 1)[0]
    assert (hit.id, hit.content, hit.metadata) == ("i0007", "again", {"k": -7})
    assert hit.score == pytest.approx(1.0, abs=1e-5)
    hits = coll.similar_by_vector(old, 10)  # the old vector's row is dead: the item is not found by it
    assert [h.id for h in hits] == expected(known, old, 10) and "i0007" not in [h.id for h in hits]
    for query in (known["i0100"], known["i1100"], new):
        assert [h.id for h in coll.similar_by_vector(query, 10)] == expected(known, query, 10)


def test_a_compaction_by_another_process_renumbering_the_slots_is_seen(filled) -> None:  # type: ignore[no-untyped-def]
    db, coll, known = filled
    gone = [f"i{k:04d}" for k in range(0, 120, 3)]  # every later item moves down a few slots
    in_another_process(db, f"c.delete_many({gone!r})\nc.compact()\n")
    for i in gone:
        del known[i]
    state = Collection("c", db_path=db)._state()
    assert (state.generation, state.slots, state.dead) == (1, len(known), 0)  # renumbered, the old file gone
    for k in range(1, N, 97):  # almost every old slot now holds another item
        query = np.random.default_rng(k).standard_normal(DIM).astype(np.float32)
        hits = coll.similar_by_vector(query, 10)
        assert [h.id for h in hits] == expected(known, query, 10)
        assert all(h.metadata == {"k": int(h.id[1:])} for h in hits)
    assert coll.count() == len(known)


def test_a_drop_and_re_create_by_another_process_is_seen(filled) -> None:  # type: ignore[no-untyped-def]
    db, coll, known = filled
    in_another_process(
        db,
        "c.drop()\n"
        f"d = Collection('c', dimension={DIM}, db_path=sys.argv[1])\n"
        f"d.add_many([{{'id': f'i{{k:04d}}', 'text': 'new'}} for k in range({N})],"
        f" embeddings=np.random.default_rng(4).standard_normal(({N}, {DIM})).astype(np.float32))\n",
    )
    fresh = np.random.default_rng(4).standard_normal((N, DIM)).astype(np.float32)
    now = {f"i{k:04d}": fresh[k] for k in range(N)}
    for query in (known["i0003"], fresh[7]):  # the same ids in the same slots, other vectors: the new answer
        hits = coll.similar_by_vector(query, 5)
        assert [h.id for h in hits] == expected(now, query, 5)
        assert {h.content for h in hits} == {"new"} and all(h.metadata is None for h in hits)
    in_another_process(db, "c.drop()\n")
    with pytest.raises(CollectionError, match="was dropped"):
        coll.similar_by_vector(fresh[0], 5)


def test_changes_by_another_connection_and_by_this_one_are_seen(filled) -> None:  # type: ignore[no-untyped-def]
    db, coll, known = filled
    other = Collection("c", db_path=db)  # the same process, its own connection
    query = known["i0042"]
    other.delete("i0042")
    del known["i0042"]
    assert [h.id for h in coll.similar_by_vector(query, 10)] == expected(known, query, 10)
    other.add("i0042", embedding=query)  # back, in a new slot
    known["i0042"] = query
    assert coll.similar_by_vector(query, 1)[0].id == "i0042"
    coll.delete("i0042")  # this connection's own delete, then its own add of another vector
    assert "i0042" not in [h.id for h in coll.similar_by_vector(query, 10)]
    coll.add("i0042", "mine", embedding=-query)
    known["i0042"] = -query
    for q in (query, -query):
        assert [h.id for h in coll.similar_by_vector(q, 10)] == expected(known, q, 10)
    assert other.similar_by_vector(-query, 1)[0].content == "mine"


def test_the_one_statement_search_answers_only_at_the_state_it_was_given(filled) -> None:  # type: ignore[no-untyped-def]
    db, coll, known = filled
    assert coll._seen is not None
    state, matrix = coll._seen
    query = known["i0500"]
    hits = search_as_seen(coll._con, coll.name, state, matrix, query, 4)
    assert hits is not None and [h.id for h in hits] == expected(known, query, 4)
    in_another_process(db, "c.add('extra', embedding=np.ones(24, dtype=np.float32))\n")
    assert search_as_seen(coll._con, coll.name, state, matrix, query, 4) is None  # moved on: not answered
    assert [h.id for h in coll.similar_by_vector(np.ones(DIM), 1)] == ["extra"]  # read afresh
    assert coll._seen is not None and coll._seen[0].slots == N + 1
    # more hits asked than there are items: left to the search in a transaction, which returns them all
    assert search_as_seen(coll._con, coll.name, *coll._seen, query, N + 2) is None
    assert len(coll.similar_by_vector(query, N + 2)) == N + 1
