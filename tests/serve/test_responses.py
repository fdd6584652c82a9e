"""OpenAI's Responses API (stateless) on a real `provender serve`, driven with the real `openai`
package's ``client.responses.create``, streamed and not: text and item input, instructions,
function tools (forced on a random MLX model; written back by the echo model), a max_output_tokens
cut, and the 400s for stored state and bad input while the server serves on."""

from __future__ import annotations

import json
from typing import Any

import pytest

openai = pytest.importorskip("openai")

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
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


def test_text_and_items_streamed_and_not(start_server: Any) -> None:
    client = start_server().client()
    answer = client.responses.create(model="echo:plain", input="the quick brown fox", instructions="be brief")
    assert answer.object == "response" and answer.status == "completed" and answer.output_text == "the quick brown fox"
    assert answer.usage is not None and answer.usage.input_tokens > 0 and answer.usage.output_tokens > 0
    assert answer.store is False

    items = [
        {"role": "user", "content": "first"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "reply"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "second question here"}]},
    ]
    assert client.responses.create(model="echo:plain", input=items).output_text == "second question here"

    cut = client.responses.create(model="echo:plain", input="one two three four", max_output_tokens=2)
    assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens"
    assert cut.output_text == "one two"

    events = list(client.responses.create(model="echo:plain", input="one two three four", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1 and "".join(deltas) == "one two three four"
    assert events[-1].response.output_text == "one two three four" and events[-1].response.usage.output_tokens > 0

    with client.responses.stream(model="echo:plain", input="helper stream works") as stream:
        final = stream.get_final_response()
    assert final.output_text == "helper stream works"


def test_function_call_read_back_and_its_output_taken(start_server: Any) -> None:
    client = start_server().client()
    call = json.dumps({"name": "get_weather", "arguments": {"city": "Oslo", "unit": "c", "days": 2}})
    answer = client.responses.create(model="echo:plain", input=call, tools=[WEATHER])
    [item] = answer.output
    assert item.type == "function_call" and item.name == "get_weather"
    assert json.loads(item.arguments) == {"city": "Oslo", "unit": "c", "days": 2} and item.call_id

    events = list(client.responses.create(model="echo:plain", input=call, tools=[WEATHER], stream=True))
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert len(done) == 1 and json.loads(done[0].arguments) == {"city": "Oslo", "unit": "c", "days": 2}

    turns = [
        {"role": "user", "content": call},
        {"type": "function_call", "call_id": item.call_id, "name": item.name, "arguments": item.arguments},
        {"type": "function_call_output", "call_id": item.call_id, "output": "sunny"},
        {"role": "user", "content": "thanks then"},
    ]
    assert client.responses.create(model="echo:plain", input=turns, tools=[WEATHER]).output_text == "thanks then"
    plain = client.responses.create(model="echo:plain", input=call, tools=[WEATHER], tool_choice="none")
    assert plain.output[0].type == "message"


def test_forced_function_call_on_a_random_model(start_server: Any, cached_tiny: str) -> None:
    pytest.importorskip("llguidance", reason="a forced tool choice needs the constraint engine (tox installs it)")
    client = start_server().client()
    choice = {"type": "function", "name": "get_weather"}
    for stream in (False, True):
        kwargs: dict[str, Any] = dict(
            model=cached_tiny, input="Weather in Oslo?", tools=[WEATHER], tool_choice=choice, max_output_tokens=400
        )
        if stream:
            answer = [e for e in client.responses.create(stream=True, **kwargs) if e.type.startswith("response.")][
                -1
            ].response
        else:
            answer = client.responses.create(**kwargs)
        if answer.status == "incomplete":
            continue
        calls = [item for item in answer.output if item.type == "function_call"]
        assert len(calls) == 1 and calls[0].name == "get_weather", answer.output
        arguments = json.loads(calls[0].arguments)
        assert set(arguments) == {"city", "unit", "days"} and arguments["unit"] in ("c", "f")


def test_stored_state_and_bad_input_are_400s(start_server: Any) -> None:
    server = start_server()
    client = server.client()

    def refused(expect: str, **kwargs: Any) -> None:
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(**{"model": "echo:plain", "input": "hi", **kwargs})
        error = caught.value.body
        assert isinstance(error, dict) and expect in error["message"], error

    refused("previous_response_id: this server keeps no responses", previous_response_id="resp_123")
    refused("store: this server keeps no responses", store=True)
    refused("conversation", conversation="conv_1")
    refused("input", input=[{"type": "input_image", "image_url": "http://x"}])
    refused("input", input=[])
    refused("tool_choice", tool_choice="required")
    refused("temperature", temperature=5)
    refused("unknown field", extra_body={"reasoning_effort": "high"})
    status, body = server.raw("POST", "/v1/responses", b"{nope", {"content-type": "application/json"})
    assert status == 400 and body["error"]["code"] == "invalid_json"
    assert client.responses.create(model="echo:plain", input="still here", store=False).output_text == "still here"
