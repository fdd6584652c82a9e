"""MLX's prompt cache: a conversation's next turn prefills only its new tokens, with the same output.

A tiny random llama built on the spot; greedy output (and the model's own logprobs) with the
prompt cache is compared with the same requests on a second load with the cache off.
"""

from __future__ import annotations

from pathlib import Path
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


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from provender_mlx.testing import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("pc") / "llama", seed=0, hidden_size=64, layers=2)


def provider(path: Path, monkeypatch: pytest.MonkeyPatch, cache_bytes: int | str | None = None) -> Any:
    """A fresh load of the model (the previous one unloaded), with ``memory.prompt_cache_bytes`` as given."""
    from provender_mlx import MLXProvider

    MLXProvider.clear_model_cache()
    if cache_bytes is None:
        monkeypatch.delenv("PROVENDER_MEMORY__PROMPT_CACHE_BYTES", raising=False)
    else:
        monkeypatch.setenv("PROVENDER_MEMORY__PROMPT_CACHE_BYTES", str(cache_bytes))
    p = MLXProvider(str(path))
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
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_first = conversation(provider(model_dir, monkeypatch), 5)
    off = conversation(provider(model_dir, monkeypatch, 0), 5)
    on_second = conversation(provider(model_dir, monkeypatch), 5)
    same(on_first, off)
    same(off, on_second)


def test_later_turns_prefill_only_their_new_tokens(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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


def test_zero_turns_the_cache_off(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = provider(model_dir, monkeypatch, 0)
    prefilled: list[int] = []
    results = conversation(p, 3, record=prefilled)
    cache = p.prompt_cache()
    assert not cache.enabled and len(cache) == 0 and cache.nbytes == 0
    assert prefilled == [0, 0, 0]  # never asked: nothing fetched
    assert cache.stats.hits == 0
    assert all(r.prompt_tokens > 0 for r in results)


def test_two_interleaved_conversations_both_hit(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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
    assert len(cache) == 2  # each conversation keeps one state: its prefixes were dropped as redundant
    # B's first turn already reuses the start of A's ("<|im_start|>system\nConversation "), trimmed
    assert cache.stats.hits == 5 and cache.stats.misses == 1

    off = provider(model_dir, monkeypatch, 0)
    for messages, results in ((a, a_results), (b, b_results)):
        replay = [ask(off, messages[: 2 + 2 * i]) for i in range(3)]
        same(results, replay)


def test_a_branch_that_diverges_mid_prefix_is_trimmed_and_correct(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
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


def test_the_byte_bound_evicts_least_recently_used(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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
    assert len(cache) == 2 and cache.stats.evictions == 2
    p.complete(prompt(3) + " more", max_tokens=6)  # kept: a hit
    assert cache.stats.last_cached > 0
    p.complete(prompt(0) + " more", max_tokens=6)  # evicted: a miss
    assert cache.stats.last_cached == 0


def test_the_cache_goes_with_the_model(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = provider(model_dir, monkeypatch)
    conversation(p, 2)
    cache = p.prompt_cache()
    assert len(cache) == 1
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


def test_a_rotating_cache_is_reused_only_whole_never_cut(model_dir: Path) -> None:
    """A sliding-window (`RotatingKVCache`) state past its window cannot be trimmed: a request that
    diverges inside it gets nothing, one that extends it gets all of it."""
    import mlx.core as mx
    from mlx_lm import load
    from mlx_lm.models.cache import RotatingKVCache

    from provender_mlx._prompt import keep, new_prompt_cache

    model = load(str(model_dir))[0]
    tokens = list(range(3, 23))
    state = [RotatingKVCache(max_size=8, keep=0) for _ in model.layers]
    model(mx.array([tokens]), cache=state)
    cache = new_prompt_cache(1 << 30)
    assert keep(cache, tokens, state)
    assert cache.fetch([*tokens[:15], 99, 100]) == (None, 0)  # diverges inside: never trimmed
    assert cache.fetch(tokens) == (None, 0)  # the same tokens would need the last one cut
    reused, n = cache.fetch([*tokens, 5, 6])
    assert reused is state and n == len(tokens)


def batched_conversations(p: Any, turns: int) -> tuple[list[list[Any]], list[int]]:
    """Two conversations decoded together on a `BatchSession`, turn by turn: each turn's token
    ids and logprobs per conversation, and each turn's reused tokens (the second turn on)."""
    session = p.batch_session()
    convs = [[{"role": "system", "content": f"Batched conversation {c}."}] for c in range(2)]
    out: list[list[Any]] = [[], []]
    cached: list[int] = []
    try:
        for t in range(turns):
            before = p.prompt_cache().stats.cached_tokens
            uids = {}
            for c in range(2):
                convs[c].append({"role": "user", "content": user_turn(t + 5 * c)})
                uids[session.insert(messages=convs[c], max_tokens=6, logprobs=True, top_logprobs=3)] = c
            texts = {u: "" for u in uids}
            logprobs: dict[int, list[Any]] = {u: [] for u in uids}
            finished: set[int] = set()
            while len(finished) < len(uids):
                for u, chunk in session.step_chunks():
                    texts[u] += chunk.text
                    logprobs[u] += chunk.logprobs or []
                    if chunk.finish_reason is not None:
                        finished.add(u)
            for u, c in uids.items():
                convs[c].append({"role": "assistant", "content": texts[u]})
                out[c].append([(x.token_id, x.logprob, [n for n, _ in x.top]) for x in logprobs[u]])
            cached.append(p.prompt_cache().stats.cached_tokens - before)
    finally:
        session.close()
    return out, cached


def test_batched_decoding_reuses_the_prompt_cache_with_the_same_output(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on, cached = batched_conversations(provider(model_dir, monkeypatch), 3)
    off, none = batched_conversations(provider(model_dir, monkeypatch, 0), 3)
    assert all(on) and len(on) == len(off)
    for a, b in zip(on, off, strict=True):
        assert [[(i, top) for i, _, top in turn] for turn in a] == [[(i, top) for i, _, top in turn] for turn in b]
        assert [[lp for _, lp, _ in turn] for turn in a] == [pytest.approx([lp for _, lp, _ in t], abs=1e-3) for t in b]
    assert none == [0, 0, 0]
    assert cached[1] > 100 and cached[2] > cached[1]  # both conversations' earlier turns, each turn


def test_a_first_visit_prefills_its_system_prompt_as_a_step_of_its_own(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from provender_mlx._prompt import segments
    from provender_mlx.provider import encode

    system = {"role": "system", "content": "You are a terse assistant. " + user_turn(3)}
    a = [system, {"role": "user", "content": user_turn(1)}]
    b = [system, {"role": "user", "content": user_turn(2)}]
    p = provider(model_dir, monkeypatch)
    with p.using("generation") as item:
        tokenizer = item.tokenizer
        ids_a, ids_b = (encode(tokenizer, p.template(item, m)) for m in (a, b))
    steps = segments(tokenizer, a, None, ids_a, 0)
    assert len(steps) == 2 and steps[0] + steps[1] == ids_a
    end = len(steps[0])
    assert ids_b[:end] == ids_a[:end] and ids_b[end] != ids_a[end]  # the system turn, up to the user's words
    assert tokenizer.decode(ids_a[:end]).endswith("<|im_start|>user\n")
    assert segments(tokenizer, a, None, ids_a, 5) == [ids_a[5:end], ids_a[end:]]  # a shared head reused
    assert segments(tokenizer, a, None, ids_a, end) == [ids_a[end:]]  # the system prompt reused: one step
    assert segments(tokenizer, a[1:], None, ids_a, 0) == [ids_a]  # no system prompt
    assert segments(tokenizer, [*a, {"role": "assistant", "content": "so"}], None, ids_a, 0) == [ids_a]


def test_a_batched_first_visit_in_two_steps_says_what_decode_says(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = provider(model_dir, monkeypatch, 0)  # no cache: every turn is a first visit, in two steps
    messages = [{"role": "system", "content": "Be brief. " + user_turn(4)}, {"role": "user", "content": user_turn(6)}]
    alone = [t.token_id for t in p.complete(messages=messages, max_tokens=12, logprobs=True).logprobs]
    session = p.batch_session()
    try:
        uid = session.insert(messages=messages, max_tokens=12, logprobs=True)
        batched: list[int] = []
        while len(session):
            batched += [x.token_id for u, chunk in session.step_chunks() if u == uid for x in chunk.logprobs or []]
    finally:
        session.close()
    assert alone and batched == alone
