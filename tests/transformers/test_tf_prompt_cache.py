"""transformers' prompt cache: a conversation's next turn prefills only its new tokens, with the same output.

The tiny random llama of `provender_transformers.testing`; greedy output (and the model's own
logprobs) with the prompt cache (a `DynamicCache` per state) is compared with the same requests
on a second load with the cache off. Mirrors tests/mlx/test_prompt_cache.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from provender.generation import GenerationResult

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "wizards",
    "quietly",
    "hex",
    "bright",
    "jars",
]


def user_turn(n: int) -> str:
    return " ".join(WORDS[(n + i) % len(WORDS)] for i in range(12)) + f" (turn {n})"


@pytest.fixture
def model_dir(cached_tiny: str) -> str:
    return cached_tiny


def provider(model: str, monkeypatch: pytest.MonkeyPatch, cache_bytes: int | str | None = None) -> Any:
    """A fresh load of the model (the previous one unloaded), with ``memory.prompt_cache_bytes`` as given."""
    from provender import model_pool
    from provender_transformers import TransformersProvider

    model_pool().clear()
    if cache_bytes is None:
        monkeypatch.delenv("PROVENDER_MEMORY__PROMPT_CACHE_BYTES", raising=False)
    else:
        monkeypatch.setenv("PROVENDER_MEMORY__PROMPT_CACHE_BYTES", str(cache_bytes))
    p = TransformersProvider(model)
    p.load_model()
    return p


def ask(p: Any, messages: list[dict[str, str]]) -> GenerationResult:
    result: GenerationResult = p.complete(messages=messages, max_tokens=6, logprobs=True, top_logprobs=3)
    return result


def conversation(p: Any, turns: int, *, record: list[int] | None = None) -> list[GenerationResult]:
    """`turns` user turns, each reply appended to the conversation; `record` gets each turn's prefilled tokens."""
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


def test_multi_turn_output_equal_with_and_without_cache_in_both_orders(
    model_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_first = conversation(provider(model_dir, monkeypatch), 10)
    off = conversation(provider(model_dir, monkeypatch, 0), 10)
    on_second = conversation(provider(model_dir, monkeypatch), 10)
    same(on_first, off)
    same(off, on_second)


def test_later_turns_prefill_only_their_new_tokens(model_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    p = provider(model_dir, monkeypatch)
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


def test_zero_turns_the_cache_off(model_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    p = provider(model_dir, monkeypatch, 0)
    prefilled: list[int] = []
    results = conversation(p, 3, record=prefilled)
    cache = p.prompt_cache()
    assert not cache.enabled and len(cache) == 0 and cache.nbytes == 0
    assert prefilled == [0, 0, 0]  # never asked: nothing fetched
    assert cache.stats.hits == 0
    assert all(r.prompt_tokens > 0 for r in results)


def test_two_interleaved_conversations_both_hit(model_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    p = provider(model_dir, monkeypatch)
    a = [{"role": "system", "content": "Conversation A, about foxes."}]
    b = [{"role": "system", "content": "Conversation B, about wizards and their jars."}]
    a_results, b_results = [], []
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
    # the reply's re-rendered tokens differ from the generated ones: each earlier state is superseded
    # (handed over and trimmed, not copied), so each conversation keeps one
    assert len(cache) == 2
    # B's first turn already reuses the start of A's ("<|im_start|>system\nConversation "), trimmed
    assert cache.stats.hits == 5 and cache.stats.misses == 1

    off = provider(model_dir, monkeypatch, 0)
    for messages, results in ((a, a_results), (b, b_results)):
        replay = [ask(off, messages[: 2 + 2 * i]) for i in range(3)]
        same(results, replay)


def test_a_branch_that_diverges_mid_prefix_is_trimmed_and_correct(
    model_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = provider(model_dir, monkeypatch)
    base = [{"role": "system", "content": "Branches."}, {"role": "user", "content": user_turn(1)}]
    first = ask(p, [*base, {"role": "assistant", "content": "x"}, {"role": "user", "content": user_turn(2)}])
    other = [*base, {"role": "assistant", "content": "y"}, {"role": "user", "content": user_turn(3)}]
    branch = ask(p, other)
    stats = p.prompt_cache().stats
    assert stats.hits == 1 and 0 < stats.last_cached < branch.prompt_tokens
    assert len(p.prompt_cache()) == 2  # the first branch is still there, untrimmed
    again = ask(p, [*base, {"role": "assistant", "content": "x"}, {"role": "user", "content": user_turn(2)}])
    off = provider(model_dir, monkeypatch, 0)
    same([first, branch, again], [ask(off, m) for m in ([*base[:2], *_x(2)], other, [*base[:2], *_x(2)])])


def _x(n: int) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": "x"}, {"role": "user", "content": user_turn(n)}]


def test_the_byte_bound_evicts_least_recently_used(model_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def prompt(n: int) -> str:  # no two share a first token: no state helps another
        return f"{n} " + user_turn(n)

    p = provider(model_dir, monkeypatch)
    p.complete(prompt(0), max_tokens=6)
    size = p.prompt_cache().nbytes
    assert size > 0
    p = provider(model_dir, monkeypatch, size * 2)  # room for two states of this size
    for n in range(4):
        p.complete(prompt(n), max_tokens=6)
        assert p.prompt_cache().nbytes <= size * 2
    cache = p.prompt_cache()
    assert 1 <= len(cache) <= 2 and cache.stats.evictions >= 2  # states grow with their prompt
    p.complete(prompt(3) + " more", max_tokens=6)  # kept: a hit
    assert cache.stats.last_cached > 0
    p.complete(prompt(0) + " more", max_tokens=6)  # evicted: a miss
    assert cache.stats.last_cached == 0


def test_the_cache_goes_with_the_model(model_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    p = provider(model_dir, monkeypatch)
    conversation(p, 2)
    cache = p.prompt_cache()
    assert len(cache) >= 1 and cache.nbytes > 0
    p.unload()
    assert len(cache) == 0 and p.prompt_cache() is None
    p.load_model()
    assert len(p.prompt_cache()) == 0


def test_a_bad_prompt_cache_bytes_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from provender._settings import load_settings
    from provender.errors import ConfigError

    monkeypatch.setenv("PROVENDER_MEMORY__PROMPT_CACHE_BYTES", "lots")
    with pytest.raises(ConfigError, match="prompt_cache_bytes"):
        load_settings()
    monkeypatch.setenv("PROVENDER_MEMORY__PROMPT_CACHE_BYTES", "64MiB")
    assert load_settings().memory.prompt_cache_bytes == 64 * 2**20


def test_state_functions_on_a_real_dynamic_cache(model_dir: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from provender_transformers._prompt import can_trim, nbytes, trim

    p = provider(model_dir, monkeypatch)
    p.complete("the quick brown fox", max_tokens=4)
    cache = p.prompt_cache()
    (key,) = cache.keys()
    state, n = cache.fetch(key)
    assert n == len(key) - 1 and can_trim(state)
    held = state.get_seq_length()
    size = nbytes(state)
    trim(state, 2)
    assert state.get_seq_length() == held - 2 and 0 < nbytes(state) < size
    assert not can_trim(object())


def test_a_trimmed_copy_shares_the_tensors_and_never_changes_the_stored_state(tiny_llama: Any) -> None:
    """`copy_state` copies no tensor: the copy is cut and extended, the stored state keeps its values."""
    import torch

    from provender_transformers._loop import forward_names
    from provender_transformers._prompt import copy_state, new_state, trim
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    cache = (forward_names(model) or ("past_key_values",))[0]  # transformers 5.2x: cache
    ids = torch.arange(3, 43)[None]
    with torch.inference_mode():
        stored = new_state(model)
        model(input_ids=ids[:, :30], **{cache: stored}, use_cache=True)
        before = [(layer.keys.clone(), layer.values.clone()) for layer in stored.layers]
        branch = trim(copy_state(stored), 10)
        assert branch.layers[0].keys.data_ptr() == stored.layers[0].keys.data_ptr()  # shared, not copied
        assert branch.get_seq_length() == 20 and stored.get_seq_length() == 30
        out = model(input_ids=ids[:, 20:40], **{cache: branch}, use_cache=True).logits
        fresh = new_state(model)
        whole = model(input_ids=ids[:, :40], **{cache: fresh}, use_cache=True).logits
    assert torch.allclose(out, whole[:, 20:], atol=1e-4)  # the trimmed copy holds exactly 20 tokens
    assert branch.get_seq_length() == 40 and stored.get_seq_length() == 30
    for (k, v), layer in zip(before, stored.layers, strict=True):
        assert torch.equal(k, layer.keys) and torch.equal(v, layer.values)
