"""``logprobs`` / ``top_logprobs`` through a real `provender serve` and the real `openai` package, for
chat (``choices[].logprobs.content``) and completions (the legacy shape), streamed and not: the values
are those the provider's own Python API (``Provider.complete``) gives for the same request."""

from __future__ import annotations

import json
from typing import Any

import pytest

openai = pytest.importorskip("openai")

USER = [{"role": "user", "content": "count the tokens"}]
TOL = 1e-5


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= TOL


def test_chat_logprobs_equal_the_providers(start_server: Any, cached_tiny: str) -> None:
    from provender_mlx import MLXProvider

    provider = MLXProvider(cached_tiny)
    expected = provider.complete(messages=USER, max_tokens=10, temperature=0, logprobs=True, top_logprobs=3)
    assert expected.logprobs is not None and len(expected.logprobs) == 10
    client = start_server().client()
    answer = client.chat.completions.create(
        model=cached_tiny, messages=USER, max_tokens=10, temperature=0, logprobs=True, top_logprobs=3
    )
    choice = answer.choices[0]
    assert choice.message.content == expected.text and choice.finish_reason == expected.finish_reason == "length"
    content = choice.logprobs.content
    assert len(content) == len(expected.logprobs) == answer.usage.completion_tokens
    for got, want in zip(content, expected.logprobs, strict=True):
        assert got.token == want.token and _close(got.logprob, want.logprob)
        assert got.bytes == want.bytes  # the token's own bytes, not its text's (part of a character)
        assert [t.token for t in got.top_logprobs] == [t for t, _ in want.top] and len(got.top_logprobs) == 3
        assert [t.bytes for t in got.top_logprobs] == want.top_bytes
        assert all(_close(g.logprob, w) for g, (_, w) in zip(got.top_logprobs, want.top, strict=True))
        assert _close(got.top_logprobs[0].logprob, got.logprob)  # greedy: the chosen token is the top one

    chunks = list(
        client.chat.completions.create(
            model=cached_tiny, messages=USER, max_tokens=10, temperature=0, logprobs=True, top_logprobs=3, stream=True
        )
    )
    streamed = [lp for c in chunks if c.choices and c.choices[0].logprobs for lp in c.choices[0].logprobs.content]
    assert [(lp.token, lp.logprob) for lp in streamed] == [(lp.token, lp.logprob) for lp in content]
    joined = b"".join(bytes(lp.bytes or []) for lp in content)  # OpenAI's reading of ``bytes``
    assert joined.decode("utf-8", "ignore") == expected.text.replace("\ufffd", "")
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected.text

    plain = client.chat.completions.create(model=cached_tiny, messages=USER, max_tokens=4, logprobs=True)
    assert all(lp.top_logprobs == [] for lp in plain.choices[0].logprobs.content)  # none asked: the chosen only
    assert client.chat.completions.create(model=cached_tiny, messages=USER, max_tokens=4).choices[0].logprobs is None
    MLXProvider.clear_model_cache()


def test_completion_logprobs_in_the_legacy_shape(start_server: Any, cached_tiny: str) -> None:
    from provender_mlx import MLXProvider

    expected = MLXProvider(cached_tiny).complete("one two", max_tokens=8, temperature=0, logprobs=True, top_logprobs=2)
    assert expected.logprobs is not None
    client = start_server().client()
    answer = client.completions.create(model=cached_tiny, prompt="one two", max_tokens=8, temperature=0, logprobs=2)
    choice = answer.choices[0]
    assert choice.text == expected.text
    lp = choice.logprobs
    assert lp.tokens == [t.token for t in expected.logprobs]
    assert all(_close(a, b.logprob) for a, b in zip(lp.token_logprobs, expected.logprobs, strict=True))
    for top, want in zip(lp.top_logprobs, expected.logprobs, strict=True):
        assert set(top) == {t for t, _ in want.top} | {want.token}  # the alternatives and the chosen token
        assert all(_close(top[t], v) for t, v in want.top)
    offsets = [0]
    for token in lp.tokens[:-1]:
        offsets.append(offsets[-1] + len(token))
    assert lp.text_offset == offsets  # characters into the completion

    chunks = list(
        client.completions.create(
            model=cached_tiny, prompt="one two", max_tokens=8, temperature=0, logprobs=2, stream=True
        )
    )
    tokens = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.tokens]
    offsets_streamed = [
        o for c in chunks if c.choices and c.choices[0].logprobs for o in c.choices[0].logprobs.text_offset
    ]
    assert tokens == lp.tokens and offsets_streamed == lp.text_offset
    MLXProvider.clear_model_cache()


def test_logprobs_limits_are_400s(start_server: Any, cached_tiny: str) -> None:
    server = start_server()
    client = server.client()
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        client.chat.completions.create(model=cached_tiny, messages=USER, logprobs=True, top_logprobs=21)
    with pytest.raises(openai.BadRequestError, match=r"top_logprobs.*logprobs"):
        client.chat.completions.create(model=cached_tiny, messages=USER, top_logprobs=2)
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        client.completions.create(model=cached_tiny, prompt="x", logprobs=21)
    status, body = server.raw(
        "POST",
        "/v1/completions",
        json.dumps({"model": cached_tiny, "prompt": "x", "logprobs": True}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 400 and "logprobs" in body["error"]["message"]  # an integer, as OpenAI's
    with pytest.raises(openai.BadRequestError, match="logprobs"):  # a provider that cannot give them says so
        client.chat.completions.create(model="echo:upper", messages=USER, logprobs=True)
    assert client.chat.completions.create(model=cached_tiny, messages=USER, max_tokens=2).choices  # still serving
