"""`PromptCache`: the prompt caches of one loaded model, so a conversation's next turn reads only its new tokens.

A chat or an agent loop sends the whole conversation again at every turn. After a generation
the provider stores the runtime's KV state under the token ids it has processed (prompt and
reply); a later request whose ids start with ids of a stored state reuses it and processes only
the rest. The contract, the same for every runtime:

- the **longest matching prefix** wins, over every stored state of the model;
- a stored state **longer** than the common prefix (a conversation that diverges, or whose
  reply the chat template renders with other tokens) is reused only when the runtime can trim
  it (``can_trim``) and is then trimmed to the common prefix, on a copy; a state that cannot be
  trimmed (a rotating, sliding-window cache, a recurrent state) is reused only when all of its
  tokens are a prefix of the request's, never cut;
- a state is **superseded** when a request shares all of the prompt it was generated for and
  diverges only inside the reply the runtime generated then (the next turn of a chat whose
  template renders that reply with other tokens, or a random model's special tokens dropped
  from its text): it is handed over and trimmed in place, not copied, as the next turn stores
  the longer state. The copy would cost a pass over the whole state per turn and leave a
  near-duplicate of every turn in the LRU, whose bytes then evict the other conversations'
  states. (`fetch` remembers the last requests' tokens by hash, so `store` knows which part of a state
  was its prompt; a state stored without a request before it counts as all prompt.)
- at least one token is always left to process (the runtime needs the logits of the last one);
- several conversations keep theirs: an LRU bounded in bytes (``memory.prompt_cache_bytes``,
  per loaded model; 0 turns prompt caching off), which lives with the loaded model and is
  dropped when the model unloads.

The runtime's own machinery is given as four functions (`PromptCache.__init__`): for mlx-lm
``sum(c.nbytes ...)``, ``can_trim_prompt_cache``, ``trim_prompt_cache`` and ``copy.deepcopy``.
The cache only stores and finds states; it never interprets them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

#: ``memory.prompt_cache_bytes``' default: room for many turns of many conversations on a small model
DEFAULT_PROMPT_CACHE_BYTES = 1 << 30


@dataclass
class PromptCacheStats:
    """What a `PromptCache` has done since its model loaded."""

    hits: int = 0  # requests that reused a stored state
    misses: int = 0  # requests that found none
    cached_tokens: int = 0  # prompt tokens not processed again, over all requests
    prefilled_tokens: int = 0  # prompt tokens processed, over all requests
    evictions: int = 0  # states dropped to keep the byte bound
    last_cached: int = 0  # the last request's reused tokens
    last_prefilled: int = 0  # the last request's processed tokens
    disk_hits: int = 0  # requests that reused a state saved in the disk cache (`provender._prompt_disk`)
    disk_tokens: int = 0  # prompt tokens those states held


#: how many recent requests `fetch` remembers, for `store` to tell a state's prompt from its reply
RECENT_REQUESTS = 16


@dataclass
class _Entry:
    state: Any
    nbytes: int
    trimmable: bool
    prompt: int  # the leading tokens that were the request's prompt (the rest the runtime generated)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading ids `a` and `b` share (slices compared in C, a bisection where they differ)."""
    if type(a) is not type(b) or not isinstance(a, (tuple, list)):
        a, b = tuple(a), tuple(b)
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


class PromptCache:
    """An LRU of one model's prompt states keyed by the token ids they hold, bounded in bytes.

    ``nbytes(state)``, ``can_trim(state)``, ``trim(state, n)`` (drop the last `n` tokens, in place)
    and ``copy(state)`` are the runtime's. `fetch` before prefilling, `store` after generating.
    Thread-safe; a state handed out by `fetch` belongs to the caller.
    """

    def __init__(
        self,
        max_bytes: int,
        *,
        nbytes: Callable[[Any], int],
        can_trim: Callable[[Any], bool],
        trim: Callable[[Any, int], Any],
        copy: Callable[[Any], Any],
    ) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self._nbytes, self._can_trim, self._trim, self._copy = nbytes, can_trim, trim, copy
        self._entries: OrderedDict[tuple[int, ...], _Entry] = OrderedDict()  # least recently used first
        # the last requests' (length, hash of their tokens): which part of a stored state was its prompt
        self._asked: deque[tuple[int, int]] = deque(maxlen=RECENT_REQUESTS)
        self._lock = threading.Lock()
        self.stats = PromptCacheStats()
        self.disk: Any = None  # a provender._prompt_disk.DiskPrompts: saved states in the shared cache

    def trim_state(self, state: Any, n: int) -> Any:
        """The runtime's trim: drop the last `n` tokens of `state`, in place."""
        return self._trim(state, n)

    @property
    def enabled(self) -> bool:
        """False when the bound is 0 bytes: nothing is stored, every request is processed whole."""
        return self.max_bytes > 0

    @property
    def nbytes(self) -> int:
        """Bytes of the stored states."""
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def keys(self) -> list[tuple[int, ...]]:
        """The stored token sequences, least recently used first."""
        with self._lock:
            return list(self._entries)

    def fetch(self, tokens: Sequence[int]) -> tuple[Any, int]:
        """``(state, n)``: a state holding the first `n` of `tokens` (process ``tokens[n:]`` on it),
        or ``(None, 0)``. A stored state the request extends is handed over (the request stores
        the longer one after it); a longer one is copied and trimmed. With a `disk` (saved prompt
        caches), a saved state longer than what memory holds is loaded instead. A superseded
        state (see the module docs) is handed over and trimmed, not copied."""
        tokens = tuple(tokens)
        with self._lock:
            self._asked.append((len(tokens), hash(tokens)))
        disk = self.disk
        if disk is not None and len(tokens) > 1:
            with self._lock:
                in_memory = max(
                    (
                        u
                        for key, e in self._entries.items()
                        if (u := min(common_prefix(key, tokens), len(tokens) - 1)) > 0
                        and (u == len(key) or e.trimmable)
                    ),
                    default=0,
                )
            found = disk.lookup(tokens, better_than=in_memory) if in_memory < len(tokens) - 1 else None
            if found is not None:
                state, usable = found
                with self._lock:
                    stats = self.stats
                    stats.hits += 1
                    stats.disk_hits += 1
                    stats.disk_tokens += usable
                    stats.last_cached, stats.last_prefilled = usable, len(tokens) - usable
                    stats.cached_tokens += usable
                    stats.prefilled_tokens += len(tokens) - usable
                return state, usable
        with self._lock:
            best: tuple[int, tuple[int, ...]] | None = None
            for key, entry in self._entries.items():
                usable = min(common_prefix(key, tokens), len(tokens) - 1)
                if usable <= 0 or (usable < len(key) and not entry.trimmable):
                    continue
                if best is None or usable > best[0] or (usable == best[0] and len(key) < len(best[1])):
                    best = (usable, key)
            if best is None:
                state, usable = None, 0
            else:
                usable, key = best
                if usable == len(key):  # all of it is the request's prefix: take it
                    state = self._entries.pop(key).state
                elif usable >= self._entries[key].prompt:  # superseded: diverges in its own reply
                    state = self._entries.pop(key).state
                    self._trim(state, len(key) - usable)
                else:
                    entry = self._entries[key]
                    self._entries.move_to_end(key)
                    state = self._copy(entry.state)
                    self._trim(state, len(key) - usable)
            stats = self.stats
            stats.hits, stats.misses = stats.hits + (state is not None), stats.misses + (state is None)
            stats.last_cached, stats.last_prefilled = usable, len(tokens) - usable
            stats.cached_tokens += usable
            stats.prefilled_tokens += len(tokens) - usable
            return state, usable

    def store(self, tokens: Sequence[int], state: Any) -> bool:
        """Keep `state`, which holds exactly `tokens`; False when it does not fit (or caching is off).
        A trimmable state makes the stored prefixes of `tokens` redundant: they are dropped."""
        if not self.enabled or not tokens:
            return False
        key = tuple(tokens)
        size = int(self._nbytes(state))
        if size > self.max_bytes:
            return False
        trimmable = bool(self._can_trim(state))
        with self._lock:
            # the longest recent request it extends (a hash collision would only make a state copied
            # or handed over wrongly later: never a wrong one reused); none: all of it counts as prompt
            prompt = next(
                (n for n, h in sorted(self._asked, reverse=True) if n <= len(key) and hash(key[:n]) == h), len(key)
            )
            self._entries.pop(key, None)
            if trimmable:
                for other in [k for k in self._entries if len(k) < len(key) and key[: len(k)] == k]:
                    del self._entries[other]
            self._entries[key] = _Entry(state, size, trimmable, prompt)
            total = sum(e.nbytes for e in self._entries.values())
            while total > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                total -= dropped.nbytes
                self.stats.evictions += 1
            return key in self._entries

    def resize(self, max_bytes: int) -> None:
        """A new bound, applied now (0 empties the cache and turns it off)."""
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        with self._lock:
            self.max_bytes = max_bytes
            total = sum(e.nbytes for e in self._entries.values())
            while self._entries and total > max_bytes:
                _, dropped = self._entries.popitem(last=False)
                total -= dropped.nbytes
                self.stats.evictions += 1

    def clear(self) -> None:
        """Drop every stored state (the model unloads)."""
        with self._lock:
            self._entries.clear()
            self._asked.clear()


def prompt_cache_bytes() -> int:
    """``memory.prompt_cache_bytes`` from the settings."""
    from provender._settings import load_settings

    return int(load_settings().memory.prompt_cache_bytes)
