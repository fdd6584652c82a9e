"""Reranking in the provider contract: `Provider.rerank`, `check_rerank_input`, and the error a
model of another kind gives (`PooledProvider.wrong_kind`), on a pooled provider whose "models"
are real files in the real cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from provender import (
    CacheManager,
    InvalidOptionError,
    LoadedModel,
    ModelNotFoundError,
    PooledProvider,
    Provider,
    UnsupportedError,
    check_rerank_input,
)
from provender.testing import ProviderContract


class Overlap(PooledProvider):
    """Scores a document by the share of the query's words it holds; kind from words.txt."""

    name = "overlap"
    kinds = frozenset({"generation", "embedding", "rerank"})

    def fetch(self, cache: CacheManager) -> None:
        raise ModelNotFoundError(self.model, "not cached")

    def load_files(self, path: Path) -> LoadedModel:
        kind = (path / "words.txt").read_text().strip()
        return LoadedModel(self.model, kind, kind=kind)

    def score(self, item: LoadedModel, query: str, documents: list[str], options: dict[str, Any]) -> list[float]:
        words = set(query.lower().split())
        return [len(words & set(d.lower().split())) / max(1, len(words)) for d in documents]

    def encode(self, item: LoadedModel, texts: list[str], options: dict[str, Any]) -> Any:
        import numpy as np

        return np.ones((len(texts), 2), dtype=np.float32)

    def embedding_size(self, item: LoadedModel) -> int:
        return 2

    def generate(self, prompt: str, **options: Any) -> str:
        self.check_options(options)
        with self.using("generation"):
            return prompt


@pytest.fixture(autouse=True)
def cache(cache_dir: Path, monkeypatch: pytest.MonkeyPatch, make_files: Any) -> Iterator[CacheManager]:
    monkeypatch.setenv("PROVENDER_CACHE__DIR", str(cache_dir))
    cm = CacheManager()
    for kind in ("rerank", "embedding", "generation"):
        cm.import_model(make_files(kind, {"words.txt": kind.encode()}), f"me/{kind}")
    Overlap.clear_model_cache()
    yield cm
    Overlap.clear_model_cache()


class TestOverlapKeepsTheContract(ProviderContract):
    provider_name = "overlap"
    model = "me/rerank"
    capabilities: ClassVar[set[str]] = {"rerank"}

    def make_provider(self) -> Provider:
        return Overlap(self.model)


def test_scores_come_in_the_documents_order() -> None:
    scores = Overlap("me/rerank").rerank("red fox", ["a blue fox", "nothing", "the red fox"])
    assert scores == [0.5, 0.0, 1.0]


def test_an_embedding_model_asked_to_rerank_names_itself() -> None:
    with pytest.raises(UnsupportedError) as info:
        Overlap("me/embedding").rerank("q", ["d"])
    message = str(info.value)
    assert "'me/embedding' is an embedding model, not a reranker" in message and "cross-encoder" in message
    assert "\n" not in message


def test_a_generation_model_asked_to_rerank_and_a_reranker_asked_to_embed_or_generate() -> None:
    with pytest.raises(UnsupportedError, match="'me/generation' is a text-generation model, not a reranker"):
        Overlap("me/generation").rerank("q", ["d"])
    with pytest.raises(UnsupportedError, match=r"'me/rerank' is a reranker; use rerank\(\)"):
        Overlap("me/rerank").embed(["x"])
    with pytest.raises(UnsupportedError, match=r"'me/rerank' is a reranker; use rerank\(\)"):
        Overlap("me/rerank").generate("x")
    # the messages embeddings and generation gave before reranking existed are unchanged
    with pytest.raises(UnsupportedError, match="'me/generation' is a text-generation model; embeddings need"):
        Overlap("me/generation").embed(["x"])
    with pytest.raises(UnsupportedError, match=r"'me/embedding' is an embedding model; use embed\(\)"):
        Overlap("me/embedding").generate("x")


@pytest.mark.parametrize(
    ("query", "documents", "options", "error", "says"),
    [
        ("q", [], {}, InvalidOptionError, "documents=[]: expected a non-empty list of strings (nothing to rerank)"),
        ("q", "one document", {}, InvalidOptionError, "documents='str'"),
        ("q", ["ok", 3], {}, InvalidOptionError, "documents[1]='int': expected a string"),
        (None, ["d"], {}, InvalidOptionError, "query='NoneType'"),
        ("q", ["d"], {"top_k": 3}, UnsupportedError, "rerank option 'top_k'"),
        ("q", ["d"], {"batch_size": 0}, InvalidOptionError, "batch_size=0"),
    ],
)
def test_bad_input_is_one_clear_error(
    query: Any, documents: Any, options: dict[str, Any], error: type[Exception], says: str
) -> None:
    with pytest.raises(error) as info:
        check_rerank_input(query, documents, options, provider="overlap")
    assert says in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(error):  # and the provider refuses it before loading anything
        Overlap("me/nothing-cached").rerank(query, documents, **options)


def test_a_provider_that_does_not_rerank_says_so() -> None:
    with pytest.raises(UnsupportedError, match="does not support rerank"):
        Provider("m").rerank("q", ["d"])


def test_mlx_does_not_claim_a_cross_encoder_as_an_embedding_model(make_files: Any) -> None:
    """A BERT cross-encoder has what MLX's encoder looks for (bert, tokenizer.json, safetensors,
    even modules.json when sentence-transformers saved it): its classifier head says reranker."""
    import json

    detect = pytest.importorskip("provender_mlx._detect", reason="install packages/provider-mlx")
    files: dict[str, int | bytes] = {"tokenizer.json": b"{}", "model.safetensors": 64, "modules.json": b"[]"}
    encoder = make_files("encoder", {**files, "config.json": json.dumps({"model_type": "bert"}).encode()})
    config = {"model_type": "bert", "architectures": ["BertForSequenceClassification"]}
    cross = make_files("cross", {**files, "config.json": json.dumps(config).encode()})
    assert detect.encoder_evidence(encoder) is not None
    assert detect.encoder_evidence(cross) is None


def test_the_base_calls_the_subclass_steps_on_the_loaded_model() -> None:
    """`embed`, `dimension` and `rerank` come from `PooledProvider`, which checks the input and
    hands the loaded model of the right kind to `encode`, `embedding_size` and `score`."""
    assert Overlap("me/embedding").embed(["a", "b"]).shape == (2, 2)
    assert Overlap("me/embedding").dimension() == 2
    with pytest.raises(UnsupportedError, match="'me/rerank' is a reranker"):
        Overlap("me/rerank").dimension()
    with pytest.raises(UnsupportedError, match=r"count_tokens.*no tokenizer"):  # its LoadedModel has none
        Overlap("me/rerank").count_tokens("x")


class GenerationOnly(Overlap):
    name = "generation-only"
    kinds = frozenset({"generation"})


@pytest.mark.parametrize(
    ("call", "capability"),
    [
        (lambda p: p.embed(["x"]), "embed"),
        (lambda p: p.rerank("q", ["d"]), "rerank"),
        (lambda p: p.dimension(), "dimension"),
    ],
)
def test_a_kind_the_provider_does_not_load_is_refused_before_loading(call: Any, capability: str) -> None:
    # "me/nothing-cached" is not in the cache: loading it would raise ModelNotFoundError instead
    with pytest.raises(UnsupportedError, match=f"provider 'generation-only' does not support {capability}$"):
        call(GenerationOnly("me/nothing-cached"))
