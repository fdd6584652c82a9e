"""Structured output through a real `provender serve`: ``response_format`` (json_schema, json_object)
and ``tool_choice`` ("required", a named function, "none") on a random-weight MLX model, driven with
the real `openai` package (``chat.completions.parse`` included), and the 400s for what is refused."""

from __future__ import annotations

import json
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

openai = pytest.importorskip("openai")
pytest.importorskip("llguidance", reason="structured output needs the llguidance engine (tox installs it)")

USER = [{"role": "user", "content": "Describe a pet as JSON."}]


class Pet(BaseModel):
    kind: Literal["cat", "dog", "fish"]
    name: str = Field(max_length=6)
    age: int = Field(ge=0, le=30)
    vaccinated: bool
    tags: list[Literal["small", "big", "old"]] = Field(max_length=2)


class Owner(BaseModel):
    pet: Pet
    score: float = Field(ge=0, le=1)


WEATHER = {
    "type": "function",
    "function": {
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
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99}, "b": {"type": "boolean"}},
            "required": ["a", "b"],
            "additionalProperties": False,
        },
    },
}


def _messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Describe pet number {i} as JSON, please {'!' * i}"}]


def test_parse_with_a_pydantic_model_on_a_random_model(start_server: Any, cached_tiny: str) -> None:
    """`chat.completions.parse(response_format=Model)`: every reply that stops parses into the model
    (nested objects, strings, numbers, booleans, arrays, enums); a max_tokens cut says length."""
    client = start_server().client()
    stopped = 0
    for i in range(4):
        for model in (Pet, Owner):
            try:
                answer = client.chat.completions.parse(
                    model=cached_tiny, messages=_messages(i), response_format=model, max_tokens=600, temperature=0
                )
            except openai.LengthFinishReasonError:  # cut by max_tokens: the provider said "length"
                continue
            choice = answer.choices[0]
            assert choice.finish_reason == "stop"
            assert isinstance(choice.message.parsed, model), choice.message.content
            model.model_validate_json(choice.message.content or "")
            stopped += 1
    assert stopped >= 4, "a bounded schema should end within 600 tokens on most prompts"

    # a cut: the same schema, 5 tokens: finish_reason "length", taken from the runtime
    with pytest.raises(openai.LengthFinishReasonError):
        client.chat.completions.parse(model=cached_tiny, messages=USER, response_format=Pet, max_tokens=5)
    cut = client.chat.completions.create(
        model=cached_tiny,
        messages=USER,
        max_tokens=5,
        response_format={"type": "json_schema", "json_schema": {"name": "pet", "schema": Pet.model_json_schema()}},
    )
    assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 5


def test_json_object_and_streamed_json_schema(start_server: Any, cached_tiny: str) -> None:
    client = start_server().client()
    answer = client.chat.completions.create(
        model=cached_tiny, messages=USER, max_tokens=300, response_format={"type": "json_object"}
    )
    if answer.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(answer.choices[0].message.content), dict)
    else:
        assert answer.choices[0].finish_reason == "length"
    fmt = {"type": "json_schema", "json_schema": {"name": "pet", "schema": Pet.model_json_schema(), "strict": True}}
    alone = client.chat.completions.create(model=cached_tiny, messages=USER, max_tokens=600, response_format=fmt)
    chunks = list(
        client.chat.completions.create(
            model=cached_tiny, messages=USER, max_tokens=600, response_format=fmt, stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == alone.choices[0].message.content and finish == [alone.choices[0].finish_reason]
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # streamed, not one lump
    if finish == ["stop"]:
        Pet.model_validate_json(text)


def test_named_and_required_tool_choice_give_valid_calls(start_server: Any, cached_tiny: str) -> None:
    client = start_server().client()
    tools = [WEATHER, ADD]
    named = {"type": "function", "function": {"name": "get_weather"}}
    made = 0
    for stream in (False, True):
        for i, choice in enumerate([named, "required", named, "required"]):
            kwargs: dict[str, Any] = dict(model=cached_tiny, messages=_messages(i), tools=tools, max_tokens=400)
            if stream:
                chunks = list(client.chat.completions.create(tool_choice=choice, stream=True, **kwargs))
                finish = next(c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason)
                calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
            else:
                answer = client.chat.completions.create(tool_choice=choice, **kwargs)
                finish, calls = answer.choices[0].finish_reason, answer.choices[0].message.tool_calls or []
            if finish == "length":
                continue
            assert finish == "tool_calls", (choice, finish)
            made += 1
            [call] = calls
            arguments = json.loads(call.function.arguments)
            if choice == named:
                assert call.function.name == "get_weather"
            if call.function.name == "get_weather":
                assert set(arguments) == {"city", "unit", "days"} and arguments["unit"] in ("c", "f")
                assert isinstance(arguments["city"], str) and len(arguments["city"]) <= 8
                assert 1 <= arguments["days"] <= 7
            else:
                assert call.function.name == "add" and isinstance(arguments["b"], bool)
                assert 0 <= arguments["a"] <= 99
    assert made >= 4, "bounded arguments should end within 400 tokens on most prompts"


def test_tool_choice_none_offers_no_tools(start_server: Any, make_script: Any) -> None:
    model = make_script(["plain answer"])
    answer = (
        start_server().client().chat.completions.create(model=model, messages=USER, tools=[ADD], tool_choice="none")
    )
    assert answer.choices[0].message.content == "plain answer" and not answer.choices[0].message.tool_calls
    from pathlib import Path

    log = Path(model.removeprefix("scripted:")).with_suffix(".calls.jsonl")
    assert json.loads(log.read_text().splitlines()[0])["tools"] is None


def test_refused_shapes_are_400s_naming_the_field(start_server: Any, cached_tiny: str) -> None:
    server = start_server()
    client = server.client()

    def refused(match: str, **kwargs: Any) -> None:
        with pytest.raises(openai.BadRequestError, match=match):
            client.chat.completions.create(**{"model": cached_tiny, "messages": USER, **kwargs})

    refused(r"response_format\.type", response_format={"type": "xml"})
    refused(r"response_format\.json_schema.*required", response_format={"type": "json_schema"})
    refused(r"response_format\.json_schema", response_format={"type": "json_object", "json_schema": {"name": "x"}})
    refused(r"unknown field 'response_format\.bogus'", response_format={"type": "text", "bogus": 1})
    refused(
        r"schema.*nonsense",  # refused by the engine as it compiles the schema
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}},
    )
    refused(r"tool_choice.*needs tools", tool_choice="required")
    refused(r"tool_choice", tools=[ADD], tool_choice={"type": "function", "function": {"name": "nosuch"}})
    refused(r"both shape", tools=[ADD], tool_choice="required", response_format={"type": "json_object"})
    # a provider that cannot constrain says so, by name, rather than answering free text
    with pytest.raises(openai.BadRequestError, match="constraint"):
        client.chat.completions.create(model="echo:upper", messages=USER, response_format={"type": "json_object"})
    status, body = server.raw(
        "POST",
        "/v1/chat/completions",
        json.dumps({"model": cached_tiny, "messages": USER, "stream": True, "response_format": {"type": "x"}}).encode(),
        {"Content-Type": "application/json"},
    )
    assert (
        status == 400
        and body["error"]["type"] == "invalid_request_error"
        and "response_format" in body["error"]["message"]
    )
    # streamed, an engine refusal is still an HTTP 400, not an in-band error after a 200
    with pytest.raises(openai.BadRequestError, match="schema"):
        list(
            client.chat.completions.create(
                model=cached_tiny,
                messages=USER,
                stream=True,
                response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}},
            )
        )
    assert client.chat.completions.create(model=cached_tiny, messages=USER, max_tokens=2).choices  # still serving
