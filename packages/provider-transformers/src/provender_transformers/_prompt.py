"""transformers' prompt caches: `provender._prompt_cache.PromptCache` over transformers' `DynamicCache`.

A state is the `DynamicCache` a generation ran over: the caller's-thread loop's
(`provender_transformers._loop`), or ``model.generate``'s on a worker thread (passed as its cache).
One whose layers are all plain dynamic layers is trimmed with ``crop`` (on a copy that shares its
tensors, `copy_state`); a sliding-window layer (``DynamicSlidingWindowLayer``, built for a config
with ``sliding_window``), a static or any other cache cannot be cut back, so it is reused only
whole. `decode_tokens` keeps the state a generation leaves under the ids it holds: the prompt and
the reply's tokens that were fed back.

On disk (`provender._prompt_disk`), a state is its per-layer key and value tensors in one
safetensors file (``kv.safetensors``: ``<layer>.keys``, ``<layer>.values``), read back into a
fresh `DynamicCache` with ``update``; only a cache of plain dynamic layers (one `crop` can cut)
is saved. `codec` gives the loaded model's machinery.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from provender._prompt_cache import PromptCache, prompt_cache_bytes

if TYPE_CHECKING:
    from pathlib import Path

    from provender import LoadedModel
    from provender._prompt_disk import PromptCodec

STATE_FILE = "kv.safetensors"


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


def copy_state(state: Any) -> Any:
    """A copy of `state` to trim and extend. For plain dynamic layers (the only ones trimmed) a new
    cache whose layers share the stored tensors: a `DynamicLayer` never writes into its tensors
    (``update`` concatenates, ``crop`` slices), so the copy costs nothing and the stored state never
    changes (a deep copy of the whole state, per request, only to keep a prefix of it, cost more
    than the prefill it saved for a short one). Any other cache is deep-copied."""
    if not can_trim(state):
        return copy.deepcopy(state)
    new = copy.copy(state)
    layers = getattr(state, "layers", None)
    if layers is None:  # older DynamicCache: two lists of tensors
        new.key_cache, new.value_cache = list(state.key_cache), list(state.value_cache)
    else:
        new.layers = [copy.copy(layer) for layer in layers]
    return new


def new_prompt_cache(max_bytes: int | None = None) -> PromptCache:
    """An empty prompt cache for one loaded model, bounded by ``memory.prompt_cache_bytes`` unless given."""
    return PromptCache(
        prompt_cache_bytes() if max_bytes is None else max_bytes,
        nbytes=nbytes,
        can_trim=can_trim,
        trim=trim,
        copy=copy_state,
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


def _layers(state: Any) -> list[tuple[Any, Any]]:
    """``(keys, values)`` of each layer of `state`."""
    layers = getattr(state, "layers", None)
    if layers is not None:
        return [(layer.keys, layer.values) for layer in layers]
    return list(zip(state.key_cache, state.value_cache, strict=True))


def codec(item: LoadedModel) -> PromptCodec:
    """transformers' machinery for the prompt states of loaded model `item` on disk (see the module docs)."""
    import torch
    from safetensors.torch import load_file, save_file

    import transformers
    from provender._prompt_disk import PromptCodec
    from provender.errors import ProvenderError

    model, tokenizer = item.model, item.tokenizer

    def prefill(ids: list[int]) -> Any:
        from provender_transformers._loop import forward_names

        state = new_state(model)
        cache_name, keep_name = forward_names(model) or ("past_key_values", None)  # 5.x: cache; before, past_key_values
        kwargs: dict[str, Any] = {cache_name: state, "use_cache": True}
        if keep_name is not None:
            kwargs[keep_name] = 1  # only the state is kept: no logits for every prompt token
        with torch.inference_mode():
            model(input_ids=torch.tensor([ids], device=model.device), **kwargs)
        return state

    def write(state: Any, folder: Path) -> None:
        if not can_trim(state):
            raise ProvenderError("a sliding-window or static cache is not saved to disk (only plain dynamic layers)")
        tensors = {}
        for i, (keys, values) in enumerate(_layers(state)):
            tensors[f"{i}.keys"], tensors[f"{i}.values"] = keys.contiguous().cpu(), values.contiguous().cpu()
        save_file(tensors, str(folder / STATE_FILE), metadata={"layers": str(len(tensors) // 2)})

    def read(folder: Path) -> Any:
        tensors = load_file(str(folder / STATE_FILE), device=str(model.device))
        state = new_state(model)
        layers = len(tensors) // 2
        if layers != model.config.num_hidden_layers:
            raise ValueError(f"{layers} layers saved, the model has {model.config.num_hidden_layers}")
        for i in range(layers):
            state.update(tensors[f"{i}.keys"], tensors[f"{i}.values"], i)
        return state

    return PromptCodec(
        runtime="transformers",
        version=f"transformers {transformers.__version__}, torch {torch.__version__}",
        prefill=prefill,
        write=write,
        read=read,
        trimmable=can_trim,
        encode=lambda text: [int(t) for t in tokenizer(text, add_special_tokens=True)["input_ids"]],
    )


def offer(cache: PromptCache, prompt: list[int], state: Any) -> None:
    """``cache.prompt_cache_auto_tokens``: save the prompt's part of `state` (after a generation) to the
    disk cache when the prompt is long enough and not saved yet (a copy cut back with ``crop``)."""
    disk = cache.disk
    if disk is None or not disk.wants(prompt) or not can_trim(state):
        return
    held = int(state.get_seq_length())
    if held < len(prompt):
        return
    snapshot = copy.deepcopy(state)
    trim(snapshot, held - len(prompt))
    disk.offer(prompt, snapshot)
