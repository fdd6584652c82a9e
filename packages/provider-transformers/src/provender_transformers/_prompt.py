"""transformers' prompt caches: `provender._prompt_cache.PromptCache` over transformers' `DynamicCache`.

A state is the `DynamicCache` a ``model.generate`` call filled (``past_key_values``). One whose
layers are all plain dynamic layers is trimmed with ``crop``; a sliding-window layer
(``DynamicSlidingWindowLayer``, built for a config with ``sliding_window``), a static or any
other cache cannot be cut back, so it is reused only whole. `decode_tokens` keeps the state a
generation leaves under the ids it holds: the prompt and the reply's tokens that were fed back.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any

from provender._prompt_cache import PromptCache, prompt_cache_bytes


def _tensors(state: Any) -> Iterator[Any]:
    """The key and value tensors of `state` (transformers >= 4.56 keeps them in ``layers``)."""
    layers = getattr(state, "layers", None)
    if layers is not None:
        for layer in layers:
            yield from (t for t in (getattr(layer, "keys", None), getattr(layer, "values", None)) if t is not None)
    else:  # older DynamicCache: two lists of tensors
        yield from getattr(state, "key_cache", [])
        yield from getattr(state, "value_cache", [])


def nbytes(state: Any) -> int:
    """Bytes of the key/value tensors `state` holds."""
    return sum(int(t.numel()) * int(t.element_size()) for t in _tensors(state))


def can_trim(state: Any) -> bool:
    """True for a `DynamicCache` of plain dynamic layers: ``crop`` cuts it back exactly."""
    from transformers import DynamicCache

    if type(state) is not DynamicCache:
        return False
    layers = getattr(state, "layers", None)
    if layers is None:  # older DynamicCache: full attention only
        return True
    return bool(layers) and all(
        getattr(layer, "is_croppable", False) and not getattr(layer, "is_sliding", False) for layer in layers
    )


def trim(state: Any, n: int) -> Any:
    """Drop the last `n` tokens of `state`, in place (``crop`` with a negative count: every version's meaning)."""
    if n > 0:
        state.crop(-n)
    return state


def new_prompt_cache(max_bytes: int | None = None) -> PromptCache:
    """An empty prompt cache for one loaded model, bounded by ``memory.prompt_cache_bytes`` unless given."""
    return PromptCache(
        prompt_cache_bytes() if max_bytes is None else max_bytes,
        nbytes=nbytes,
        can_trim=can_trim,
        trim=trim,
        copy=copy.deepcopy,
    )


def new_state(model: Any) -> Any:
    """An empty `DynamicCache` for `model` (sliding-window layers where its config asks for them)."""
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # transformers before the config argument
        return DynamicCache()


def keep(cache: PromptCache, tokens: Sequence[int], state: Any) -> bool:
    """Store `state` after a generation fed it `tokens` (the prompt, then the reply's tokens):
    under the ids it holds (``get_seq_length``; the last generated token was never fed)."""
    held = int(state.get_seq_length())
    if held <= 0 or held > len(tokens):
        return False
    return cache.store(tokens[:held], state)
