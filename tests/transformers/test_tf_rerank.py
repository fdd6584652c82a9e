"""provider-transformers reranks with cross-encoders: claimed by content, scored as
sentence-transformers' ``CrossEncoder.predict`` scores the same weights (default activation,
within 1e-5), on a random-weight ``BertForSequenceClassification`` built on the real MiniLM
tokenizer; other kinds of model asked to rerank are one clear error."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from provender import InvalidOptionError, ModelNotFoundError, Provider, UnsupportedError, get_provider
from provender.testing import ProviderContract

RERANKER = "test/tiny-reranker"
QUERY = "Which animal is quick and brown?"
DOCUMENTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Stock markets fell sharply on Tuesday.",
    "",
    "A fox is a small omnivorous mammal. " * 120,  # past the 512 tokens the model takes: truncated
    "Brown bears are not quick.",
    "caf\u00e9 na\u00efve \u65e5\u672c\u8a9e \U0001f98a",
] + [f"Document number {i} about {'foxes ' * (i % 7)}and other things." for i in range(40)]


@pytest.fixture(scope="session")
def reranker_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    from provender_transformers.testing import build_tiny_cross_encoder

    return build_tiny_cross_encoder(tmp_path_factory.mktemp("models") / "tiny-reranker", minilm_dir, seed=3)


@pytest.fixture(scope="session")
def st_reranker_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """The same kind of model saved by sentence-transformers' CrossEncoder (with modules.json)."""
    from provender_transformers.testing import build_tiny_cross_encoder

    root = tmp_path_factory.mktemp("models")
    return build_tiny_cross_encoder(root / "st-reranker", minilm_dir, seed=4, sentence_transformers=True)


@pytest.fixture
def reranker(reranker_dir: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    from provender import CacheManager

    monkeypatch.setenv("PROVENDER_CACHE__DIR", str(cache_dir))
    CacheManager().import_model(reranker_dir, RERANKER)
    return RERANKER


def predict(model_dir: Path, query: str, documents: list[str]) -> np.ndarray:
    from sentence_transformers import CrossEncoder

    return np.asarray(CrossEncoder(str(model_dir), local_files_only=True).predict([(query, d) for d in documents]))


def test_a_cross_encoder_is_claimed_by_content(reranker: str, reranker_dir: Path, st_reranker_dir: Path) -> None:
    from provender_transformers import TransformersProvider
    from provender_transformers._detect import model_kind, transformers_evidence

    assert isinstance(get_provider(reranker), TransformersProvider)  # a bare name: claimed from the cache
    for path in (reranker_dir, st_reranker_dir):  # modules.json does not make it an embedding model
        assert model_kind(path) == "rerank"
        assert transformers_evidence(path) == "bert reranker (cross-encoder)"


def test_scores_equal_cross_encoder_predict(reranker: str, reranker_dir: Path) -> None:
    expected = predict(reranker_dir, QUERY, DOCUMENTS)
    assert float(np.std(expected)) > 0.01  # random weights, yet documents score apart: the check can fail
    provider = get_provider(reranker)
    for batch_size in (None, 5):
        options = {} if batch_size is None else {"batch_size": batch_size}
        scores = provider.rerank(QUERY, DOCUMENTS, **options)
        assert isinstance(scores, list) and all(isinstance(s, float) for s in scores)
        np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=0)
    assert all(0.0 < s < 1.0 for s in scores)  # the default activation for one label: a sigmoid
    one = provider.rerank(QUERY, DOCUMENTS[:1])
    assert abs(one[0] - float(expected[0])) < 1e-5  # one document alone: the same score


def test_a_sentence_transformers_saved_cross_encoder_too(st_reranker_dir: Path) -> None:
    expected = predict(st_reranker_dir, QUERY, DOCUMENTS[:8])
    scores = get_provider(f"transformers:{st_reranker_dir}").rerank(QUERY, DOCUMENTS[:8])
    np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=0)


def test_an_embedding_model_used_as_a_reranker_is_a_clear_error(minilm: str) -> None:
    with pytest.raises(UnsupportedError) as info:
        get_provider(minilm).rerank(QUERY, ["a document"])
    message = str(info.value)
    assert f"{minilm!r} is an embedding model, not a reranker" in message and "\n" not in message
    assert "ForSequenceClassification" in message  # what would rerank


def test_a_reranker_asked_to_embed_or_generate_says_use_rerank(reranker: str) -> None:
    provider = get_provider(reranker)
    with pytest.raises(UnsupportedError, match=r"is a reranker; use rerank\(\)"):
        provider.embed(["x"])
    with pytest.raises(UnsupportedError, match=r"is a reranker; use rerank\(\)"):
        provider.generate("x", max_tokens=2)


@pytest.mark.parametrize(
    ("documents", "options", "error"),
    [([], {}, InvalidOptionError), ("text", {}, InvalidOptionError), (["a", None], {}, InvalidOptionError),
     (["a"], {"batch_size": 0}, InvalidOptionError), (["a"], {"normalize": True}, UnsupportedError)],
)  # fmt: skip
def test_bad_input_is_refused(reranker: str, documents: Any, options: dict[str, Any], error: type) -> None:
    with pytest.raises(error) as info:
        get_provider(reranker).rerank(QUERY, documents, **options)
    assert "\n" not in str(info.value)


def test_a_classifier_with_several_labels_is_not_a_reranker(tmp_path: Path, minilm_dir: Path) -> None:
    import json

    from provender_transformers._detect import load_problem, model_kind
    from provender_transformers.testing import build_tiny_cross_encoder

    path = build_tiny_cross_encoder(tmp_path / "classifier", minilm_dir)
    config = json.loads((path / "config.json").read_text())
    config["id2label"] = {"0": "negative", "1": "positive"}
    config["label2id"] = {"negative": 0, "positive": 1}
    (path / "config.json").write_text(json.dumps(config))
    assert model_kind(path) is None
    assert "2 labels: a classifier, not a reranker" in (load_problem(path) or "")
    with pytest.raises(ModelNotFoundError, match="a classifier, not a reranker"):
        get_provider(f"transformers:{path}").rerank(QUERY, ["a"])


class TestRerankerKeepsTheContract(ProviderContract):
    provider_name = "transformers"
    model = ""
    capabilities: ClassVar[set[str]] = {"rerank"}

    @pytest.fixture(autouse=True)
    def _model(self, reranker_dir: Path) -> None:
        type(self).model = str(reranker_dir)

    def make_provider(self) -> Provider:
        return get_provider(f"transformers:{self.model}")


# -- provender-embedding's Reranker and the command line ------------------------------------------


def test_the_reranker_ranks_by_cross_encoder_predict(reranker: str, reranker_dir: Path) -> None:
    from provender_embedding import Reranker, RerankResult

    expected = predict(reranker_dir, QUERY, DOCUMENTS)
    order = sorted(range(len(DOCUMENTS)), key=lambda i: (-float(expected[i]), i))
    ranked = Reranker(reranker).rerank(QUERY, DOCUMENTS)
    assert [r.index for r in ranked] == order
    assert all(isinstance(r, RerankResult) and r.document == DOCUMENTS[r.index] for r in ranked)
    np.testing.assert_allclose([r.score for r in ranked], expected[order], atol=1e-5, rtol=0)
    top = Reranker(reranker, batch_size=4).rerank(QUERY, tuple(DOCUMENTS), top_n=3)  # any sequence
    assert [r.index for r in top] == order[:3]
    assert len(Reranker(reranker).rerank(QUERY, DOCUMENTS[:2], top_n=10)) == 2  # top_n past the end: all
    np.testing.assert_allclose(Reranker(reranker).scores(QUERY, DOCUMENTS), expected, atol=1e-5, rtol=0)


def test_the_reranker_refuses_bad_input(reranker: str, minilm: str) -> None:
    from provender_embedding import Reranker

    with pytest.raises(InvalidOptionError, match="documents"):
        Reranker(reranker).rerank(QUERY, [])
    with pytest.raises(InvalidOptionError, match="documents"):
        Reranker(reranker).rerank(QUERY, "one string")
    with pytest.raises(InvalidOptionError, match="top_n"):
        Reranker(reranker).rerank(QUERY, ["a"], top_n=0)
    with pytest.raises(UnsupportedError, match=f"{minilm!r} is an embedding model, not a reranker"):
        Reranker(minilm).rerank(QUERY, ["a"])


def test_provender_rerank(reranker: str, reranker_dir: Path, minilm: str) -> None:
    import json

    from helpers import run_cli

    docs = DOCUMENTS[:6]
    expected = predict(reranker_dir, QUERY, docs)
    order = sorted(range(len(docs)), key=lambda i: (-float(expected[i]), i))
    done = run_cli("rerank", "--no-server", "-m", reranker, QUERY, *docs, "--json", "--top-n", "4")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["index"] for r in rows] == order[:4] and [r["document"] for r in rows] == [docs[i] for i in order[:4]]
    np.testing.assert_allclose([r["score"] for r in rows], expected[order[:4]], atol=1e-5, rtol=0)
    # text, documents from stdin (one per line)
    done = run_cli("rerank", "--no-server", "-m", reranker, QUERY, input="first line\n\nsecond line\n")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2 and {line.split()[1] for line in lines} == {"0", "1"}
    assert all(0 < float(line.split()[0]) < 1 for line in lines)
    # usage: exit 2, one line, no traceback
    for args, says in [
        (("rerank", "--no-server", "-m", reranker, QUERY, "a", "--top-n", "0"), "--top-n"),
        (("rerank", "--no-server", QUERY, "a"), "--model"),
        (("rerank", "--no-server", "-m", reranker, QUERY), "no documents"),
    ]:
        done = run_cli(*args, input="")
        assert done.returncode == 2 and says in done.stderr and "Traceback" not in done.stderr, done.stderr
    # failure: an embedding model is no reranker (exit 1, naming it)
    done = run_cli("rerank", "--no-server", "-m", minilm, QUERY, "a")
    assert done.returncode == 1 and f"{minilm!r} is an embedding model, not a reranker" in done.stderr
    assert "Traceback" not in done.stderr


def test_provender_similar_then_rerank(reranker: str, reranker_dir: Path, minilm: str) -> None:
    import json

    from helpers import run_cli

    docs = DOCUMENTS[:12]
    lines = "\n".join(json.dumps({"id": f"d{i}", "text": d}) for i, d in enumerate(docs) if d)
    done = run_cli("embed", "-m", minilm, "-c", "notes", "-i", "/dev/stdin", "--no-server", input=lines)
    assert done.returncode == 0, done.stderr
    plain = json.loads(run_cli("similar", "notes", QUERY, "-n", "8", "--json").stdout)
    done = run_cli("similar", "notes", QUERY, "-n", "3", "--candidates", "8", "--rerank", reranker, "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    retrieved = [h["content"] for h in plain]  # the 8 candidates similarity found
    expected = predict(reranker_dir, QUERY, retrieved)
    order = sorted(range(len(retrieved)), key=lambda i: (-float(expected[i]), i))[:3]
    assert [r["content"] for r in rows] == [retrieved[i] for i in order]
    np.testing.assert_allclose([r["rerank_score"] for r in rows], expected[order], atol=1e-5, rtol=0)
    assert [r["score"] for r in rows] == [plain[i]["score"] for i in order]  # the similarity, kept
    text = run_cli("similar", "notes", QUERY, "-n", "2", "--rerank", reranker)
    assert text.returncode == 0 and len(text.stdout.splitlines()) == 2, text.stderr
    done = run_cli("similar", "notes", QUERY, "--candidates", "4")
    assert done.returncode == 2 and "--candidates applies to --rerank only" in done.stderr
