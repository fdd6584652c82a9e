"""MLX's prompt caches: `provender._prompt_cache.PromptCache` over mlx-lm's own cache objects.

A state is the list of per-layer cache objects ``make_prompt_cache(model)`` builds (a `KVCache`
per layer for a llama; a `RotatingKVCache` for a sliding window, which mlx-lm cannot trim, so
it is reused only whole). `decode` keeps the state a generation leaves under the ids it holds.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from provender._prompt_cache import PromptCache, prompt_cache_bytes


def new_prompt_cache(max_bytes: int | None = None) -> PromptCache:
    """An empty prompt cache for one loaded model, bounded by ``memory.prompt_cache_bytes`` unless given."""
    from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

    return PromptCache(
        prompt_cache_bytes() if max_bytes is None else max_bytes,
        nbytes=lambda state: sum(int(c.nbytes) for c in state),
        can_trim=can_trim_prompt_cache,
        trim=trim_prompt_cache,
        copy=copy.deepcopy,
    )


def processed(state: list[Any]) -> int | None:
    """How many tokens the layers of `state` hold (their common ``offset``), None when unknown or unequal."""
    offsets = {int(c.offset) for c in state if hasattr(c, "offset")}
    return offsets.pop() if len(offsets) == 1 else None


def keep(cache: PromptCache, tokens: Sequence[int], state: list[Any]) -> bool:
    """Store `state` after a generation fed it `tokens` (prompt, then the reply's tokens): under
    the ids it holds. mlx-lm computes one token ahead, so a state may hold one the caller never
    saw; a trimmable one is cut back to what is known, another is not kept."""
    held = processed(state)
    if held is None or held <= 0:
        return False
    if held > len(tokens):
        from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

        if not can_trim_prompt_cache(state):
            return False
        trim_prompt_cache(state, held - len(tokens))
        held = len(tokens)
    return cache.store(tokens[:held], state)
