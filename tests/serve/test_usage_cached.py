"""A reply's usage says how many of its prompt tokens a prompt cache supplied, as OpenAI's
``prompt_tokens_details.cached_tokens``, Anthropic's ``cache_read_input_tokens`` and the Responses
API's ``input_tokens_details.cached_tokens`` do, through the real clients, batched and alone."""

from __future__ import annotations

from typing import Any

import pytest

openai = pytest.importorskip("openai", reason="the server tests drive it with the openai package (tox installs it)")
anthropic = pytest.importorskip("anthropic", reason="tox installs the anthropic package (serve's test extra)")

SYSTEM = "You answer briefly and kindly, in plain words. " * 6


def test_usage_counts_the_prompt_tokens_a_prompt_cache_supplied(start_server: Any, cached_tiny: str) -> None:
    from provender_mlx import MLXProvider

    server = start_server()
    client = server.client()
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "hello there, how are you"},
    ]
    first = client.chat.completions.create(model=cached_tiny, messages=messages, max_tokens=4)
    assert first.usage is not None and first.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 0  # a fresh server: nothing to reuse
    # the runtime's count of the rendered chat template, not the messages' words counted apart
    local = MLXProvider(cached_tiny).complete(messages=messages, max_tokens=1)
    assert first.usage.prompt_tokens == local.prompt_tokens and local.cached_tokens == 0

    messages += [
        {"role": "assistant", "content": first.choices[0].message.content},
        {"role": "user", "content": "tell me more about that"},
    ]
    second = client.chat.completions.create(model=cached_tiny, messages=messages, max_tokens=4)
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached is not None and first.usage.prompt_tokens // 2 < cached < second.usage.prompt_tokens

    # the same turn again, streamed, and alone (a seed keeps it out of the batch): the whole prompt
    # but its last token is now cached
    stream = client.chat.completions.create(
        model=cached_tiny, messages=messages, max_tokens=4, stream=True, stream_options={"include_usage": True}
    )
    usage = [chunk.usage for chunk in stream if chunk.usage is not None][-1]
    assert usage.prompt_tokens == second.usage.prompt_tokens
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens >= cached
    alone = client.chat.completions.create(model=cached_tiny, messages=messages, max_tokens=4, seed=7)
    assert alone.usage is not None and alone.usage.prompt_tokens_details is not None
    assert alone.usage.prompt_tokens == second.usage.prompt_tokens
    assert alone.usage.prompt_tokens_details.cached_tokens == second.usage.prompt_tokens - 1

    # Anthropic's client: input_tokens are those processed, cache_read_input_tokens those reused
    claude = anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0, timeout=120)
    turns = [m for m in messages if m["role"] != "system"]
    reply = claude.messages.create(model=cached_tiny, system=SYSTEM, messages=turns, max_tokens=4)
    assert reply.usage.cache_read_input_tokens == second.usage.prompt_tokens - 1
    assert reply.usage.input_tokens + reply.usage.cache_read_input_tokens == second.usage.prompt_tokens
    with claude.messages.stream(model=cached_tiny, system=SYSTEM, messages=turns, max_tokens=4) as events:
        streamed = events.get_final_message()
    assert streamed.usage.cache_read_input_tokens == second.usage.prompt_tokens - 1
    assert streamed.usage.input_tokens == 1

    # the Responses API
    response = client.responses.create(model=cached_tiny, input=messages, max_output_tokens=4)
    assert response.usage is not None
    assert response.usage.input_tokens == second.usage.prompt_tokens
    assert response.usage.input_tokens_details.cached_tokens == second.usage.prompt_tokens - 1

    # /metrics adds them up, through prometheus_client's own parser
    from helpers import scrape

    samples = scrape(server)
    model = (("model", cached_tiny),)
    replies = [first.usage, second.usage, usage, alone.usage]
    reused = sum(u.prompt_tokens_details.cached_tokens for u in replies if u.prompt_tokens_details is not None)
    reused += 2 * (second.usage.prompt_tokens - 1) + response.usage.input_tokens_details.cached_tokens
    assert samples["provender_prompt_cached_tokens_total"][model] == reused
    assert samples["provender_prompt_tokens_total"][model] == sum(u.prompt_tokens for u in replies) + 3 * (
        second.usage.prompt_tokens
    )


def test_cached_tokens_are_not_claimed_where_no_prompt_cache_was_looked_at(start_server: Any, cached_tiny: str) -> None:
    client_server = start_server(env={"PROVENDER_MEMORY__PROMPT_CACHE_BYTES": "0"})
    client = client_server.client()
    for model in ("echo:upper", cached_tiny):  # a provider that keeps none; one with its cache off
        for _ in range(2):
            reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
            assert reply.usage is not None and reply.usage.prompt_tokens_details is None
    from helpers import scrape

    assert "provender_prompt_cached_tokens_total" not in scrape(client_server)  # no series: nothing was looked at
