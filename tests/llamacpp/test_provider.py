"""LlamaCppProvider on a real GGUF run by the real llama.cpp: generation, streaming, chat, options."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from provender import (
    CacheManager,
    InvalidOptionError,
    ModelNotFoundError,
    UnsupportedError,
    get_provider,
    model_pool,
)
from provender_llamacpp import LlamaCppProvider

PROMPT = "Hello, world"
MESSAGES = [{"role": "user", "content": "What is in the cache?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


def direct_text(llm: Any, prompt: str, **kwargs: Any) -> str:
    return str(llm.create_completion(prompt, temperature=0.0, **kwargs)["choices"][0]["text"])


def test_greedy_generation_equals_llama_cpp_called_directly(cached_tiny: str, direct_tiny: Any) -> None:
    provider = LlamaCppProvider(cached_tiny)
    out = provider.generate(PROMPT, max_tokens=40, temperature=0)
    assert out == direct_text(direct_tiny, PROMPT, max_tokens=40)
    assert len(out) > 20 and out.isprintable()  # the tiny model writes printable ASCII
    assert provider.generate(PROMPT, max_tokens=40) == out  # temperature defaults to greedy


def test_stream_yields_several_chunks_that_join_to_generate(cached_tiny: str) -> None:
    provider = LlamaCppProvider(cached_tiny)
    chunks = list(provider.stream(PROMPT, max_tokens=30))
    assert len(chunks) > 5 and all(isinstance(c, str) and c for c in chunks)
    assert "".join(chunks) == provider.generate(PROMPT, max_tokens=30)


@pytest.mark.parametrize("streamed", [False, True])
def test_stop_string_ends_the_text_before_it(cached_tiny: str, streamed: bool) -> None:
    provider = LlamaCppProvider(cached_tiny)
    full = provider.generate(PROMPT, max_tokens=40)
    stop = full[12:16]  # a piece from the middle: generation must end where it first appears
    cut = full.index(stop)
    assert 0 < cut < len(full) - 4
    if streamed:
        out = "".join(provider.stream(PROMPT, max_tokens=40, stop=[stop]))
    else:
        out = provider.generate(PROMPT, max_tokens=40, stop=stop)
    assert out == full[:cut]
    two = provider.generate(PROMPT, max_tokens=40, stop=["no such text", full[5:8]])
    assert two == full[: full.index(full[5:8])]


def test_max_tokens_bounds_the_output(cached_tiny: str, direct_tiny: Any) -> None:
    provider = LlamaCppProvider(cached_tiny)
    short = provider.generate(PROMPT, max_tokens=3)
    assert len(provider.load_model().tokenize(short.encode(), add_bos=False)) <= 3
    assert provider.generate(PROMPT, max_tokens=12).startswith(short)


def test_seeded_sampling_is_repeatable_and_seeds_differ(cached_tiny: str, direct_tiny: Any) -> None:
    provider = LlamaCppProvider(cached_tiny)
    options = {"max_tokens": 30, "temperature": 1.5, "top_p": 0.95}
    a = provider.generate(PROMPT, seed=7, **options)
    assert provider.generate(PROMPT, seed=7, **options) == a
    assert len({provider.generate(PROMPT, seed=s, **options) for s in range(4)}) > 1
    direct = direct_tiny.create_completion(PROMPT, seed=7, **options)["choices"][0]["text"]
    assert a == direct  # the same sampler, the same seed: the same text


def test_chat_uses_the_template_stored_in_the_gguf(cached_tiny: str, direct_tiny: Any) -> None:
    provider = LlamaCppProvider(cached_tiny)
    prompt = provider.chat_prompt(MESSAGES)
    assert prompt == "<|im_start|>user\nWhat is in the cache?<|im_end|>\n<|im_start|>assistant\n"
    out = provider.chat(MESSAGES, max_tokens=30)
    direct = direct_tiny.create_chat_completion(MESSAGES, max_tokens=30, temperature=0.0)
    assert out == direct["choices"][0]["message"]["content"]
    assert out == direct_text(direct_tiny, prompt, max_tokens=30, stop=["<|im_end|>"])  # that template, rendered


def test_tools_reach_the_chat_template(cached_tiny: str, direct_tiny: Any) -> None:
    provider = LlamaCppProvider(cached_tiny)
    assert provider.chat_prompt(MESSAGES, tools=TOOLS).startswith("<|im_start|>system\nTools: get_weather<|im_end|>")
    with_tools = provider.chat(MESSAGES, tools=TOOLS, max_tokens=30)
    direct = direct_tiny.create_chat_completion(MESSAGES, tools=TOOLS, max_tokens=30, temperature=0.0)
    assert with_tools == direct["choices"][0]["message"]["content"]
    assert with_tools != provider.chat(MESSAGES, max_tokens=30)  # the tools changed the prompt


def test_stream_chat_joins_to_chat_and_system_prompt(cached_tiny: str) -> None:
    provider = LlamaCppProvider(cached_tiny)
    chunks = list(provider.stream_chat(MESSAGES, tools=TOOLS, max_tokens=20))
    assert len(chunks) > 3
    assert "".join(chunks) == provider.chat(MESSAGES, tools=TOOLS, max_tokens=20)
    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}]
    assert provider.generate(PROMPT, system_prompt="Be brief.", max_tokens=20) == provider.chat(system, max_tokens=20)
    assert provider.chat(MESSAGES, system_prompt="Be brief.", max_tokens=20) == provider.chat(
        [{"role": "system", "content": "Be brief."}, *MESSAGES], max_tokens=20
    )


def test_chat_without_a_template_is_unsupported(no_template_gguf: Path) -> None:
    provider = LlamaCppProvider(str(no_template_gguf))
    assert provider.generate(PROMPT, max_tokens=5)  # generation still works
    with pytest.raises(UnsupportedError, match="no chat template"):
        provider.chat(MESSAGES, max_tokens=5)


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("temperature", -1, InvalidOptionError),
        ("max_tokens", 0, InvalidOptionError),
        ("top_p", 1.5, InvalidOptionError),
        ("seed", -1, InvalidOptionError),
        ("stop", [""], InvalidOptionError),
        ("top_k", -2, InvalidOptionError),
        ("min_p", 2.0, InvalidOptionError),
        ("repeat_penalty", 0, InvalidOptionError),
        ("beam_width", 4, UnsupportedError),
    ],
)
def test_bad_options_are_refused_before_loading(cached_tiny: str, option: str, value: object, error: type) -> None:
    provider = LlamaCppProvider(cached_tiny)
    with pytest.raises(error, match=option):
        provider.generate(PROMPT, **{option: value})
    with pytest.raises(error, match=option):
        provider.chat(MESSAGES, **{option: value})
    assert f"llamacpp:{cached_tiny}" not in model_pool()  # refused before anything was loaded


def test_bad_messages_and_tools(cached_tiny: str) -> None:
    provider = LlamaCppProvider(cached_tiny)
    with pytest.raises(InvalidOptionError, match="messages"):
        provider.chat("hello")  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="tools"):
        provider.chat(MESSAGES, tools="get_weather")  # type: ignore[arg-type]


def test_count_tokens_uses_the_model_tokenizer(cached_tiny: str, direct_tiny: Any) -> None:
    provider = LlamaCppProvider(cached_tiny)
    assert provider.count_tokens(PROMPT) == len(direct_tiny.tokenize(PROMPT.encode(), add_bos=False)) > 1
    assert provider.count_tokens("") == 0
    assert provider.count_tokens("<|im_end|>") == 1  # a special token is one token
    with pytest.raises(InvalidOptionError):
        provider.count_tokens(3)  # type: ignore[arg-type]


def test_async_helpers(cached_tiny: str) -> None:
    provider = LlamaCppProvider(cached_tiny)

    async def main() -> tuple[str, list[str], str]:
        text = await provider.agenerate(PROMPT, max_tokens=10)
        chunks = [c async for c in provider.astream(PROMPT, max_tokens=10)]
        chat = await provider.achat(MESSAGES, max_tokens=10)
        return text, chunks, chat

    text, chunks, chat = asyncio.run(main())
    assert text == "".join(chunks) == provider.generate(PROMPT, max_tokens=10)
    assert chat == provider.chat(MESSAGES, max_tokens=10)


def test_held_in_the_shared_pool_with_a_cache_lease(cached_tiny: str) -> None:
    cm = CacheManager()
    provider = LlamaCppProvider(cached_tiny)
    assert not cm.in_use(cached_tiny)
    provider.generate(PROMPT, max_tokens=2)
    rows = [r for r in model_pool().snapshot() if r["provider"] == "llamacpp"]
    assert [(r["name"], r["kind"]) for r in rows] == [(cached_tiny, "generation")]
    assert cm.in_use(cached_tiny)  # the lease: no process may evict the file under the loaded model
    first = provider.load_model()
    assert LlamaCppProvider(cached_tiny).load_model() is first  # loaded once, shared
    provider.unload()
    assert f"llamacpp:{cached_tiny}" not in model_pool() and not cm.in_use(cached_tiny)


def test_settings_reach_llama_cpp(cached_tiny: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVENDER_LLAMACPP__N_CTX", "256")
    monkeypatch.setenv("PROVENDER_LLAMACPP__THREADS", "1")
    llm = LlamaCppProvider(cached_tiny).load_model()
    assert llm.n_ctx() == 256 and llm.context_params.n_threads == 1
    LlamaCppProvider.clear_model_cache()
    assert LlamaCppProvider(cached_tiny, n_ctx=768).load_model().n_ctx() == 768  # an argument wins
    assert LlamaCppProvider(cached_tiny, n_ctx=0).load_model().n_ctx() == 2048  # 0: the training context
    assert LlamaCppProvider(cached_tiny, n_ctx=100_000).load_model().n_ctx() == 2048  # capped there


def test_claimed_by_content_not_by_name(tiny_gguf: Path, tmp_path: Path, cache_dir: Path) -> None:
    cm = CacheManager()
    disguised = tmp_path / "weights.bin"
    os.link(tiny_gguf, disguised)
    cm.import_model(disguised, "me/disguised")
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a gguf file at all" * 10)
    cm.import_model(fake, "me/fake")
    from provender import get_plugin_manager

    manager = get_plugin_manager()
    assert "llamacpp" in manager.claim(cm.get("me/disguised"))
    assert "llamacpp" not in manager.claim(cm.get("me/fake"))
    provider = get_provider("me/disguised")  # no provider named: the claim picks it
    assert isinstance(provider, LlamaCppProvider)
    assert provider.generate(PROMPT, max_tokens=5)
    with pytest.raises(ModelNotFoundError, match="not a GGUF"):
        LlamaCppProvider("me/fake").generate(PROMPT)


def test_unknown_model_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        LlamaCppProvider("../not/a model").generate(PROMPT)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match="no GGUF"):
        LlamaCppProvider(str(empty)).generate(PROMPT)
