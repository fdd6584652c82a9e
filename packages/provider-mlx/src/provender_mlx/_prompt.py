"""MLX's prompt caches: `provender._prompt_cache.PromptCache` over mlx-lm's own cache objects.

A state is the list of per-layer cache objects ``make_prompt_cache(model)`` builds (a `KVCache`
per layer for a llama; a `RotatingKVCache` for a sliding window, which mlx-lm cannot trim, so
it is reused only whole). `decode` keeps the state a generation leaves under the ids it holds.

On disk (`provender._prompt_disk`), a state is mlx-lm's own ``save_prompt_cache`` file
(safetensors, ``prompt_cache.safetensors``), read back with ``load_prompt_cache``; `codec`
gives the loaded model's machinery (prefill in chunks of `PREFILL_STEP` tokens, as mlx-lm's
``generate_step`` does).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from provender._prompt_cache import PromptCache, common_prefix, prompt_cache_bytes

if TYPE_CHECKING:
    from pathlib import Path

    from provender import LoadedModel
    from provender._prompt_disk import PromptCodec

STATE_FILE = "prompt_cache.safetensors"
PREFILL_STEP = 2048  # mlx-lm's generate_step default prefill_step_size


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


def codec(item: LoadedModel) -> PromptCodec:
    """mlx-lm's machinery for the prompt states of loaded model `item` on disk (see the module docs)."""
    import mlx.core as mx
    import mlx_lm
    from mlx_lm.models.cache import can_trim_prompt_cache, load_prompt_cache, make_prompt_cache, save_prompt_cache

    from provender._prompt_disk import PromptCodec
    from provender_mlx.provider import encode

    def prefill(ids: list[int]) -> list[Any]:
        state = make_prompt_cache(item.model)
        tokens = mx.array(ids)
        for start in range(0, len(ids), PREFILL_STEP):
            item.model(tokens[start : start + PREFILL_STEP][None], cache=state)
            mx.eval([c.state for c in state])
        return state

    def write(state: list[Any], folder: Path) -> None:
        save_prompt_cache(str(folder / STATE_FILE), state)

    def read(folder: Path) -> list[Any]:
        state: list[Any] = load_prompt_cache(str(folder / STATE_FILE))  # type: ignore[no-untyped-call]
        mx.eval([c.state for c in state])
        return state

    return PromptCodec(
        runtime="mlx-lm",
        version=f"mlx-lm {mlx_lm.__version__}, mlx {getattr(mx, '__version__', '?')}",
        prefill=prefill,
        write=write,
        read=read,
        trimmable=can_trim_prompt_cache,
        encode=lambda text: encode(item.tokenizer, text),
    )


def offer(cache: PromptCache, prompt: list[int], state: list[Any]) -> None:
    """``cache.prompt_cache_auto_tokens``: save the prompt's part of `state` (after a generation) to the
    disk cache when the prompt is long enough and not saved yet; a state that cannot be cut back to the
    prompt is computed again."""
    disk = cache.disk
    if disk is None or not disk.wants(prompt):
        return
    from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

    held = processed(state)
    snapshot = None
    if held is not None and held >= len(prompt) and can_trim_prompt_cache(state):
        snapshot = copy.deepcopy(state)
        trim_prompt_cache(snapshot, held - len(prompt))
    disk.offer(prompt, snapshot)


def segments(
    tokenizer: Any, messages: Sequence[dict[str, Any]], tools: Any, tokens: list[int], reused: int
) -> list[list[int]]:
    """The ids a batch still prefills, ``tokens[reused:]``, split where ``mlx_lm.server`` splits a
    chat's: a conversation that starts with its system prompt and ends with a user turn has the
    rest of that system prompt prefilled as a step of its own, then the rest. Causal attention in
    one step computes the whole square of scores and masks half; two steps skip the masked corner
    (a first visit, 391 tokens on the benchmarks' tiny llama: 0.42 s against 0.45 s), and the
    steps are those mlx-lm's own server takes. Once the system prompt is reused, one step."""
    rest = [tokens[reused:]]
    system = next((i for i, m in enumerate(messages) if m.get("role") != "system"), len(messages))
    if not system or messages[-1].get("role") != "user":
        return rest
    kwargs: dict[str, Any] = {"add_generation_prompt": False, "tokenize": False}
    if tools:
        kwargs["tools"] = tools
    text = str(tokenizer.apply_chat_template([*messages[:system], {"role": "user", "content": ""}], **kwargs))
    if reused > len(text.encode("utf-8")):  # each id holds a byte at least (and one may be a BOS): all reused
        return rest
    from provender_mlx.provider import encode

    ids = encode(tokenizer, text)
    end = common_prefix(ids, tokens)
    if end >= min(len(ids), len(tokens)) or end <= reused:  # no divergence (mlx-lm splits none), or reused
        return rest
    return [tokens[reused:end], tokens[end:]]
