"""``/metrics`` on a real `provender serve`, read with `prometheus_client`'s own parser: the
request counts by route, model and status match the requests made (OpenAI, Anthropic and
Responses routes, refusals too), tokens match the usage answered, one time-to-first-token and
rate observation per generation, loaded models, the cache's size and limit; behind the key."""

from __future__ import annotations

from typing import Any

import pytest

prometheus_client = pytest.importorskip("prometheus_client")
anthropic = pytest.importorskip("anthropic")
from helpers import scrape  # noqa: E402


def requests(samples: Any, route: str, model: str, status: int) -> float:
    key = (("model", model), ("route", route), ("status", str(status)))
    return float(samples.get("provender_requests_total", {}).get(key, 0.0))


def test_counts_match_the_requests_made(start_server: Any) -> None:
    server = start_server()
    client = server.client()
    prompt, completion = 0, 0
    for text in ("one two three", "four five"):
        answer = client.chat.completions.create(model="echo:plain", messages=[{"role": "user", "content": text}])
        prompt, completion = prompt + answer.usage.prompt_tokens, completion + answer.usage.completion_tokens
    streamed = client.completions.create(model="echo:upper", prompt="a b c d", stream=True, max_tokens=3)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == "A B C"
    with pytest.raises(openai_error()):
        client.chat.completions.create(model="echo:plain", messages=[], max_tokens=3)
    api = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
    message = api.messages.create(model="echo:plain", max_tokens=9, messages=[{"role": "user", "content": "hi there"}])
    response = client.responses.create(model="echo:lower", input="SOME WORDS")

    samples = scrape(server)
    assert requests(samples, "/v1/chat/completions", "echo:plain", 200) == 2
    assert requests(samples, "/v1/chat/completions", "echo:plain", 400) == 1
    assert requests(samples, "/v1/completions", "echo:upper", 200) == 1
    assert requests(samples, "/v1/messages", "echo:plain", 200) == 1
    assert requests(samples, "/v1/responses", "echo:lower", 200) == 1
    assert requests(samples, "/health", "", 200) >= 1  # the fixture's start-up probes

    tokens_in = samples["provender_prompt_tokens_total"]
    tokens_out = samples["provender_completion_tokens_total"]
    plain = (("model", "echo:plain"),)
    assert tokens_in[plain] == prompt + message.usage.input_tokens
    assert tokens_out[plain] == completion + message.usage.output_tokens
    assert tokens_out[(("model", "echo:upper"),)] == 3
    assert response.usage is not None and tokens_out[(("model", "echo:lower"),)] == response.usage.output_tokens
    assert samples["provender_time_to_first_token_seconds_count"][plain] == 3  # two chats, one message
    assert samples["provender_tokens_per_second_count"][plain] == 3
    assert samples["provender_models_loaded"][()] == len(server.ps()) == 2  # memory.max_models
    assert samples["provender_queue_depth"][()] == 0
    assert samples["provender_cache_max_size_bytes"][()] > 0 and samples["provender_cache_size_bytes"][()] >= 0
    assert ("provender_cache_hits_total" in samples) and ("provender_cache_misses_total" in samples)

    # a path the server does not serve is one "other" route, never one series per path
    server.raw("GET", "/no/such/path")
    server.raw("GET", "/another/one")
    assert requests(scrape(server), "other", "", 404) == 2


def openai_error() -> type[Exception]:
    import openai

    return openai.BadRequestError  # type: ignore[no-any-return]


def test_metrics_sit_behind_the_key(start_server: Any) -> None:
    server = start_server(env={"PROVENDER_SERVER__API_KEY": "k3y"})
    status, body = server.raw("GET", "/metrics")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    samples = scrape(server, "k3y")
    assert requests(samples, "/metrics", "", 401) == 1


def test_each_app_counts_in_a_registry_of_its_own() -> None:
    from provender_serve._app import ServerOptions, create_app

    first, second = create_app(ServerOptions()), create_app(ServerOptions())
    a, b = first.state.server.metrics, second.state.server.metrics
    a.count("/v1/chat/completions", "m", 200)
    assert a.registry is not b.registry and a.registry is not prometheus_client.REGISTRY
    assert b"provender_requests_total{" not in b.render() and b'route="/v1/chat/completions"' in a.render()
    assert prometheus_client.REGISTRY.get_sample_value("provender_requests_total") is None
