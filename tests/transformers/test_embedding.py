"""TransformersProvider embedding with the real all-MiniLM-L6-v2 (sentence-transformers and mean pooling)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import run_cli
from provender import CacheManager, InvalidOptionError, UnsupportedError
from provender_transformers import TransformersProvider


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)  # type: ignore[no-any-return]


def test_matches_the_reference_vectors(minilm: str, reference: dict[str, Any]) -> None:
    provider = TransformersProvider(minilm)
    vectors = provider.embed(reference["texts"])
    expected = np.array(reference["embeddings"], dtype=np.float32)
    assert vectors.dtype == np.float32 and vectors.shape == expected.shape == (12, 384)
    scores = cosine(vectors, expected)
    assert scores.min() >= 0.9999, dict(zip(reference["texts"], scores.round(6), strict=True))
    assert "" in reference["texts"] and any(len(t.split()) >= 400 for t in reference["texts"])  # truncation too
    assert provider.dimension() == 384
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # modules.json: Normalize


def test_is_exactly_sentence_transformers(minilm: str, minilm_dir: Path, reference: dict[str, Any]) -> None:
    from sentence_transformers import SentenceTransformer

    direct = SentenceTransformer(str(minilm_dir), device="cpu").encode(reference["texts"], convert_to_numpy=True)
    np.testing.assert_allclose(TransformersProvider(minilm).embed(reference["texts"]), direct, atol=1e-6)


def test_normalize_option(minilm: str, reference: dict[str, Any]) -> None:
    provider = TransformersProvider(minilm)
    texts = reference["texts"][:4]
    raw = provider.embed(texts, normalize=False)
    norms = np.linalg.norm(raw, axis=1)
    assert norms.min() > 1.5  # really not normalised (MiniLM's mean-pooled vectors are longer than 1)
    np.testing.assert_allclose(raw / norms[:, None], provider.embed(texts), atol=1e-5)
    np.testing.assert_allclose(provider.embed(texts, normalize=True, batch_size=1), provider.embed(texts), atol=1e-5)


def test_other_encoders_get_mean_pooling(minilm_dir: Path, tmp_path: Path, reference: dict[str, Any]) -> None:
    """The same weights without modules.json: plain mean pooling over the real tokens, which is
    MiniLM's own pipeline (mean pooling, then Normalize) for texts under its 256-token limit."""
    bare = tmp_path / "bare-minilm"
    bare.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        if (minilm_dir / name).exists():
            os.symlink(minilm_dir / name, bare / name)
    texts = [t for t in reference["texts"] if len(t.split()) < 150]
    expected = np.array([reference["embeddings"][reference["texts"].index(t)] for t in texts], dtype=np.float32)
    provider = TransformersProvider(str(bare))
    raw = provider.embed(texts)
    assert np.linalg.norm(raw, axis=1).min() > 1.5  # mean pooling alone does not normalise
    assert cosine(raw, expected).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(provider.embed(texts, normalize=True), axis=1), 1.0, atol=1e-5)
    assert provider.dimension() == 384


def test_embedder_and_cli_run_on_it_unchanged(minilm: str, reference: dict[str, Any], tmp_path: Path) -> None:
    from provender_embedding import Embedder

    embedder = Embedder(f"transformers:{minilm}", batch_size=4)
    vectors = embedder.embed(reference["texts"])
    assert cosine(vectors, np.array(reference["embeddings"])).min() >= 0.9999
    assert embedder.dimension == 384
    out_file = tmp_path / "v.npy"
    out = run_cli("embed", "-m", f"transformers:{minilm}", "hello world", "-o", str(out_file))
    assert out.returncode == 0, out.stderr
    np.testing.assert_allclose(np.load(out_file)[0], embedder.embed_one("hello world"), atol=1e-5)


def test_embedding_errors(minilm: str) -> None:
    provider = TransformersProvider(minilm)
    with pytest.raises(UnsupportedError, match="embedding model"):
        provider.generate("hello")
    with pytest.raises(UnsupportedError, match="pooling"):
        provider.embed(["x"], pooling="cls")
    with pytest.raises(InvalidOptionError, match="texts"):
        provider.embed("not a list")  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="batch_size"):
        provider.embed(["x"], batch_size=0)
    assert provider.count_tokens("hello world") == 4  # [CLS] hello world [SEP]
    assert CacheManager().in_use(minilm)
    rows = json.loads(run_cli("cache", "ls", "--json").stdout)
    assert [r["name"] for r in rows] == [minilm]
