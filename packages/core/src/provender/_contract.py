"""`provender.testing.ProviderContract`: a pytest suite that checks a provider keeps the `Provider` contract.

Plugin authors subclass `ProviderContract` in their own tests and say what their
provider can do; every test then runs against it::

    from provender.testing import ProviderContract

    class TestMyProvider(ProviderContract):
        provider_name = "mine"           # as registered by your plugin
        model = "some-model"             # a model your tests can load
        capabilities = {"generate", "stream", "chat"}

The provider is resolved through the real plugin manager (``mine:some-model``),
so the suite also proves the plugin is installed and registered. Override
`make_provider` to build it another way. Requires pytest.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest

from provender._provider import Provider
from provender.errors import InvalidOptionError, ProvenderError, UnsupportedError

ALL_CAPABILITIES = frozenset({"generate", "stream", "chat", "embed", "rerank"})


class ProviderContract:
    """Subclass, set the class attributes, and pytest collects the contract tests."""

    provider_name: ClassVar[str] = ""
    model: ClassVar[str] = ""
    capabilities: ClassVar[set[str]] = {"generate", "stream"}
    #: options that make generation deterministic (greedy) and short
    deterministic_options: ClassVar[dict[str, Any]] = {"temperature": 0.0, "max_tokens": 8}
    prompt: ClassVar[str] = "Hello, world"

    def make_provider(self) -> Provider:
        from provender._resolve import resolve_provider

        return resolve_provider(f"{self.provider_name}:{self.model}")

    @pytest.fixture
    def provider(self) -> Iterator[Provider]:
        provider = self.make_provider()
        yield provider
        provider.close()

    def _requires(self, capability: str) -> None:
        if capability not in self.capabilities:
            pytest.skip(f"{self.provider_name} does not declare {capability!r}")

    # -- identity --------------------------------------------------------------------

    def test_is_a_provider(self, provider: Provider) -> None:
        assert isinstance(provider, Provider)
        assert isinstance(provider.name, str) and provider.name == self.provider_name
        assert isinstance(provider.model, str) and provider.model

    def test_declared_capabilities_are_known(self) -> None:
        assert set(self.capabilities) <= ALL_CAPABILITIES, set(self.capabilities) - ALL_CAPABILITIES

    # -- generation ------------------------------------------------------------------

    def test_greedy_generation_is_repeatable(self, provider: Provider) -> None:
        self._requires("generate")
        first = provider.generate(self.prompt, **self.deterministic_options)
        assert provider.generate(self.prompt, **self.deterministic_options) == first

    def test_stream_concatenates_to_generate(self, provider: Provider) -> None:
        self._requires("stream")
        chunks = list(provider.stream(self.prompt, **self.deterministic_options))
        assert all(isinstance(c, str) for c in chunks)
        assert "".join(chunks) == provider.generate(self.prompt, **self.deterministic_options)

    def test_seed_makes_sampling_repeatable(self, provider: Provider) -> None:
        self._requires("generate")
        options = {**self.deterministic_options, "temperature": 1.0, "seed": 1234}
        assert provider.generate(self.prompt, **options) == provider.generate(self.prompt, **options)

    @pytest.mark.parametrize(
        ("option", "value"), [("temperature", -1.0), ("max_tokens", 0), ("top_p", 0.0), ("top_p", 1.5), ("seed", -3)]
    )
    def test_bad_options_are_rejected(self, provider: Provider, option: str, value: object) -> None:
        self._requires("generate")
        with pytest.raises(InvalidOptionError) as info:
            provider.generate(self.prompt, **{**self.deterministic_options, option: value})
        assert option in str(info.value)

    def test_stop_is_accepted(self, provider: Provider) -> None:
        self._requires("generate")
        out = provider.generate(self.prompt, **self.deterministic_options, stop=["\n\n"])
        assert isinstance(out, str) and "\n\n" not in out

    def test_agenerate_does_not_block_the_loop(self, provider: Provider) -> None:
        self._requires("generate")

        async def main() -> tuple[str, int]:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)

            task = asyncio.create_task(ticker())
            out = await provider.agenerate(self.prompt, **self.deterministic_options)
            task.cancel()
            return out, ticks

        out, ticks = asyncio.run(main())
        assert out == provider.generate(self.prompt, **self.deterministic_options)
        assert ticks > 0

    def test_astream_matches_stream(self, provider: Provider) -> None:
        self._requires("stream")

        async def collect() -> list[str]:
            return [c async for c in provider.astream(self.prompt, **self.deterministic_options)]

        assert "".join(asyncio.run(collect())) == "".join(provider.stream(self.prompt, **self.deterministic_options))

    # -- each capability: works if declared, UnsupportedError if not ---------------------

    def _check(self, capability: str, call: Callable[[], object], accept: Callable[[Any], bool]) -> None:
        declared = capability in self.capabilities or (capability == "stream" and "generate" in self.capabilities)
        if declared:
            result = call()
            assert accept(result), f"{capability} returned {result!r}"
        else:
            with pytest.raises(UnsupportedError):
                call()

    def test_capability_generate(self, provider: Provider) -> None:
        self._check(
            "generate",
            lambda: provider.generate(self.prompt, **self.deterministic_options),
            lambda out: isinstance(out, str),
        )

    def test_capability_stream(self, provider: Provider) -> None:
        self._check(
            "stream",
            lambda: list(provider.stream(self.prompt, **self.deterministic_options)),
            lambda chunks: all(isinstance(c, str) for c in chunks),
        )

    def test_capability_chat(self, provider: Provider) -> None:
        messages = [{"role": "user", "content": self.prompt}]
        self._check(
            "chat", lambda: provider.chat(messages, **self.deterministic_options), lambda out: isinstance(out, str)
        )

    def test_capability_embed(self, provider: Provider) -> None:
        self._check(
            "embed",
            lambda: provider.embed(["one text", "another, longer text"]),
            lambda v: v.ndim == 2 and v.shape[0] == 2 and v.shape[1] > 0,
        )

    def test_capability_rerank(self, provider: Provider) -> None:
        documents = ["one document", "another, longer document", ""]
        self._check(
            "rerank",
            lambda: provider.rerank("a query", documents),
            lambda s: isinstance(s, list) and len(s) == 3 and all(isinstance(x, float) for x in s),
        )

    def test_rerank_refuses_no_documents(self, provider: Provider) -> None:
        self._requires("rerank")
        with pytest.raises(InvalidOptionError) as info:
            provider.rerank("a query", [])
        assert "documents" in str(info.value)

    def test_close_is_idempotent(self, provider: Provider) -> None:
        provider.close()
        provider.close()

    def test_unknown_option_is_an_error(self, provider: Provider) -> None:
        self._requires("generate")
        with pytest.raises(ProvenderError):
            provider.generate(self.prompt, **self.deterministic_options, no_such_option=1)


# -- structured output and logprobs (issue 21) ---------------------------------------------------

#: strings, numbers, arrays, nested objects and enums, bounded so that a finite reply exists
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}, "maxItems": 2},
        "colour": {"enum": ["red", "green", "blue"]},
        "home": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 5}, "floor": {"type": "integer", "maximum": 9}},
            "required": ["city", "floor"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "age", "score", "tags", "colour", "home"],
    "additionalProperties": False,
}
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 8}, "days": {"type": "integer", "maximum": 7}},
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    },
}


class StructuredContract:
    """Constrained decoding and logprobs on a real (tiny, random-weight) model: such a model writes
    garbage unconstrained, so every reply that fits proves the constraint masked its logits.

    Subclasses give a ``provider`` fixture and `reference_logprobs`: the log-softmax of the
    runtime's own logits for each generated token (teacher-forced on prompt + tokens)."""

    prompt: ClassVar[str] = "Hello, world"
    seeds: ClassVar[tuple[int, ...]] = (1, 2, 3)

    def reference_logprobs(self, provider: Provider, prompt: str, token_ids: list[int]) -> Any:
        """(len(token_ids), V) array: row k is the runtime's log-softmax before token k."""
        raise NotImplementedError

    def _replies(self, provider: Provider, max_tokens: int = 600, **options: Any) -> list[Any]:
        runs: list[dict[str, Any]] = [{"temperature": 0.0}] + [{"temperature": 1.0, "seed": s} for s in self.seeds]
        return [provider.complete(self.prompt, max_tokens=max_tokens, **run, **options) for run in runs]

    def test_schema_replies_fit(self, provider: Provider) -> None:
        import json

        import jsonschema  # type: ignore[import-untyped]

        replies = self._replies(provider, schema=SCHEMA)
        assert any(r.finish_reason == "stop" for r in replies), [r.text for r in replies]
        for reply in replies:
            if reply.finish_reason == "stop":
                jsonschema.validate(json.loads(reply.text), SCHEMA)
            else:
                assert reply.finish_reason == "length" and reply.completion_tokens == 600

    def test_a_pydantic_model_class_and_json_object(self, provider: Provider) -> None:
        import json

        from pydantic import BaseModel, Field

        class Point(BaseModel):
            x: int = Field(ge=-99, le=99)
            label: str = Field(max_length=5)

        text = provider.generate(self.prompt, schema=Point, max_tokens=80)
        assert Point.model_validate_json(text)
        reply = provider.complete(self.prompt, json_object=True, max_tokens=60)
        if reply.finish_reason == "stop":
            assert isinstance(json.loads(reply.text), dict)

    def test_choice_and_regex(self, provider: Provider) -> None:
        import re

        for reply in self._replies(provider, max_tokens=40, choice=["red", "green", "blue"]):
            assert reply.text in ("red", "green", "blue") and reply.finish_reason == "stop"
        for reply in self._replies(provider, max_tokens=40, regex=r"[0-9]{3}-[a-z]{2}"):
            assert re.fullmatch(r"[0-9]{3}-[a-z]{2}", reply.text) and reply.finish_reason == "stop"

    def test_a_max_tokens_cut_says_length(self, provider: Provider) -> None:
        reply = provider.complete(self.prompt, schema=SCHEMA, max_tokens=3)
        assert (reply.finish_reason, reply.completion_tokens) == ("length", 3)
        chunks = list(provider.stream_complete(self.prompt, schema=SCHEMA, max_tokens=3))
        assert "".join(c.text for c in chunks) == reply.text and chunks[-1].finish_reason == "length"

    def test_a_reply_completed_by_its_max_tokens_th_token_says_stop(self, provider: Provider) -> None:
        choices = ["red", "green", "blue"]
        whole = provider.complete(self.prompt, choice=choices, max_tokens=40)
        assert whole.text in choices and whole.finish_reason == "stop"
        n = whole.completion_tokens  # the choice's own tokens: the last of them completes it
        exact = provider.complete(self.prompt, choice=choices, max_tokens=n)
        assert (exact.text, exact.finish_reason, exact.completion_tokens) == (whole.text, "stop", n)
        chunks = list(provider.stream_complete(self.prompt, choice=choices, max_tokens=n))
        assert "".join(c.text for c in chunks) == whole.text and chunks[-1].finish_reason == "stop"
        if n > 1:  # one token short is a cut
            short = provider.complete(self.prompt, choice=choices, max_tokens=n - 1)
            assert short.finish_reason == "length" and short.text != whole.text

    def test_streamed_equals_whole(self, provider: Provider) -> None:
        chunks = list(provider.stream_complete(self.prompt, schema=SCHEMA, max_tokens=160, logprobs=True))
        whole = provider.complete(self.prompt, schema=SCHEMA, max_tokens=160, logprobs=True)
        assert "".join(c.text for c in chunks) == whole.text and chunks[-1].finish_reason == whole.finish_reason
        streamed = [lp for c in chunks for lp in c.logprobs or []]
        assert [lp.token_id for lp in streamed] == [lp.token_id for lp in whole.logprobs or []]
        assert all(abs(a.logprob - b.logprob) < 1e-4 for a, b in zip(streamed, whole.logprobs or [], strict=True))

    def test_a_named_tool_choice_is_a_valid_call(self, provider: Provider) -> None:
        import json

        import jsonschema  # type: ignore[import-untyped]

        messages = [{"role": "user", "content": "Weather in Paris?"}]
        choice = {"type": "function", "function": {"name": "get_weather"}}
        for seed in self.seeds:
            reply = provider.complete(
                messages=messages, tools=[WEATHER_TOOL], tool_choice=choice, temperature=1.0, seed=seed, max_tokens=80
            )
            if reply.finish_reason == "length":
                continue
            assert reply.finish_reason == "tool_calls"
            assert reply.text.startswith("<tool_call>") and reply.text.endswith("</tool_call>")
            call = json.loads(reply.text[len("<tool_call>") : -len("</tool_call>")])
            assert call["name"] == "get_weather"
            jsonschema.validate(call["arguments"], WEATHER_TOOL["function"]["parameters"])

    def test_an_invalid_schema_is_one_clear_error(self, provider: Provider) -> None:
        with pytest.raises(InvalidOptionError) as info:
            provider.stream_complete(self.prompt, schema={"type": "no-such-type"})
        assert "schema" in str(info.value) and "\n" not in str(info.value)

    def test_logprobs_are_the_runtimes_own(self, provider: Provider) -> None:
        import numpy as np

        cases: list[dict[str, Any]] = [{}, {"choice": ["red", "green", "blue"]}]
        for options in cases:
            reply = provider.complete(self.prompt, max_tokens=8, logprobs=True, top_logprobs=5, **options)
            assert reply.logprobs is not None and len(reply.logprobs) == reply.completion_tokens > 0
            ids = [lp.token_id for lp in reply.logprobs]
            reference = self.reference_logprobs(provider, self.prompt, ids)
            for lp, row in zip(reply.logprobs, reference, strict=True):
                assert abs(lp.logprob - float(row[lp.token_id])) < 1e-4
                assert len(lp.top) == 5 and [v for _, v in lp.top] == sorted((v for _, v in lp.top), reverse=True)
                assert abs(lp.top[0][1] - float(np.max(row))) < 1e-4
                assert len(lp.top_bytes) == 5 and all(raw for raw in lp.top_bytes)
                if not options:  # greedy, unconstrained: the chosen token is the top one
                    assert lp.top[0][1] == lp.logprob and lp.token_id == int(np.argmax(row))
            # a token's bytes are its own (one that holds part of a UTF-8 character included):
            # joined, they are the reply's text (which shows bytes that make no character as
            # U+FFFD, or drops them, as the runtime decodes)
            joined = b"".join(bytes(lp.bytes) for lp in reply.logprobs)
            assert joined.decode("utf-8", "ignore") == reply.text.replace("\ufffd", ""), (joined, reply.text)
