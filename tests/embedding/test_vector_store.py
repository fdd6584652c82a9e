"""Collections' vectors on disk (issue 24 item 1): exact search equal to numpy, metadata filters,
precomputed vectors, the migration of a version-1 database, compaction and the HNSW index.

None of these needs a model: items are given with their vectors (``embedding=``).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from provender_embedding import Collection, CollectionError
from provender_embedding._store import SCHEMA_VERSION, vectors_dir


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)  # type: ignore[no-any-return]


def numpy_top(matrix: np.ndarray, ids: list[str], query: np.ndarray, n: int) -> list[str]:
    scores = unit(matrix) @ unit(query)
    return [ids[i] for i in np.argsort(-scores, kind="stable")[:n]]


def test_exact_search_equals_numpy_through_updates_deletes_and_another_process(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3000, 48)).astype(np.float32)
    ids = [f"i{k}" for k in range(3000)]
    coll = Collection("c", "mlx:unused", db_path=db)
    result = coll.add_many(
        [{"id": i, "text": f"text {i}", "metadata": {"k": n}} for n, i in enumerate(ids)], embeddings=vectors
    )
    assert (result.added, result.updated, result.unchanged, coll.count(), coll.dimension) == (3000, 0, 0, 3000, 48)
    queries = rng.standard_normal((25, 48)).astype(np.float32)

    def check() -> None:
        for query in queries:
            hits = coll.similar_by_vector(query, 10)
            assert [h.id for h in hits] == numpy_top(vectors, ids, query, 10)
            expected = unit(vectors[[ids.index(h.id) for h in hits]]) @ unit(query)
            np.testing.assert_allclose([h.score for h in hits], expected, atol=1e-5)

    check()
    assert (
        coll.add_many([{"id": "i3", "text": "text i3", "metadata": {"k": 3}}], embeddings=vectors[3:4]).unchanged == 1
    )
    # replace 200 vectors, delete 300 items: the old rows are never returned
    vectors[:200] = rng.standard_normal((200, 48))
    assert coll.add_many([{"id": i, "embedding": vectors[n]} for n, i in enumerate(ids[:200])]).updated == 200
    gone = ids[1000:1300]
    assert coll.delete_many(gone) == 300 and not coll.delete("i1000")
    keep = [n for n, i in enumerate(ids) if i not in set(gone)]
    vectors, ids = vectors[keep], [ids[n] for n in keep]
    check()
    for n in (0, 1500):  # a deleted item's own vector finds other items, never it
        assert gone[0] not in [h.id for h in coll.similar_by_vector(vectors[n], 50)]
    # another process adds 500 items: this open collection sees them on its next query
    code = (
        "import sys, numpy as np; from provender_embedding import Collection\n"
        "c = Collection('c', db_path=sys.argv[1])\n"
        "v = np.random.default_rng(7).standard_normal((500, 48)).astype(np.float32)\n"
        "c.add_many([{'id': f'p{k}', 'embedding': v[k]} for k in range(500)])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(db)], check=True, timeout=120)
    vectors = np.concatenate([vectors, np.random.default_rng(7).standard_normal((500, 48)).astype(np.float32)])
    ids += [f"p{k}" for k in range(500)]
    check()
    assert coll.count() == len(ids) == 3200
    item = coll.get("p7")
    assert item is not None and np.allclose(item["embedding"], unit(vectors[ids.index("p7")]), atol=1e-6)


def test_metadata_filters(tmp_path: Path) -> None:
    coll = Collection("f", dimension=4, db_path=tmp_path / "e.db")
    metas = [
        {"lang": "en", "year": 2024, "draft": False},
        {"lang": "fr", "year": 2024, "draft": True},
        {"lang": "en", "year": "2024", "draft": None},
        {"lang": "en", "year": 2023},
        None,
    ]
    vectors = np.eye(4, dtype=np.float32)[[0, 0, 1, 2, 3]] + 0.01
    coll.add_many([{"id": f"d{n}", "text": f"doc {n}", "metadata": m} for n, m in enumerate(metas)], embeddings=vectors)
    query = np.array([1, 0, 0, 0], dtype=np.float32)

    def ids(**where: object) -> list[str]:
        return sorted(h.id for h in coll.similar_by_vector(query, 10, where=where))

    assert ids(lang="en") == ["d0", "d2", "d3"]
    assert ids(lang="en", year=2024) == ["d0"]  # the number, not the string "2024"
    assert ids(year="2024") == ["d2"]
    assert ids(year=[2023, "2024"]) == ["d2", "d3"]
    assert ids(draft=False) == ["d0"] and ids(draft=True) == ["d1"] and ids(draft=None) == ["d2"]
    assert ids(lang="de") == []
    assert [h.id for h in coll.similar_by_vector(query, 1, where={"lang": "en"})] == ["d0"]  # best first
    assert [h.id for h in coll.similar_by_id("d0", 5, where={"year": 2024})] == ["d1"]
    coll.delete("d0")
    assert ids(lang="en", year=2024) == []
    with pytest.raises(CollectionError, match="invalid metadata key"):
        coll.similar_by_vector(query, 3, where={'a"b': 1})
    with pytest.raises(CollectionError, match="must be a string, number, bool or None"):
        coll.similar_by_vector(query, 3, where={"lang": {"x": 1}})

    from provender_embedding._filters import parse_where

    assert parse_where(["year=2024", "lang=en", "draft=true"]) == {
        "year": ["2024", 2024],
        "lang": ["en"],
        "draft": ["true", True],
    }
    assert parse_where([]) is None
    with pytest.raises(CollectionError, match="expected KEY=VALUE"):
        parse_where(["lang"])


def test_precomputed_vectors_are_checked_against_the_dimension(tmp_path: Path) -> None:
    coll = Collection("p", "mlx:some-model", db_path=tmp_path / "e.db")
    assert coll.add("a", "first", embedding=[3.0, 4.0, 0.0])
    assert not coll.add("a", "first", embedding=[3.0, 4.0, 0.0])  # unchanged: same text and vector
    item = coll.get("a")
    assert item is not None and np.allclose(item["embedding"], [0.6, 0.8, 0.0]) and item["content"] == "first"
    assert coll.dimension == 3
    with pytest.raises(CollectionError) as wrong:
        coll.add("b", "second", embedding=[1.0, 2.0])
    assert str(wrong.value) == "item 0 ('b') has a 2-dimensional embedding; collection 'p' holds 3-dimensional vectors"
    with pytest.raises(CollectionError, match=r"item 1 .* 4-dimensional embedding, item 0 a 3-dimensional"):
        Collection("q", dimension=None, db_path=tmp_path / "e.db", embedder=None, model="m").add_many(
            [{"id": "x", "embedding": [1, 0, 0]}, {"id": "y", "embedding": [1, 0, 0, 0]}]
        )
    with pytest.raises(CollectionError, match=r"embeddings= has shape \(1, 3\); expected \(2, dimension\)"):
        coll.add_many([("x", "a"), ("y", "b")], embeddings=[[1.0, 0.0, 0.0]])
    with pytest.raises(CollectionError, match="item 1: the embedding holds NaN"):
        coll.add_many([("x", "a"), ("y", "b")], embeddings=[[1.0, 0.0, 0.0], [np.nan, 0.0, 0.0]])
    with pytest.raises(CollectionError, match="all zeros"):
        coll.add("z", "zero", embedding=[0.0, 0.0, 0.0])
    with pytest.raises(CollectionError, match="the query has dimension 2, the collection 'p' 3"):
        coll.similar_by_vector([1.0, 0.0], 1)
    assert coll.count() == 1  # nothing half-stored by the refused adds
    fixed = Collection("fixed", dimension=8, db_path=tmp_path / "e.db")
    with pytest.raises(CollectionError, match="holds 8-dimensional vectors"):
        fixed.add("v", embedding=np.ones(3))
    with pytest.raises(CollectionError, match="has no model"):
        fixed.similar("a text")
    with pytest.raises(CollectionError, match="holds 3-dimensional vectors, not 5"):
        Collection("p", db_path=tmp_path / "e.db", dimension=5)
    # without ids: the id comes from the content (text and vector), the same content is stored once
    auto = fixed.add_many([{"embedding": np.arange(1, 9)}, {"embedding": np.arange(1, 9)}, {"embedding": np.ones(8)}])
    assert auto.added == 2 and auto.unchanged == 1 and len(set(auto.ids)) == 2


# The schema provender-embedding 0.1.0 wrote (version 1, user_version 0), verbatim.
V1_SCHEMA = """
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


def make_v1_database(path: Path) -> dict[str, dict[str, tuple[str | None, str | None, bytes]]]:
    """A database as 0.1.0 wrote it: two collections with items, one empty; returns what it holds."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(V1_SCHEMA)
    rng = np.random.default_rng(3)
    held: dict[str, dict[str, tuple[str | None, str | None, bytes]]] = {}
    for name, count, dim in (("notes", 40, 16), ("docs", 25, 8), ("empty", 0, None)):
        con.execute("INSERT INTO collections VALUES (?, ?, ?, ?)", (name, f"mlx:model-{name}", dim, 1.7e9))
        held[name] = {}
        for k in range(count):
            vector = unit(rng.standard_normal(dim or 1)).tobytes()
            text = f"{name} text {k}" if k % 5 else None  # some stored without content
            meta = json.dumps({"k": k, "even": k % 2 == 0}) if k % 3 else None
            digest = hashlib.sha256(f"{name} text {k}".encode()).hexdigest()
            con.execute(
                "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, f"id-{k:03d}", text, digest, meta, vector, 1.7e9),
            )
            held[name][f"id-{k:03d}"] = (text, meta, vector)
    con.close()
    return held


def test_a_version_1_database_is_migrated_in_place_with_nothing_lost(tmp_path: Path) -> None:
    db = tmp_path / "embeddings.db"
    held = make_v1_database(db)
    listed = Collection.list(db)  # opening migrates
    assert [(c["name"], c["count"], c["dimension"]) for c in listed] == [
        ("docs", 25, 8),
        ("empty", 0, None),
        ("notes", 40, 16),
    ]
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    assert "embedding" not in {r[1] for r in con.execute("PRAGMA table_info(items)")}
    con.close()
    for name, items in held.items():
        coll = Collection(name, db_path=db)
        assert coll.model == f"mlx:model-{name}" and coll.count() == len(items)
        for item_id, (text, meta, vector) in items.items():
            got = coll.get(item_id)
            assert got is not None and got["content"] == text
            assert got["metadata"] == (json.loads(meta) if meta else None)
            assert got["embedding"].tobytes() == vector  # the very bytes
        if items:
            ids = list(items)
            matrix = np.stack([np.frombuffer(v[2], dtype=np.float32) for v in items.values()])
            query = matrix[4] + 0.1
            assert [h.id for h in coll.similar_by_vector(query, 5)] == numpy_top(matrix, ids, query, 5)
    notes = Collection("notes", db_path=db)
    # the content hashes came along: an unchanged text is not embedded again (the model is not even loaded)
    assert notes.add_many([("id-001", "notes text 1")]).unchanged == 1
    assert notes.add("new", embedding=np.ones(16))
    assert sorted(h.id for h in notes.similar_by_vector(np.ones(16), 1)) == ["new"]
    assert len(Collection.list(db)) == 3  # opening again changes nothing


def test_a_database_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    Collection("c", dimension=2, db_path=db).close()
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version = 99")
    con.close()
    with pytest.raises(CollectionError, match="schema version 99, written by a newer provender-embedding"):
        Collection("c", db_path=db)


def test_compaction_drops_dead_rows_and_keeps_every_item(tmp_path: Path) -> None:
    db = tmp_path / "e.db"
    coll = Collection("big", dimension=32, db_path=db)
    vectors = np.random.default_rng(5).standard_normal((4000, 32)).astype(np.float32)
    ids = [str(k) for k in range(4000)]
    coll.add_many([{"id": i, "text": i} for i in ids], embeddings=vectors)
    before = sorted(vectors_dir(db).iterdir())
    coll.delete_many(ids[:2500])  # past half of the rows dead: rewritten into the next generation
    state = coll._state()
    assert (state.generation, state.slots, state.dead) == (1, 1500, 0)
    after = sorted(vectors_dir(db).iterdir())
    assert len(before) == len(after) == 1 and before != after  # the old file is gone
    live, ids = vectors[2500:], ids[2500:]
    for query in vectors[:5]:
        assert [h.id for h in coll.similar_by_vector(query, 10)] == numpy_top(live, ids, query, 10)
    assert np.allclose(coll.get("3999")["embedding"], unit(vectors[3999]), atol=1e-6)  # type: ignore[index]
    coll.drop()
    assert list(vectors_dir(db).iterdir()) == []


def test_approximate_index_recall_and_updates(tmp_path: Path) -> None:
    pytest.importorskip("usearch", reason="the ann extra (tox installs it)")
    db = tmp_path / "e.db"
    rng = np.random.default_rng(11)
    centres = rng.standard_normal((50, 32))
    vectors = (centres[rng.integers(0, 50, 6000)] + 0.3 * rng.standard_normal((6000, 32))).astype(np.float32)
    ids = [f"v{k}" for k in range(6000)]
    coll = Collection("ann", dimension=32, db_path=db)
    coll.add_many([{"id": i} | {"embedding": vectors[n]} for n, i in enumerate(ids)])
    queries = (centres[rng.integers(0, 50, 50)] + 0.3 * rng.standard_normal((50, 32))).astype(np.float32)
    recall = np.mean(
        [
            len({h.id for h in coll.similar_by_vector(q, 10, approximate=True)} & set(numpy_top(vectors, ids, q, 10)))
            / 10
            for q in queries
        ]
    )
    assert recall >= 0.9, recall
    built = sorted(p.name for p in vectors_dir(db).glob("*.usearch"))
    assert len(built) == 1 and built[0].endswith(".6000.usearch")
    # a new process opens the index as it is (a memory map, nothing rebuilt)
    mtime = next(vectors_dir(db).glob("*.usearch")).stat().st_mtime_ns
    code = (
        "import sys, numpy as np; from provender_embedding import Collection\n"
        "c = Collection('ann', db_path=sys.argv[1])\n"
        "print(c.similar_by_vector(np.ones(32), 3, approximate=True)[0].id)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(db)], check=True, timeout=120, capture_output=True)
    assert next(vectors_dir(db).glob("*.usearch")).stat().st_mtime_ns == mtime
    # added items are found, deleted ones are not returned
    coll.add("fresh", embedding=queries[0])
    assert coll.similar_by_vector(queries[0], 1, approximate=True)[0].id == "fresh"
    coll.delete("fresh")
    assert "fresh" not in {h.id for h in coll.similar_by_vector(queries[0], 10, approximate=True)}
    assert sorted(p.name for p in vectors_dir(db).glob("*.usearch"))[0].endswith(".6001.usearch")
    # with a filter, the search is exact over the matching items
    assert coll.similar_by_vector(queries[0], 3, where={"nothing": 1}, approximate=True) == []


def test_ids_of_the_wrong_type_are_refused_and_nothing_is_deleted(tmp_path: Path) -> None:
    coll = Collection("c", "mlx:unused", db_path=tmp_path / "e.db")
    ids = ["a", "b", "c", "abc"]
    coll.add_many([{"id": i, "embedding": [1.0, float(n)]} for n, i in enumerate(ids)])
    # a string where a list belongs would otherwise delete "a", "b" and "c", one per character
    refused = r"expected a list of ids, got the string 'abc' \(for one id, use delete\)"
    with pytest.raises(CollectionError, match=refused):
        coll.delete_many("abc")
    with pytest.raises(CollectionError, match=r"an id must be a non-empty string, got \['a'\]"):
        coll.delete(["a"])  # type: ignore[arg-type]
    with pytest.raises(CollectionError, match="got 3"):
        coll.delete_many(["a", 3])  # type: ignore[list-item]
    with pytest.raises(CollectionError, match="expected a list of ids, got int"):
        coll.delete_many(7)  # type: ignore[arg-type]
    with pytest.raises(CollectionError, match="got ''"):
        coll.get("")
    with pytest.raises(CollectionError, match=r"got \['a'\]"):
        coll.similar_by_id(["a"])  # type: ignore[arg-type]
    assert coll.count() == 4 and sorted(h.id for h in coll.similar_by_vector([1.0, 1.0], 4)) == sorted(ids)
    assert coll.delete_many(("a", "a", "b")) == 2 and coll.delete("abc") and coll.count() == 1
