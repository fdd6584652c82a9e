"""llama.cpp's prompt cache: a conversation's next turn evaluates only its new tokens, with the same output.

The tiny random GGUF llama the suite builds; greedy output (and the model's own logprobs) with
the prompt cache is compared with the same requests on a second load with the cache off
(``memory.prompt_cache_bytes=0``: llama-cpp-python's own reuse of the most recent prompt only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provender.generation import GenerationResult

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "wizards"]


def user_turn(n: int) -> str:
    return " ".join(WORDS[(n + i) % len(WORDS)] for i in range(8)) + f" (turn {n})"


def provider(path: Path, monkeypatch: pytest.MonkeyPatch, cache_bytes: int | None = None) -> Any:
    """A fresh load of the model (the previous one unloaded), with ``memory.prompt_cache_bytes`` as given."""
    from provender_llamacpp import LlamaCppProvider

    LlamaCppProvider.clear_model_cache()
    monkeypatch.setenv("PROVENDER_LLAMACPP__N_CTX", "2048")  # room for a 10-turn chat
    if cache_bytes is None:
        monkeypatch.delenv("PROVENDER_MEMORY__PROMPT_CACHE_BYTES", raising=False)
    else:
        monkeypatch.setenv("PROVENDER_MEMORY__PROMPT_CACHE_BYTES", str(cache_bytes))
    p = LlamaCppProvider(str(path))
    p.load_model()
    return p


def ask(p: Any, messages: list[dict[str, str]]) -> GenerationResult:
    result: GenerationResult = p.complete(messages=messages, max_tokens=5, logprobs=True, top_logprobs=3)
    return result


def conversation(p: Any, turns: int, *, record: list[int] | None = None) -> list[GenerationResult]:
    """`turns` user turns, each reply appended; `record` gets each turn's evaluated prompt tokens."""
    messages = [{"role": "system", "content": "You answer briefly and kindly."}]
    results = []
    for n in range(turns):
        messages.append({"role": "user", "content": user_turn(n)})
        result = ask(p, messages)
        results.append(result)
        messages.append({"role": "assistant", "content": result.text})
        if record is not None:
            record.append(p.prompt_cache().stats.last_prefilled)
    return results


def same(a: list[GenerationResult], b: list[GenerationResult]) -> None:
    """Token for token, and the model's logprobs of each to float32 precision."""
    assert [r.text for r in a] == [r.text for r in b]
    for x, y in zip(a, b, strict=True):
        assert x.logprobs is not None and y.logprobs is not None
        assert [t.token_id for t in x.logprobs] == [t.token_id for t in y.logprobs]
        for s, t in zip(x.logprobs, y.logprobs, strict=True):
            assert s.logprob == pytest.approx(t.logprob, abs=1e-3)
            assert [name for name, _ in s.top] == [name for name, _ in t.top]


def test_ten_turns_equal_with_and_without_cache(tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on = conversation(provider(tiny_gguf, monkeypatch), 10)
    off = conversation(provider(tiny_gguf, monkeypatch, 0), 10)
    same(on, off)
    firsts = {round(r.logprobs[0].logprob, 4) for r in on if r.logprobs}
    assert len(firsts) > 5  # the turns differ: the comparison means something


def test_later_turns_evaluate_only_their_new_tokens(tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = provider(tiny_gguf, monkeypatch)
    prefilled: list[int] = []
    results = conversation(p, 4, record=prefilled)
    stats = p.prompt_cache().stats
    assert stats.misses == 1 and stats.hits == 3
    full = [r.prompt_tokens for r in results]
    assert prefilled[0] == full[0]
    for n in range(1, 4):  # the new user turn and the template's few tokens around the reply
        assert prefilled[n] < full[n] - full[n - 1] + 12, (prefilled, full)
        assert prefilled[n] < full[n] / 2
    assert stats.cached_tokens + stats.prefilled_tokens == sum(full)
    # each result says how many of its prompt tokens the cache supplied: the rest were prefilled
    assert [r.cached_tokens for r in results] == [f - n for f, n in zip(full, prefilled, strict=True)]
    assert results[0].cached_tokens == 0 and all(r.cached_tokens > 0 for r in results[1:])


def test_zero_turns_the_cache_off(tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = provider(tiny_gguf, monkeypatch, 0)
    conversation(p, 3)
    cache = p.prompt_cache()
    assert not cache.enabled and len(cache) == 0 and cache.nbytes == 0
    assert cache.stats.hits == 0 and cache.stats.misses == 0  # never asked


def test_two_interleaved_conversations_both_hit(tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = provider(tiny_gguf, monkeypatch)
    a = [{"role": "system", "content": "Conversation A, about foxes."}]
    b = [{"role": "system", "content": "Conversation B, about wizards and their jars."}]
    a_results: list[GenerationResult] = []
    b_results: list[GenerationResult] = []
    for n in range(3):
        for messages, results in ((a, a_results), (b, b_results)):
            messages.append({"role": "user", "content": user_turn(n + len(results) * 3)})
            result = ask(p, messages)
            results.append(result)
            messages.append({"role": "assistant", "content": result.text})
            if n > 0:
                stats = p.prompt_cache().stats
                assert stats.last_cached > stats.last_prefilled, stats  # this conversation's own prefix
    cache = p.prompt_cache()
    assert len(cache) == 2  # each conversation keeps one state: its prefixes were dropped as redundant
    assert cache.stats.hits == 5 and cache.stats.misses == 1  # B's first turn reuses the template's start

    off = provider(tiny_gguf, monkeypatch, 0)
    for messages, results in ((a, a_results), (b, b_results)):
        replay = [ask(off, messages[: 2 + 2 * i]) for i in range(3)]
        same(results, replay)


def test_a_branch_that_diverges_mid_prefix_is_trimmed_and_correct(
    tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = provider(tiny_gguf, monkeypatch)
    base = [{"role": "system", "content": "Branches."}, {"role": "user", "content": user_turn(1)}]
    x = [*base, {"role": "assistant", "content": "x"}, {"role": "user", "content": user_turn(2)}]
    y = [*base, {"role": "assistant", "content": "y"}, {"role": "user", "content": user_turn(3)}]
    first = ask(p, x)
    branch = ask(p, y)
    stats = p.prompt_cache().stats
    assert stats.hits == 1 and 0 < stats.last_cached < branch.prompt_tokens
    assert len(p.prompt_cache()) == 2  # the first branch is still there, untrimmed
    again = ask(p, x)  # its stored state, restored into a context that holds the other branch
    assert p.prompt_cache().stats.last_cached > again.prompt_tokens - 3
    off = provider(tiny_gguf, monkeypatch, 0)
    same([first, branch, again], [ask(off, m) for m in (x, y, x)])


def test_the_byte_bound_evicts_least_recently_used(tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def prompt(n: int) -> str:  # no two share a first token: no state helps another
        return f"{WORDS[n]} " + user_turn(n)

    p = provider(tiny_gguf, monkeypatch)
    p.complete(prompt(0), max_tokens=5)
    size = p.prompt_cache().nbytes
    assert size > 0
    p = provider(tiny_gguf, monkeypatch, int(size * 2.5))  # room for two states of about this size
    for n in range(4):
        p.complete(prompt(n), max_tokens=5)
        assert p.prompt_cache().nbytes <= size * 2.5
    cache = p.prompt_cache()
    assert len(cache) == 2 and cache.stats.evictions == 2
    p.complete(prompt(3) + " more", max_tokens=5)  # kept: a hit
    assert cache.stats.last_cached > 0
    p.complete(prompt(0) + " more", max_tokens=5)  # evicted: a miss
    assert cache.stats.last_cached == 0


def test_the_cache_goes_with_the_model(tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = provider(tiny_gguf, monkeypatch)
    conversation(p, 2)
    cache = p.prompt_cache()
    assert len(cache) == 1 and cache.nbytes > 0
    p.unload()
    assert len(cache) == 0 and p.prompt_cache() is None
    p.load_model()
    assert len(p.prompt_cache()) == 0


def test_a_stream_closed_early_keeps_what_it_evaluated(tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = provider(tiny_gguf, monkeypatch)
    prompt = "the quick brown fox jumps over a lazy dog " * 4
    stream = p.stream(prompt, max_tokens=20)
    next(stream)
    stream.close()  # the caller stopped reading after one piece
    cache = p.prompt_cache()
    assert len(cache) == 1
    (held,) = cache.keys()
    assert len(held) >= p.count_tokens(prompt)  # the prompt (and what was decoded), under its ids
    off = provider(tiny_gguf, monkeypatch, 0)
    expected = off.generate(prompt + " more", max_tokens=5)
    p = provider(tiny_gguf, monkeypatch)
    stream = p.stream(prompt, max_tokens=20)
    next(stream)
    stream.close()
    assert p.generate(prompt + " more", max_tokens=5) == expected
    assert p.prompt_cache().stats.last_cached > p.count_tokens(prompt) - 2
