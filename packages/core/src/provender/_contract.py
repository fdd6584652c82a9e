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

ALL_CAPABILITIES = frozenset({"generate", "stream", "chat", "embed"})


class ProviderContract:
    """Subclass, set the class attributes, and pytest collects the contract tests."""

    provider_name: ClassVar[str] = ""
    model: ClassVar[str] = ""
    capabilities: ClassVar[set[str]] = {"generate", "stream"}
    #: options that make generation deterministic (greedy) and short
    deterministic_options: ClassVar[dict[str, Any]] = {"temperature": 0.0, "max_tokens": 8}
    prompt: ClassVar[str] = "Hello, world"

    def make_provider(self) -> Provider:
        from provender._provider import resolve_provider

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

    def test_close_is_idempotent(self, provider: Provider) -> None:
        provider.close()
        provider.close()

    def test_unknown_option_is_an_error(self, provider: Provider) -> None:
        self._requires("generate")
        with pytest.raises(ProvenderError):
            provider.generate(self.prompt, **self.deterministic_options, no_such_option=1)
