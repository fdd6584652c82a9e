"""Anthropic's Messages API on a real `provender serve`, driven with the real `anthropic` package:
plain and streamed messages (system, turns, max_tokens, stop_sequences), count_tokens, a tool-use
round trip (a random MLX model held to the tool by tool_choice; the echo model for a call it writes
back), ``x-api-key``, and bad input answered in Anthropic's error shape while the server serves on."""

from __future__ import annotations

import json
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic", reason="tox installs the anthropic package (serve's test extra)")

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 8},
            "unit": {"type": "string", "enum": ["c", "f"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
        },
        "required": ["city", "unit", "days"],
        "additionalProperties": False,
    },
}


def client(server: Any, api_key: str = "unused") -> Any:
    return anthropic.Anthropic(base_url=server.url, api_key=api_key, max_retries=0, timeout=120)


def test_plain_message_with_system_turns_and_stops(start_server: Any) -> None:
    api = client(start_server())
    turns = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": [{"type": "text", "text": "first answer"}]},
        {
            "role": "user",
            "content": [{"type": "text", "text": "say the quick brown fox", "cache_control": {"type": "ephemeral"}}],
        },
    ]
    answer = api.messages.create(
        model="echo:plain", max_tokens=50, system="be brief", messages=turns, metadata={"user_id": "u1"}
    )
    assert answer.type == "message" and answer.role == "assistant" and answer.model == "echo:plain"
    assert [b.type for b in answer.content] == ["text"] and answer.content[0].text == "say the quick brown fox"
    assert answer.stop_reason == "end_turn" and answer.stop_sequence is None
    assert answer.usage.input_tokens > 0 and answer.usage.output_tokens > 0

    cut = api.messages.create(model="echo:plain", max_tokens=2, messages=turns)
    assert cut.stop_reason == "max_tokens" and cut.content[0].text == "say the"

    stopped = api.messages.create(model="echo:plain", max_tokens=50, messages=turns, stop_sequences=["brown", "zzz"])
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "brown"
    assert stopped.content[0].text.rstrip() == "say the quick"

    count = api.messages.count_tokens(model="echo:plain", system="be brief", messages=turns)
    assert count.input_tokens > 0


def test_streamed_message_events(start_server: Any) -> None:
    api = client(start_server())
    messages = [{"role": "user", "content": "one two three four five"}]
    with api.messages.stream(model="echo:plain", max_tokens=50, messages=messages) as stream:
        deltas = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(deltas) > 1 and "".join(deltas) == "one two three four five"
    assert final.content[0].text == "one two three four five" and final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0

    events = list(api.messages.create(model="echo:plain", max_tokens=3, messages=messages, stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[1] == "content_block_start" and kinds[-1] == "message_stop"
    assert kinds[-2] == "message_delta" and kinds[-3] == "content_block_stop"
    assert events[-2].delta.stop_reason == "max_tokens" and events[-2].usage.output_tokens == 3
    assert events[0].message.usage.input_tokens > 0

    stopped = list(
        api.messages.create(model="echo:plain", max_tokens=50, messages=messages, stop_sequences=["four"], stream=True)
    )
    text = "".join(e.delta.text for e in stopped if e.type == "content_block_delta")
    assert text.rstrip() == "one two three" and "four" not in text
    assert stopped[-2].delta.stop_reason == "stop_sequence" and stopped[-2].delta.stop_sequence == "four"


def test_tool_use_round_trip_with_a_forced_tool(start_server: Any, cached_tiny: str) -> None:
    """tool_choice {"type": "tool"} on a random MLX model: a tool_use block whose input fits the
    schema, stop_reason tool_use (streamed and not); the tool_result goes back in the next turn."""
    pytest.importorskip("llguidance", reason="a forced tool choice needs the constraint engine (tox installs it)")
    api = client(start_server())
    ask = [{"role": "user", "content": "What is the weather in Oslo?"}]
    choice = {"type": "tool", "name": "get_weather"}
    answer = api.messages.create(model=cached_tiny, max_tokens=400, messages=ask, tools=[WEATHER], tool_choice=choice)
    if answer.stop_reason == "max_tokens":
        pytest.skip("the random model did not finish its call within 400 tokens")
    assert answer.stop_reason == "tool_use", answer
    [use] = [b for b in answer.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.id.startswith("toolu_")
    assert set(use.input) == {"city", "unit", "days"} and use.input["unit"] in ("c", "f")
    assert 1 <= use.input["days"] <= 7 and len(use.input["city"]) <= 8

    with api.messages.stream(
        model=cached_tiny, max_tokens=400, messages=ask, tools=[WEATHER], tool_choice={"type": "any"}
    ) as stream:
        final = stream.get_final_message()
    if final.stop_reason != "max_tokens":
        assert final.stop_reason == "tool_use"
        [streamed] = [b for b in final.content if b.type == "tool_use"]
        assert streamed.name == "get_weather" and set(streamed.input) == {"city", "unit", "days"}

    turns = [
        *ask,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in answer.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21 C"}]},
    ]
    after = api.messages.create(model=cached_tiny, max_tokens=8, messages=turns, tools=[WEATHER])
    assert after.stop_reason in ("end_turn", "max_tokens", "tool_use") and after.usage.input_tokens > 0


def test_tool_use_read_back_from_the_reply(start_server: Any) -> None:
    """A reply that is a call (the echo model writes back the call it was sent) comes back as a
    tool_use block; a tool_result turn is taken; tool_choice none offers no tools."""
    api = client(start_server())
    call = json.dumps({"name": "get_weather", "arguments": {"city": "Oslo", "unit": "c", "days": 2}})
    answer = api.messages.create(
        model="echo:plain", max_tokens=50, messages=[{"role": "user", "content": call}], tools=[WEATHER]
    )
    assert answer.stop_reason == "tool_use"
    [use] = answer.content
    assert (
        use.type == "tool_use" and use.name == "get_weather" and use.input == {"city": "Oslo", "unit": "c", "days": 2}
    )
    with api.messages.stream(
        model="echo:plain", max_tokens=50, messages=[{"role": "user", "content": call}], tools=[WEATHER]
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and final.content[0].input == use.input

    turns = [
        {"role": "user", "content": call},
        {"role": "assistant", "content": [use.model_dump(exclude_none=True)]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": use.id, "content": [{"type": "text", "text": "sunny"}]},
                {"type": "text", "text": "thanks then"},
            ],
        },
    ]
    after = api.messages.create(model="echo:plain", max_tokens=50, messages=turns, tools=[WEATHER])
    assert after.content[0].text == "thanks then" and after.stop_reason == "end_turn"
    plain = api.messages.create(
        model="echo:plain",
        max_tokens=50,
        messages=[{"role": "user", "content": call}],
        tools=[WEATHER],
        tool_choice={"type": "none"},
    )
    assert plain.content[0].type == "text" and plain.stop_reason == "end_turn"


def test_x_api_key_is_the_key(start_server: Any) -> None:
    server = start_server(env={"PROVENDER_SERVER__API_KEY": "s3cret"})
    messages = [{"role": "user", "content": "hi"}]
    assert client(server, "s3cret").messages.create(model="echo:plain", max_tokens=5, messages=messages).content
    with pytest.raises(anthropic.AuthenticationError) as caught:
        client(server, "wrong").messages.create(model="echo:plain", max_tokens=5, messages=messages)
    assert caught.value.status_code == 401 and caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "authentication_error"
    bearer = anthropic.Anthropic(base_url=server.url, auth_token="s3cret", max_retries=0)
    assert bearer.messages.create(model="echo:plain", max_tokens=5, messages=messages).content


def test_bad_input_is_a_4xx_in_anthropics_shape(start_server: Any) -> None:
    server = start_server()
    api = client(server)
    ok = [{"role": "user", "content": "hi"}]

    def refused(expect: str, status: int = 400, **kwargs: Any) -> None:
        kwargs = {"model": "echo:plain", "max_tokens": 5, "messages": ok, **kwargs}
        with pytest.raises(anthropic.APIStatusError) as caught:
            api.messages.create(**{k: v for k, v in kwargs.items() if v is not None})
        assert caught.value.status_code == status, caught.value.body
        body = caught.value.body
        assert body["type"] == "error" and set(body["error"]) == {"type", "message"}, body
        assert expect in body["error"]["message"], body

    missing = json.dumps({"model": "echo:plain", "messages": ok}).encode()  # the SDK itself wants max_tokens
    status, body = server.raw("POST", "/v1/messages", missing, {"content-type": "application/json"})
    assert status == 400 and body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }
    refused("max_tokens", max_tokens=0)
    refused("temperature", extra_body={"temperature": 1.5})  # older SDKs send it; Anthropic's range is 0..1
    refused("messages", messages=[])
    refused("messages.0.content", messages=[{"role": "user", "content": [{"type": "image", "source": {}}]}])
    refused(
        "tool_use block belongs",
        messages=[{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}],
    )
    refused("tool_choice", tool_choice={"type": "any"})
    refused("unknown field", extra_body={"thinking": {"type": "enabled", "budget_tokens": 10}})
    refused("echo", status=404, model="echo:nosuchmode")
    status, body = server.raw("POST", "/v1/messages", b"{not json", {"content-type": "application/json"})
    assert status == 400 and body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    status, body = server.raw("POST", "/v1/messages", b"[1, 2]", {"content-type": "application/json"})
    assert status == 400 and body["type"] == "error"
    with pytest.raises(anthropic.APIStatusError) as caught:  # a streamed request refused before it starts
        api.messages.create(model="echo:plain", max_tokens=5, messages=ok, stream=True, tool_choice={"type": "tool"})
    assert caught.value.status_code == 400 and caught.value.body["type"] == "error"
    with pytest.raises(anthropic.NotFoundError) as missing_model:  # refused by the model's admission, streamed
        api.messages.create(model="echo:nosuchmode", max_tokens=5, messages=ok, stream=True)
    assert missing_model.value.body["error"]["type"] == "not_found_error"
    assert api.messages.create(model="echo:plain", max_tokens=5, messages=ok).content[0].text == "hi"  # still serving
