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
