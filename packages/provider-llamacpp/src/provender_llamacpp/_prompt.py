"""llama.cpp's prompt caches: `provender._prompt_cache.PromptCache` over llama.cpp's sequence state.

llama-cpp-python reuses only what its one context holds (the most recent prompt). Here a state
is the KV cache of sequence 0 as ``llama_state_seq_get_data`` copies it (the KV cells only, not
the logits llama-cpp-python also keeps), with how many tokens it holds. Trimming is lazy: a
trimmed copy shares the bytes and keeps fewer tokens, cut with ``llama_memory_seq_rm`` once
restored. A recurrent or hybrid model's state, or a sliding-window cache, cannot be cut: it is
reused only whole.

`restore` puts a fetched state into the `Llama`'s context and sets its ``n_tokens`` and
``input_ids`` so that ``Llama.generate`` evaluates only the rest of the prompt; `keep` stores
what a generation leaves, under exactly the ids the context holds.

On disk (`provender._prompt_disk`), a state is those bytes (``kv.bin``, the KV cells only, never
the logits) and ``state.json`` (tokens held, tokens kept, trimmable); `codec` gives the loaded
model's machinery (prefill with ``Llama.eval``). A state of another llama-cpp-python (another
llama.cpp) is never read; one llama.cpp refuses to restore (another context size or KV type) is
recomputed, as `restore` does for any state it cannot put back.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from provender._prompt_cache import PromptCache, prompt_cache_bytes

if TYPE_CHECKING:
    from pathlib import Path

    from provender import LoadedModel
    from provender._prompt_disk import PromptCodec

SEQ = 0  # llama-cpp-python decodes every token into sequence 0
STATE_FILE, INFO_FILE = "kv.bin", "state.json"


@dataclasses.dataclass
class KVState:
    """One sequence's KV cells as llama.cpp serialised them; the first `keep` of its `held` tokens count."""

    data: Any  # a ctypes uint8 array, never written after it is taken (copies share it)
    held: int  # tokens in `data`
    keep: int  # tokens left once restored (`trim` lowers it)
    trimmable: bool

    @property
    def nbytes(self) -> int:
        return len(self.data)


def _trim(state: KVState, n: int) -> KVState:
    state.keep = max(0, state.keep - n)
    return state


def new_prompt_cache(max_bytes: int | None = None) -> PromptCache:
    """An empty prompt cache for one loaded model, bounded by ``memory.prompt_cache_bytes`` unless given."""
    return PromptCache(
        prompt_cache_bytes() if max_bytes is None else max_bytes,
        nbytes=lambda state: state.nbytes,
        can_trim=lambda state: state.trimmable,
        trim=_trim,
        copy=dataclasses.replace,  # shares the (unchanging) bytes
    )


def can_trim(llm: Any) -> bool:
    """Whether llama.cpp can cut this model's KV cache back to a prefix (not a recurrent or
    hybrid state, nor a sliding-window cache, whose early cells are gone)."""
    import llama_cpp

    model = llm._model.model
    return not (
        llama_cpp.llama_model_is_recurrent(model)
        or llama_cpp.llama_model_is_hybrid(model)
        or llama_cpp.llama_model_n_swa(model) > 0
    )


def _memory(llm: Any) -> Any:
    import llama_cpp

    return llama_cpp.llama_get_memory(llm._ctx.ctx)


def _holds(llm: Any, tokens: Sequence[int], n: int) -> bool:
    """The context already holds the first `n` of `tokens` (the same conversation, just generated)."""
    return bool(llm.n_tokens >= n and llm.input_ids[:n].tolist() == list(tokens[:n]))


def _set(llm: Any, tokens: Sequence[int], n: int) -> None:
    llm.input_ids[:n] = tokens[:n]
    llm.n_tokens = n
    llm._requires_eval = True  # the logits are not those of token n: generate evaluates the rest


def restore(llm: Any, tokens: Sequence[int], state: KVState | None, n: int) -> int:
    """Make `llm`'s context hold the first `n` of `tokens` from `state` (``state, n`` are a
    `PromptCache.fetch` answer), so that ``Llama.generate(tokens)`` evaluates ``tokens[n:]`` only; returns the tokens
    it holds (0: nothing reused, the context reset)."""
    import llama_cpp

    mem = _memory(llm)
    if state is None or n <= 0:
        llm.reset()  # nothing stored matches: the whole prompt is evaluated, as the stats say
        return 0
    if _holds(llm, tokens, n) and llama_cpp.llama_memory_seq_rm(mem, SEQ, n, -1):
        _set(llm, tokens, n)  # what the context holds already: no copy
        return n
    llama_cpp.llama_memory_clear(mem, True)
    ok = llama_cpp.llama_state_seq_set_data(llm._ctx.ctx, state.data, state.nbytes, SEQ) > 0
    if ok and state.keep < state.held:
        ok = bool(llama_cpp.llama_memory_seq_rm(mem, SEQ, state.keep, -1))
    if not ok or state.keep != n:
        llama_cpp.llama_memory_clear(mem, True)
        llm.reset()
        return 0
    _set(llm, tokens, n)
    return n


def keep(cache: PromptCache, llm: Any) -> bool:
    """Store what `llm`'s context holds after a generation: its evaluated ids (the prompt and
    the reply's tokens but the last, which is sampled, never evaluated) and their KV cells."""

    state = take(llm, cache.max_bytes)
    if state is None:
        return False
    return cache.store([int(t) for t in llm.input_ids[: state.held]], state)


def take(llm: Any, max_bytes: int | None = None) -> KVState | None:
    """The KV cells of what `llm`'s context holds (its ``n_tokens`` evaluated ids), None when there
    are none, they are larger than `max_bytes`, or llama.cpp cannot copy them."""
    import llama_cpp

    held = int(llm.n_tokens)
    if held <= 0:
        return None
    # cells past n_tokens (a batch that failed part way) would not match the key: cut them
    if not llama_cpp.llama_memory_seq_rm(_memory(llm), SEQ, held, -1):
        return None
    ctx = llm._ctx.ctx
    size = int(llama_cpp.llama_state_seq_get_size(ctx, SEQ))
    if size <= 0 or (max_bytes is not None and size > max_bytes):
        return None
    data = (ctypes.c_uint8 * size)()
    if int(llama_cpp.llama_state_seq_get_data(ctx, data, size, SEQ)) != size:
        return None
    return KVState(data, held, held, can_trim(llm))


def codec(item: LoadedModel) -> PromptCodec:
    """llama.cpp's machinery for the prompt states of loaded model `item` on disk (see the module docs)."""
    import llama_cpp

    from provender._prompt_disk import PromptCodec
    from provender.errors import ProvenderError
    from provender_llamacpp.provider import prompt_ids

    llm = item.model

    def prefill(ids: list[int]) -> KVState:
        llm.reset()
        llm.eval(ids)
        state = take(llm)
        if state is None:
            raise ProvenderError("llama.cpp could not copy the prompt's KV state")
        return state

    def write(state: KVState, folder: Path) -> None:
        (folder / STATE_FILE).write_bytes(bytes(state.data))
        info = {"held": state.held, "keep": state.keep, "trimmable": state.trimmable}
        (folder / INFO_FILE).write_text(json.dumps(info))

    def read(folder: Path) -> KVState:
        info = json.loads((folder / INFO_FILE).read_text())
        raw = (folder / STATE_FILE).read_bytes()
        held, kept = int(info["held"]), int(info["keep"])
        if not 0 < kept <= held:
            raise ValueError(f"state.json holds {held} tokens and keeps {kept}")
        return KVState((ctypes.c_uint8 * len(raw)).from_buffer_copy(raw), held, kept, bool(info["trimmable"]))

    return PromptCodec(
        runtime="llama.cpp",
        version=f"llama-cpp-python {llama_cpp.__version__}",
        prefill=prefill,
        write=write,
        read=read,
        trimmable=lambda state: bool(state.trimmable),
        encode=lambda text: prompt_ids(llm, text, False),
    )


def offer(cache: PromptCache, llm: Any, prompt: Sequence[int]) -> None:
    """``cache.prompt_cache_auto_tokens``: after a generation, save the prompt's part of what the context
    holds to the disk cache when the prompt is long enough and not saved yet (a state that cannot be
    cut back to the prompt, recurrent or sliding-window, is not saved)."""
    disk = cache.disk
    if disk is None or not can_trim(llm) or not disk.wants(prompt):
        return
    n = len(prompt)
    if int(llm.n_tokens) < n or [int(t) for t in llm.input_ids[:n]] != list(prompt):
        return
    state = take(llm)
    if state is not None:
        disk.offer(prompt, dataclasses.replace(state, keep=n))
