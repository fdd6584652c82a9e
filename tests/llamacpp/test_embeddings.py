"""all-MiniLM-L6-v2 as a GGUF, run by llama.cpp, against sentence-transformers' reference vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from provender import InvalidOptionError, UnsupportedError
from provender_llamacpp import LlamaCppProvider

REFERENCE = Path(__file__).parent.parent / "data" / "minilm-embeddings.json"
ST_MAX_SEQ_LENGTH = 256  # sentence-transformers' max_seq_length for this model (the GGUF allows 512)


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(REFERENCE.read_text())
    return data


def test_minilm_gguf_matches_sentence_transformers(cached_minilm: str, reference: dict[str, Any]) -> None:
    provider = LlamaCppProvider(cached_minilm)
    vectors = provider.embed(reference["texts"], max_length=ST_MAX_SEQ_LENGTH, normalize=True)
    expected = np.asarray(reference["embeddings"], dtype=np.float32)
    assert vectors.shape == expected.shape == (12, 384) and vectors.dtype == np.float32
    cosines = (vectors * expected).sum(axis=1)
    print(f"\nMiniLM GGUF (llama.cpp) vs sentence-transformers: min cosine {cosines.min():.6f}")
    assert cosines.min() >= 0.99, cosines


def test_embedder_over_the_provider(cached_minilm: str, reference: dict[str, Any]) -> None:
    from provender_embedding import Embedder

    embedder = Embedder(f"llamacpp:{cached_minilm}")
    assert embedder.dimension == 384
    short = [t for t in reference["texts"] if len(t) < 500]  # within both models' length limits
    vectors = embedder.embed(short)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    expected = np.asarray([reference["embeddings"][reference["texts"].index(t)] for t in short])
    assert (vectors * expected).sum(axis=1).min() >= 0.99
    raw = LlamaCppProvider(cached_minilm).embed(short)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)  # the provider pools; the Embedder normalises
    assert np.allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), vectors, atol=1e-4)


def test_batching_does_not_change_vectors(cached_minilm: str, minilm_gguf: Path) -> None:
    from llama_cpp import Llama

    texts = [f"text number {i}: {'the cache keeps models ' * (i % 7)}" for i in range(40)]
    provider = LlamaCppProvider(cached_minilm)
    together = provider.embed(texts)
    alone = np.stack([provider.embed([t])[0] for t in texts[:5]])
    cos = (together[:5] * alone).sum(1) / np.linalg.norm(together[:5], axis=1) / np.linalg.norm(alone, axis=1)
    assert cos.min() > 0.99999  # batch composition changes only float rounding
    llm = Llama(str(minilm_gguf), embedding=True, n_ctx=512, n_batch=512, n_ubatch=512, verbose=False)
    direct = np.asarray(llm.embed(texts), dtype=np.float32)  # llama-cpp-python's own loop
    llm.close()
    assert np.allclose(together, direct, atol=1e-6)  # the same batches: the same numbers


def test_long_text_is_truncated_keeping_its_separator(cached_minilm: str, reference: dict[str, Any]) -> None:
    provider = LlamaCppProvider(cached_minilm)
    long = " ".join(["word"] * 600)
    default = provider.embed([long])  # the GGUF's context (512 tokens)
    assert default.shape == (1, 384) and np.isfinite(default).all()
    cut = provider.embed([long], max_length=ST_MAX_SEQ_LENGTH)
    same = provider.embed([" ".join(["word"] * (ST_MAX_SEQ_LENGTH - 2))])  # [CLS] + 254 words + [SEP]
    assert np.allclose(cut, same, atol=1e-5)


def test_embedding_edge_cases(cached_minilm: str) -> None:
    provider = LlamaCppProvider(cached_minilm)
    assert provider.dimension() == 384
    assert provider.embed([]).shape == (0, 384)
    assert provider.embed([""]).shape == (1, 384)
    with pytest.raises(InvalidOptionError):
        provider.embed("one text")  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="max_length"):
        provider.embed(["x"], max_length=1)
    with pytest.raises(UnsupportedError, match="pooling"):
        provider.embed(["x"], pooling="cls")
    with pytest.raises(UnsupportedError, match="embedding model"):
        provider.generate("Hello")
    with pytest.raises(UnsupportedError, match="embedding model"):
        provider.chat([{"role": "user", "content": "Hello"}])


def test_a_generation_model_does_not_embed(cached_tiny: str) -> None:
    provider = LlamaCppProvider(cached_tiny)
    with pytest.raises(UnsupportedError, match="embed"):
        provider.embed(["x"])
    with pytest.raises(UnsupportedError):
        provider.dimension()
