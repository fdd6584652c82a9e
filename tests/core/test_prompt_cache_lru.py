"""`PromptCache`'s own rules on a fake runtime (a state is the list of token ids it holds):
superseded states handed over rather than copied, branches of a prompt still copied, and two
interleaved conversations under a tight byte bound each keeping theirs."""

from __future__ import annotations

import random

from provender._prompt_cache import PromptCache, common_prefix

TOKEN_BYTES = 8


class Runtime:
    """The four functions of a trimmable runtime, counting the copies."""

    def __init__(self) -> None:
        self.copies = 0

    def cache(self, max_bytes: int = 1 << 30) -> PromptCache:
        def copy(state: list[int]) -> list[int]:
            self.copies += 1
            return list(state)

        def trim(state: list[int], n: int) -> list[int]:
            del state[len(state) - n :]
            return state

        return PromptCache(
            max_bytes, nbytes=lambda s: len(s) * TOKEN_BYTES, can_trim=lambda s: True, trim=trim, copy=copy
        )


def generate(cache: PromptCache, prompt: list[int], reply: list[int]) -> list[int]:
    """What a provider does: fetch, check the state, 'prefill' the rest, store prompt + reply but the last."""
    state, n = cache.fetch(prompt)
    state = [] if state is None else state
    assert state == prompt[:n]  # a state holds exactly what fetch says
    state += prompt[n:] + reply[:-1]
    cache.store(prompt + reply[:-1], state)
    return reply


def test_common_prefix_matches_the_plain_loop() -> None:
    rng = random.Random(0)
    for _ in range(500):
        a = [rng.randint(0, 3) for _ in range(rng.randint(0, 40))]
        b = a[: rng.randint(0, len(a))] + [rng.randint(0, 3) for _ in range(rng.randint(0, 40))]
        expected = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        for x, y in ((a, b), (tuple(a), tuple(b)), (a, tuple(b)), (iter(a), b)):
            assert common_prefix(list(x) if not isinstance(x, (list, tuple)) else x, y) == expected


def test_a_reply_rendered_with_other_tokens_is_handed_over_not_copied() -> None:
    """The next turn shares the whole earlier prompt and diverges inside the generated reply (the
    template renders it with other tokens): the earlier state is superseded, trimmed in place."""
    rt = Runtime()
    cache = rt.cache()
    prompt = [1, 2, 3, 4, 5]
    for turn in range(10):
        reply = [100 + turn, 200 + turn, 300 + turn]
        generate(cache, prompt, reply)
        # the caller renders the reply's end with other tokens than the two it generated, then its next message
        prompt = prompt + reply[:1] + [999, 7, 8, 9, 10 + turn]
        assert len(cache) == 1
    assert rt.copies == 0
    assert cache.stats.hits == 9 and cache.stats.misses == 1


def test_a_branch_inside_the_prompt_and_a_regenerated_reply_are_still_copied() -> None:
    rt = Runtime()
    cache = rt.cache()
    first = [1, 2, 3, 4, 5, 6]
    generate(cache, first, [50, 51, 52])
    branch = [1, 2, 3, 9, 9]  # diverges inside the first request's prompt: a branch of the conversation
    generate(cache, branch, [60, 61])
    assert rt.copies == 1 and len(cache) == 2
    state, n = cache.fetch([*first, 50, 51, 70])  # the first branch, whole
    assert n == len(first) + 2 and state == [*first, 50, 51]
    cache.store([*first, 50, 51], state)
    again = generate(cache, first, [80, 81])  # the same prompt again (a regenerated reply): the old one kept
    assert again == [80, 81] and rt.copies == 2
    stored = cache.keys()
    assert (*first, 50, 51) in stored


def test_a_state_stored_without_a_request_counts_as_all_prompt() -> None:
    rt = Runtime()
    cache = rt.cache()
    saved = [1, 2, 3, 4, 5, 6]
    cache.store(saved, list(saved))  # as a prefill of a system prompt does
    state, n = cache.fetch([1, 2, 3, 4, 9])
    assert (state, n) == ([1, 2, 3, 4], 4) and rt.copies == 1 and len(cache) == 1


def test_two_interleaved_conversations_keep_theirs_under_a_tight_bound() -> None:
    """Room for about two conversations' states: with a copy of each superseded state left behind,
    those near-duplicates pushed the other conversation's state out (it was older in the LRU)."""
    rt = Runtime()
    turn_tokens = 40
    cache = rt.cache(max_bytes=2 * 11 * turn_tokens * TOKEN_BYTES + 64)
    prompts = {c: [c, 1, 2, 3] for c in (10, 20)}
    for turn in range(10):
        for c, prompt in prompts.items():
            reply = [c * 1000 + turn * 10 + k for k in range(4)]
            generate(cache, prompt, reply)
            if turn:
                assert cache.stats.last_cached >= len(prompt) - turn_tokens, (c, turn, cache.stats)
            rendered = [*reply[:-2], 7]  # the template renders the reply's end with other tokens
            prompts[c] = prompt + rendered + [c + 5] * (turn_tokens - len(rendered))
    assert len(cache) == 2 and cache.stats.evictions == 0 and rt.copies == 0
