"""TransformersProvider generating with real torch and transformers, on a tiny llama built here."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from helpers import run_cli
from provender import (
    CacheManager,
    ConfigError,
    InvalidOptionError,
    ModelNotFoundError,
    ProvenderError,
    UnsupportedError,
    get_provider,
    model_pool,
)
from provender.testing import ProviderContract
from provender_transformers import TransformersProvider
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPT = "Hello world, the shared cache"
TOOLS = [{"type": "function", "function": {"name": "shout", "description": "Upper-case a text", "parameters": {}}}]


class TestTransformersContract(ProviderContract):
    """provender's reusable contract suite, run against the transformers provider."""

    provider_name = "transformers"
    capabilities = {"generate", "stream", "chat"}
    deterministic_options = {"temperature": 0.0, "max_tokens": 6}

    @pytest.fixture(autouse=True)
    def _model(self, tiny_llama: Path) -> None:
        type(self).model = str(tiny_llama)


@pytest.fixture(scope="module")
def reference(tiny_llama: Path) -> tuple[Any, Any]:
    """The same model loaded by transformers directly: what the provider must match."""
    return AutoModelForCausalLM.from_pretrained(str(tiny_llama)).eval(), AutoTokenizer.from_pretrained(str(tiny_llama))


def direct(reference: tuple[Any, Any], text: str, max_new_tokens: int, *, chat: bool = False) -> tuple[list[int], str]:
    """model.generate's greedy tokens (new ones only) and their text."""
    model, tokenizer = reference
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=not chat)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    ids = out[0, enc["input_ids"].shape[1] :].tolist()
    return ids, tokenizer.decode(ids, skip_special_tokens=True)


def test_greedy_gives_exactly_model_generates_tokens(cached_tiny: str, reference: tuple[Any, Any]) -> None:
    ids, expected = direct(reference, PROMPT, 24)
    provider = get_provider(f"transformers:{cached_tiny}")
    assert isinstance(provider, TransformersProvider)
    text = provider.generate(PROMPT, max_tokens=24, temperature=0)
    assert text == expected and len(ids) == 24  # no early EOS: 24 real tokens compared
    assert len(set(ids)) > 8  # varied tokens, so equal text is a strong check of equal tokens
    chunks = list(provider.stream(PROMPT, max_tokens=24))
    assert "".join(chunks) == expected and len(chunks) > 1  # streamed by transformers' streamer, piece by piece


def test_chat_applies_the_template_with_tools(cached_tiny: str, reference: tuple[Any, Any]) -> None:
    tokenizer = reference[1]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    rendered = tokenizer.apply_chat_template(messages, tools=TOOLS, add_generation_prompt=True, tokenize=False)
    assert "Tools: shout" in rendered and rendered.endswith("<|im_start|>assistant\n")
    _, expected = direct(reference, rendered, 12, chat=True)
    plain = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    _, without_tools = direct(reference, plain, 12, chat=True)
    assert expected != without_tools  # the tools really change the prompt the model sees
    provider = TransformersProvider(cached_tiny)
    assert provider.chat(messages, tools=TOOLS, max_tokens=12) == expected
    assert "".join(provider.stream_chat(messages, tools=TOOLS, max_tokens=12)) == expected
    assert provider.chat(messages, max_tokens=12) == without_tools
    assert provider.generate("Hello", system_prompt="Be brief.", max_tokens=12) == without_tools


def test_stop_strings_cut_generation_and_streaming(cached_tiny: str) -> None:
    provider = TransformersProvider(cached_tiny)
    full = provider.generate(PROMPT, max_tokens=30)
    stop = full[10:13]
    cut = full[: full.index(stop)]
    assert provider.generate(PROMPT, max_tokens=30, stop=[stop, "never-appears"]) == cut
    assert "".join(provider.stream(PROMPT, max_tokens=30, stop=stop)) == cut


def test_seed_makes_sampling_repeatable_and_sampling_samples(cached_tiny: str) -> None:
    provider = TransformersProvider(cached_tiny)
    runs = {provider.generate(PROMPT, max_tokens=12, temperature=1.0, seed=7) for _ in range(3)}
    assert len(runs) == 1
    assert len({provider.generate(PROMPT, max_tokens=12, temperature=1.0, top_p=0.9, seed=s) for s in range(5)}) > 1
    streamed = "".join(provider.stream(PROMPT, max_tokens=12, temperature=1.0, seed=7))
    assert {streamed} == runs


def test_closing_a_stream_early_stops_generation(cached_tiny: str) -> None:
    provider = TransformersProvider(cached_tiny)
    stream = provider.stream(PROMPT, max_tokens=2000)
    first = next(stream)
    stream.close()  # the worker thread stops and the model is free again
    assert first
    item = model_pool().peek(provider.key)
    assert item is not None and not item.lock.held
    assert provider.generate(PROMPT, max_tokens=4)


@pytest.mark.parametrize(
    ("options", "error", "needle"),
    [
        ({"temperature": -1}, InvalidOptionError, "temperature"),
        ({"max_tokens": 0}, InvalidOptionError, "max_tokens"),
        ({"top_p": 1.5}, InvalidOptionError, "top_p"),
        ({"stop": [""]}, InvalidOptionError, "stop"),
        ({"beams": 4}, UnsupportedError, "beams"),
    ],
)
def test_bad_options_are_clear_errors(
    cached_tiny: str, options: dict[str, Any], error: type[Exception], needle: str
) -> None:
    provider = TransformersProvider(cached_tiny)
    with pytest.raises(error, match=needle):
        provider.generate(PROMPT, **options)
    with pytest.raises(error, match=needle):
        provider.chat([{"role": "user", "content": "hi"}], **options)


def test_bad_models_and_capabilities_are_clear_errors(cached_tiny: str, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no such directory"):
        TransformersProvider("./no/such/dir").generate("x")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "not-an-architecture"}))
    with pytest.raises(ModelNotFoundError, match="not an architecture"):
        TransformersProvider(str(tmp_path)).generate("x")
    provider = TransformersProvider(cached_tiny)
    with pytest.raises(UnsupportedError, match="text-generation model"):
        provider.embed(["x"])
    with pytest.raises(ProvenderError, match="messages"):
        provider.chat([{"content": "no role"}])
    out = run_cli("generate", "-m", f"transformers:{cached_tiny}", "--temperature", "-2", "Hello")
    assert out.returncode == 2 and "temperature" in out.stderr and "Traceback" not in out.stderr


def test_pool_loads_once_holds_a_lease_and_unloads(cached_tiny: str) -> None:
    provider = TransformersProvider(cached_tiny)
    model, tokenizer = provider.load_model()
    assert TransformersProvider(cached_tiny).load_model()[0] is model  # from the shared pool
    cm = CacheManager()
    assert cm.in_use(cached_tiny)  # loaded: the cache will not evict its files
    [row] = [r for r in model_pool().snapshot() if r["provider"] == "transformers"]
    assert (row["name"], row["kind"]) == (cached_tiny, "generation")
    assert provider.count_tokens(PROMPT) == len(tokenizer(PROMPT)["input_ids"]) > 3
    provider.unload()
    assert provider.key not in model_pool() and not cm.in_use(cached_tiny)


def test_device_and_threads_from_settings(cached_tiny: str, monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.setenv("PROVENDER_TRANSFORMERS__THREADS", "1")
    monkeypatch.setenv("PROVENDER_TRANSFORMERS__DEVICE", "auto")
    try:
        provider = TransformersProvider(cached_tiny)
        place = provider.placement
        assert place.device == ("cuda" if torch.cuda.is_available() else "cpu") and torch.get_num_threads() == 1
        model, _ = provider.load_model()
        assert model.device.type == place.device and model.dtype == torch.float32
    finally:
        torch.set_num_threads(before)
        from provender_transformers import _device

        _device._threads_applied = None
    if not torch.cuda.is_available():
        monkeypatch.setenv("PROVENDER_TRANSFORMERS__DEVICE", "cuda")
        with pytest.raises(ConfigError, match="no usable CUDA"):
            TransformersProvider(cached_tiny, device=None).placement  # noqa: B018
        out = run_cli("generate", "-m", f"transformers:{cached_tiny}", "Hello")
        assert out.returncode == 2 and "CUDA" in out.stderr and "Traceback" not in out.stderr
    config = json.loads(run_cli("config", "--json").stdout)
    names = {row["setting"] for row in config["settings"]}
    assert {"transformers.device", "transformers.dtype", "transformers.threads", "providers.prefer"} <= names


def test_async_forms(cached_tiny: str) -> None:
    provider = TransformersProvider(cached_tiny)
    expected = provider.generate(PROMPT, max_tokens=10)
    messages = [{"role": "user", "content": "Hi"}]
    chat = provider.chat(messages, max_tokens=10)

    async def main() -> tuple[str, str, str, str]:
        streamed = "".join([c async for c in provider.astream(PROMPT, max_tokens=10)])
        chatted = "".join([c async for c in provider.astream_chat(messages, max_tokens=10)])
        return (
            await provider.agenerate(PROMPT, max_tokens=10),
            streamed,
            await provider.achat(messages, max_tokens=10),
            chatted,
        )

    assert asyncio.run(main()) == (expected, expected, chat, chat)


def test_cli_and_agent_run_on_it_unchanged(cached_tiny: str) -> None:
    provider = TransformersProvider(cached_tiny)
    expected = provider.generate("Hello", max_tokens=8)
    out = run_cli("generate", "-m", cached_tiny, "--max-tokens", "8", "Hello")  # claimed by content
    assert out.returncode == 0 and out.stdout == expected + "\n", out.stderr
    streamed = run_cli("generate", "-m", f"transformers:{cached_tiny}", "--max-tokens", "8", "--stream", "Hello")
    assert streamed.stdout == expected + "\n"
    rows = json.loads(run_cli("models", "--json").stdout)
    assert [(r["model"], r["providers"], r["provider"]) for r in rows] == [
        (f"transformers:{cached_tiny}", ["transformers"], "transformers")
    ]
    from provender_agent import Agent

    agent = Agent(f"transformers:{cached_tiny}", options={"max_tokens": 8})
    result = agent.run("Hi")
    assert result.outcome == "answered"
    assert result.steps[0].text == provider.chat([{"role": "user", "content": "Hi"}], max_tokens=8)  # streamed, equal
