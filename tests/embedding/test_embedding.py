"""Embedder, collections and the embedding CLI on the real all-MiniLM-L6-v2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import run_cli
from provender import UnsupportedError
from provender_embedding import Collection, CollectionError, Embedder, InputError


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)  # type: ignore[no-any-return]


def test_matches_sentence_transformers_reference(minilm: str, reference: dict) -> None:  # type: ignore[type-arg]
    embedder = Embedder(minilm)
    vectors = embedder.embed(reference["texts"])
    expected = np.array(reference["embeddings"], dtype=np.float32)
    assert vectors.dtype == np.float32 and vectors.shape == expected.shape == (12, 384)
    scores = cosine(vectors, expected)
    # every text, the empty string and the 400-word one (truncated at 256 tokens) included
    assert scores.min() >= 0.999, dict(zip(reference["texts"], scores.round(5), strict=True))
    assert "" in reference["texts"] and any(len(t.split()) >= 400 for t in reference["texts"])
    assert embedder.dimension == 384


def test_batches_equal_one_by_one_and_are_unit_vectors(minilm: str, reference: dict) -> None:  # type: ignore[type-arg]
    texts = [t for t in reference["texts"] if len(t) < 200]
    embedder = Embedder(minilm, batch_size=4)
    batched = embedder.embed(texts)
    single = np.stack([embedder.embed_one(t) for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)
    raw = embedder.embed(texts[:2], normalize=False)
    assert raw.shape == (2, 384) and np.allclose(cosine(raw, batched[:2]), 1.0, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)


def test_similar_ranks_a_paraphrase_above_unrelated(minilm: str) -> None:
    coll = Collection("notes", minilm)
    coll.add_many(
        [
            ("cat", "The cat sits on the mat."),
            ("stocks", "Stock markets fell sharply after the announcement."),
            ("train", "The train to Berlin leaves at nine."),
        ]
    )
    hits = coll.similar("A kitten is resting on the rug.", n=3)
    assert hits[0].id == "cat" and hits[0].score > hits[1].score
    assert hits[0].content == "The cat sits on the mat." and -1 <= hits[-1].score <= 1
    assert [h.id for h in coll.similar_by_id("cat", n=1)] != ["cat"]


def test_collection_survives_restart_and_skips_unchanged(minilm: str, tmp_path: Path) -> None:
    coll = Collection("docs", minilm)
    first = coll.add_many([{"id": "a", "text": "alpha text", "metadata": {"k": 1}}, ("b", "beta text")])
    assert (first.added, first.unchanged) == (2, 0)
    code = (
        "from provender_embedding import Collection; c = Collection('docs'); "
        "r = c.add_many([('a', 'alpha text'), ('b', 'beta text, changed'), ('c', 'gamma')]); "
        "print(r.added, r.updated, r.unchanged, c.count(), c.get('a')['metadata'])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split(maxsplit=4) == ["1", "1", "1", "3", "{'k': 1}\n"]
    reopened = Collection("docs")
    assert reopened.model == minilm and reopened.count() == 3
    assert [c["name"] for c in Collection.list()] == ["docs"]
    with pytest.raises(CollectionError, match="embedded with"):
        Collection("docs", "mlx:some/other-model")


def test_bad_input_loses_nothing(minilm: str, tmp_path: Path) -> None:
    coll = Collection("safe", minilm)
    coll.add_many([("a", "kept text")])
    with pytest.raises(CollectionError, match="appears twice"):
        coll.add_many([("x", "one"), ("x", "two")])
    with pytest.raises(CollectionError, match="text must be a string"):
        coll.add_many([("y", "fine"), ("z", None)])
    assert coll.count() == 1 and coll.get("a")["content"] == "kept text"  # type: ignore[index]
    with pytest.raises(CollectionError, match="no collection named"):
        Collection("never-made")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "text": "ok"}\n{"id": "2", "text": \n')
    from provender_embedding._io import read_items

    with pytest.raises(InputError, match=r"bad\.jsonl:2"):
        read_items(bad)


def test_a_model_that_does_not_embed(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from provender_mlx.testing import build_tiny_llama

    monkeypatch.setenv("PROVENDER_CACHE__DIR", str(cache_dir))
    model = build_tiny_llama(tmp_path / "llm")
    with pytest.raises(UnsupportedError, match="text-generation model"):
        Embedder(f"mlx:{model}").embed(["x"])
    with pytest.raises(UnsupportedError, match="embed"):
        Embedder("echo:upper").embed(["x"])


def test_cli_embed_outputs(minilm: str, tmp_path: Path, reference: dict) -> None:  # type: ignore[type-arg]
    out = run_cli("embed", "-m", minilm, "The cat sits on the mat.", "How do I reset my password?")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["id"] for r in rows] == ["0", "1"] and len(rows[0]["embedding"]) == 384
    expected = np.array(reference["embeddings"][0])
    assert cosine(np.array([rows[0]["embedding"]]), expected[None])[0] >= 0.999
    assert "2 texts, dimension 384" in out.stderr and "texts/s" in out.stderr
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "x", "text": "first"}\n\n{"id": "y", "text": "second", "metadata": {"a": 1}}\n')
    for suffix in (".npy", ".jsonl", ".parquet"):
        target = tmp_path / f"out{suffix}"
        done = run_cli("embed", "-m", minilm, "-i", str(src), "-o", str(target))
        assert done.returncode == 0, done.stderr
        if suffix == ".npy":
            assert np.load(target).shape == (2, 384)
        elif suffix == ".jsonl":
            assert [json.loads(line)["id"] for line in target.read_text().splitlines()] == ["x", "y"]
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(target)
            assert table.column("id").to_pylist() == ["x", "y"] and len(table.column("embedding")[0]) == 384
    piped = run_cli("embed", "-m", minilm, input="alpha\nbeta\n")
    assert len(json.loads(piped.stdout)) == 2


def test_an_output_that_cannot_be_written_is_refused_before_anything_is_embedded(tmp_path: Path) -> None:
    from provender.errors import ProvenderError
    from provender_embedding._io import write_vectors

    # the model does not exist: the refusal comes before it is looked for, let alone loaded
    (tmp_path / "out.npy").mkdir()
    for target, why in (
        (tmp_path / "no" / "such" / "x.npy", "cannot be written: there is no folder"),
        (tmp_path / "out.npy", "is a folder, not a file"),
    ):
        out = run_cli("embed", "-m", "no-such-model", "-o", str(target), "text")
        assert out.returncode == 2 and why in out.stderr and "Traceback" not in out.stderr, out.stderr
        assert "no-such-model" not in out.stderr
    out = run_cli("embed", "-m", "no-such-model", "-c", "notes", "-o", str(tmp_path / "x.npy"), "text")
    assert out.returncode == 2 and "-o and -c contradict each other" in out.stderr  # -o was silently dropped
    assert not (tmp_path / "x.npy").exists()
    with pytest.raises(ProvenderError, match=r"cannot write '/proc/x.npy': "):  # a write that fails: one line
        write_vectors(Path("/proc/x.npy"), ["a"], np.ones((1, 3), dtype=np.float32))


def test_cli_collections_and_similar(minilm: str, tmp_path: Path) -> None:
    src = tmp_path / "docs.jsonl"
    src.write_text(
        "\n".join(
            json.dumps({"id": i, "text": t})
            for i, t in [
                ("cat", "The cat sits on the mat."),
                ("dog", "A dog is playing fetch in the park."),
                ("paris", "Paris is the capital of France."),
            ]
        )
        + "\n"
    )
    added = run_cli("embed", "-m", minilm, "-c", "kb", "-i", str(src))
    assert added.returncode == 0 and "3 added" in added.stderr
    again = run_cli("embed", "-m", minilm, "-c", "kb", "-i", str(src))
    assert "3 unchanged" in again.stderr
    hits = json.loads(run_cli("similar", "kb", "What is the capital city of France?", "-n", "2", "--json").stdout)
    assert hits[0]["id"] == "paris" and len(hits) == 2
    listed = json.loads(run_cli("collections", "ls", "--json").stdout)
    assert [(c["name"], c["count"], c["dimension"]) for c in listed] == [("kb", 3, 384)]
    assert run_cli("collections", "rm", "kb", input="").returncode == 2  # no silent deletion without -y
    assert "deleted collection 'kb'" in run_cli("collections", "rm", "kb", "-y").stdout
    assert json.loads(run_cli("collections", "ls", "--json").stdout) == []


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["embed", "-m", "MODEL", "-i", "/no/such/file.txt"], 2, "does not exist"),
        (["embed", "-m", "MODEL", "-i", "BAD"], 2, "BAD:2: not valid JSON"),
        (["embed", "-m", "MODEL", "x", "-o", "out.csv"], 2, ".jsonl"),
        (["embed", "-m", "echo:upper", "x"], 1, "does not support embed"),
        (["similar", "nothing-here", "query"], 1, "no collection named"),  # not found: 1, as a model (docs/cli.md)
    ],
)
def test_cli_bad_input(minilm: str, tmp_path: Path, args: list[str], code: int, needle: str) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "text": "ok"}\n{oops\n')
    args = [minilm if a == "MODEL" else str(bad) if a == "BAD" else a for a in args]
    needle = needle.replace("BAD", str(bad))
    out = run_cli(*args)
    assert out.returncode == code, out
    assert needle in out.stderr and "Traceback" not in out.stderr


def test_length_batches_keep_long_texts_apart() -> None:
    from provender_embedding._embedder import _length_batches

    texts = ["short one", "x" * 2000, "tiny", "a medium sized sentence here"]
    batches = _length_batches(texts, 32)
    assert sorted(i for b in batches for i in b) == [0, 1, 2, 3]
    assert [1] in batches  # the long text is not padded against the short ones, nor they against it
    assert all(len(b) <= 2 for b in _length_batches(["same"] * 5, 2))


def test_cli_similar_where_and_a_precomputed_vector(minilm: str, tmp_path: Path) -> None:
    src = tmp_path / "docs.jsonl"
    rows = [
        ("paris-en", "Paris is the capital of France.", {"lang": "en", "year": 2024}),
        ("paris-old", "Paris has been France's capital for centuries.", {"lang": "en", "year": 1900}),
        ("paris-fr", "Paris est la capitale de la France.", {"lang": "fr", "year": 2024}),
        ("cat", "The cat sits on the mat.", {"lang": "en", "year": 2024}),
    ]
    src.write_text("".join(json.dumps({"id": i, "text": t, "metadata": m}) + "\n" for i, t, m in rows))
    assert run_cli("embed", "-m", minilm, "-c", "kb", "-i", str(src)).returncode == 0
    question = "What is the capital of France?"

    def ids(*where: str) -> list[str]:
        args = [a for w in where for a in ("--where", w)]
        out = run_cli("similar", "kb", question, "-n", "4", "--json", *args)
        assert out.returncode == 0, out.stderr
        return [h["id"] for h in json.loads(out.stdout)]

    assert ids()[0] == "paris-en" and len(ids()) == 4
    assert ids("lang=fr") == ["paris-fr"]
    assert ids("lang=en", "year=2024") == ["paris-en", "cat"]  # both must match; 2024 the JSON number
    assert ids("lang=de") == []
    bad = run_cli("similar", "kb", question, "--where", "lang")
    assert bad.returncode == 2 and "expected KEY=VALUE" in bad.stderr and "Traceback" not in bad.stderr
    # a vector computed elsewhere, stored beside the model's: found by a text query like the others
    coll = Collection("kb")
    vector = Embedder(minilm).embed(["Berlin is the capital of Germany."])[0]
    assert coll.add("berlin", "Berlin is the capital of Germany.", embedding=vector)
    assert coll.similar("Which city is Germany's capital?", n=1)[0].id == "berlin"
    with pytest.raises(CollectionError, match="has a 3-dimensional embedding; collection 'kb' holds 384"):
        coll.add("bad", "x", embedding=[1.0, 2.0, 3.0])
