"""Prompt caches on disk: a loaded model's `PromptCache` reads, and saves, prompt states in the shared cache.

A long system prompt or a document that many processes start from is processed once: its KV
state is saved into the shared disk cache as an entry of kind ``prompt`` (`provender._cache._prompts`),
keyed by the model's content, the runtime and its version and the exact token ids. A process
that has the model loaded and gets a prompt starting with a saved prefix loads the state
instead of computing it (`DiskPrompts.lookup`, asked by `PromptCache.fetch` when memory holds
nothing as long). A saved state of another version of the model (same name, other content),
another runtime version, or with a damaged file is never used: the prompt is processed as if
it were not there, and a warning says so once per entry and process.

Which prompts are saved: ``provender cache prompt -m MODEL TEXT`` (or `PooledProvider.save_prompt`)
computes and saves one explicitly; with ``cache.prompt_cache_auto_tokens`` set to N > 0, every
prompt of at least N tokens is saved after its generation (its prompt tokens only, not the
reply), unless a saved one covers it already. ``cache.prompt_cache_max_size`` (a budget inside
``cache.max_size``; 0 = off) bounds them, least recently used evicted first, before any model.

A provider takes part by giving a `PromptCodec` (its runtime's own machinery to prefill, write
and read a state) from ``PooledProvider.prompt_codec``; the base attaches a `DiskPrompts` to
the loaded model's prompt cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provender._prompt_cache import common_prefix

if TYPE_CHECKING:
    from provender._cache import CacheEntry, CacheManager

logger = logging.getLogger("provender.prompt_cache")

#: a saved state longer than the common prefix is cut back (when it can be) only to reuse at least this many
MIN_TRIMMED_REUSE = 32


@dataclass(frozen=True)
class PromptCodec:
    """A runtime's machinery for prompt states on disk.

    ``runtime`` and ``version`` go into the key (a state of another version is never read);
    ``prefill(ids)`` computes a state holding exactly `ids`; ``write(state, folder)`` writes it
    into a folder; ``read(folder)`` reads it back (raises on a file it cannot read);
    ``trimmable(state)`` says whether it can be cut back to fewer tokens (the `PromptCache`'s
    ``trim`` does it); ``encode(text)`` is the ids a prompt text is processed as."""

    runtime: str
    version: str
    prefill: Callable[[list[int]], Any]
    write: Callable[[Any, Path], None]
    read: Callable[[Path], Any]
    trimmable: Callable[[Any], bool]
    encode: Callable[[str], list[int]]


def model_identity(path: str | os.PathLike[str], lease: Any = None) -> str:
    """What a saved state is valid for: the loaded model's content.

    A Hub repo: its id and the snapshot's commit. An entry provender stored, or a directory: its
    files' relative paths, sizes and modification times, hashed (an entry imported again with
    other weights is another model; the same files are the same model wherever they are)."""
    entry = getattr(lease, "entry", None)
    if entry is not None and entry.kind == "hub":
        return f"hub:{entry.metadata.get('repo_id', entry.name)}@{Path(entry.model_path).name}"
    root = Path(entry.model_path) if entry is not None else Path(path)
    digest = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for p in files:
        if p.name.startswith(".provender-entry"):
            continue  # the manifest is rewritten by verify: not the model
        st = p.stat()
        digest.update(f"\0{p.relative_to(root) if p != root else p.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return f"{'path' if entry is None else entry.kind}:{digest.hexdigest()}"


class DiskPrompts:
    """One loaded model's saved prompt caches in `cache` (see the module docs).

    ``model`` is the model's name (listed, and used to tell a changed model from another one),
    ``identity`` its `model_identity`, ``trim(state, n)`` the `PromptCache`'s trim, and
    ``auto_tokens`` the threshold of ``cache.prompt_cache_auto_tokens`` (0: off)."""

    def __init__(
        self,
        cache: CacheManager,
        model: str,
        identity: str,
        codec: PromptCodec,
        trim: Callable[[Any, int], Any],
        *,
        auto_tokens: int = 0,
    ) -> None:
        self.cache, self.model, self.identity, self.codec = cache, model, identity, codec
        self._trim = trim
        self.auto_tokens = auto_tokens
        self._tokens: dict[str, list[int] | None] = {}  # an entry's tokens, read once per process
        self._warned: set[str] = set()
        self.loaded = 0  # states read from disk since the model loaded
        self.saved = 0

    @property
    def enabled(self) -> bool:
        """False when ``cache.prompt_cache_max_size`` is 0: nothing is read or saved."""
        return self.cache.prompt_max_size > 0

    def _warn(self, entry: CacheEntry, why: str) -> None:
        if entry.key in self._warned:
            return
        self._warned.add(entry.key)
        logger.warning(
            "not using the saved prompt cache %s for %s: %s; the prompt is processed instead",
            entry.name,
            self.model,
            why,
        )

    def _candidates(self, tokens: Sequence[int]) -> list[tuple[int, CacheEntry, list[int]]]:
        """``(usable, entry, saved_tokens)`` of this runtime's saved states that share a prefix with
        `tokens`, longest first; the ones of another model version or runtime version are warned about."""
        from provender._cache._prompts import read_tokens

        found = []
        for entry in self.cache.prompts.entries():
            meta = entry.metadata.get("prompt", {})
            if meta.get("runtime") != self.codec.runtime:
                continue
            same_model = meta.get("model_id") == self.identity
            if not same_model and meta.get("model") != self.model:
                continue  # another model altogether: not a candidate
            if entry.key not in self._tokens:
                self._tokens[entry.key] = read_tokens(entry)
            saved = self._tokens[entry.key]
            if saved is None:
                if os.path.isdir(entry.path):
                    self._warn(entry, "its tokens file is damaged (`provender cache verify --fix` drops it)")
                continue
            usable = min(common_prefix(saved, tokens), len(tokens) - 1)
            if usable < len(saved) and not (meta.get("trimmable") and usable >= MIN_TRIMMED_REUSE):
                continue
            if not same_model:
                self._warn(entry, "it was saved for other weights of this model")
                continue
            if meta.get("runtime_version") != self.codec.version:
                self._warn(entry, f"it was made by {meta.get('runtime_version')}, this is {self.codec.version}")
                continue
            found.append((usable, entry, saved))
        found.sort(key=lambda c: (-c[0], len(c[2])))
        return found

    def lookup(self, tokens: Sequence[int], better_than: int = 0) -> tuple[Any, int] | None:
        """``(state, n)``: a saved state holding the first `n` of `tokens`, n > `better_than`; None if there is none.

        Its files are checked against their recorded sha256 before the runtime reads them; a damaged
        one is warned about once and passed over."""
        from provender._cache._prompts import check_files

        if not self.enabled or len(tokens) < 2:
            return None
        for usable, entry, saved in self._candidates(tokens):
            if usable <= better_than:
                return None
            lease = self.cache.prompts.hold(entry)
            if lease is None:
                continue  # evicted meanwhile
            try:
                problem = check_files(lease.entry)
                if problem is not None:
                    self._warn(entry, f"its files are damaged ({problem}; `provender cache verify --fix` drops it)")
                    continue
                try:
                    state = self.codec.read(lease.entry.path)
                except Exception as exc:  # the runtime could not read what it wrote: damaged, or another format
                    self._warn(entry, f"the runtime could not read it ({type(exc).__name__}: {exc})")
                    continue
            finally:
                lease.release()
            if usable < len(saved):
                self._trim(state, len(saved) - usable)
            self.loaded += 1
            logger.info(
                "%s: loaded a saved prompt cache of %d tokens (%s) from the disk cache", self.model, usable, entry.name
            )
            return state, usable
        return None

    def saved_as(self, tokens: Sequence[int]) -> CacheEntry | None:
        """The saved prompt cache of exactly `tokens` for this model and runtime version, if its files are
        intact (`provender cache prompt` run again: nothing to compute); None otherwise."""
        from provender._cache._prompts import check_files, prompt_key

        key = prompt_key(self.identity, self.codec.runtime, self.codec.version, [int(t) for t in tokens])
        entry = next((e for e in self.cache.prompts.entries() if e.key == key), None)
        # not held or marked used: asking again is not a use (one evicted meanwhile fails the check)
        return entry if entry is not None and check_files(entry) is None else None

    def covered(self, tokens: Sequence[int]) -> bool:
        """True if a saved state (usable now) holds all of `tokens` but the last."""
        return any(usable >= len(tokens) - 1 for usable, _e, _s in self._candidates(tokens))

    def save(self, tokens: Sequence[int], state: Any) -> CacheEntry:
        """Save `state`, which holds exactly `tokens`, into the shared cache; returns its entry."""
        codec = self.codec
        entry = self.cache.prompts.save(
            model=self.model,
            model_id=self.identity,
            runtime=codec.runtime,
            version=codec.version,
            tokens=list(tokens),
            write=lambda folder: codec.write(state, folder),
            extra={"trimmable": bool(codec.trimmable(state))},
        )
        self._tokens[entry.key] = [int(t) for t in tokens]
        self.saved += 1
        logger.info("%s: saved a prompt cache of %d tokens to the disk cache (%s)", self.model, len(tokens), entry.name)
        return entry

    def compute_and_save(self, tokens: Sequence[int]) -> CacheEntry:
        """Process `tokens` (the runtime's prefill) and save the state."""
        return self.save(tokens, self.codec.prefill(list(tokens)))

    def wants(self, prompt: Sequence[int]) -> bool:
        """``cache.prompt_cache_auto_tokens``: True when `prompt` is long enough to be saved and no saved
        state covers it yet."""
        return self.enabled and 0 < self.auto_tokens <= len(prompt) and not self.covered(prompt)

    def offer(self, prompt: Sequence[int], state: Any = None) -> CacheEntry | None:
        """After a generation: save the prompt's state when `wants` says so. `state` holds exactly
        `prompt` (None: the runtime computes it again). A failure is only logged."""
        if not self.wants(prompt):
            return None
        try:
            return self.save(prompt, state) if state is not None else self.compute_and_save(prompt)
        except Exception as exc:  # saving is a bonus: the generation succeeded
            logger.warning("%s: could not save the prompt cache to the disk cache: %s", self.model, exc)
            return None


def attach(item: Any, codec: PromptCodec | None, cache: CacheManager | None) -> None:
    """Give the loaded model `item`'s prompt cache its `DiskPrompts` (the provider's `codec`, the cache
    its files came from or the default one); nothing when the provider keeps no prompt cache or no codec."""
    prompts = getattr(item, "prompt_cache", None)
    if prompts is None or codec is None:
        return
    from provender._cache import CacheManager
    from provender._settings import load_settings

    lease = getattr(item, "lease", None)
    cm = cache if cache is not None else CacheManager()
    auto = int(load_settings().cache.prompt_cache_auto_tokens)
    prompts.disk = DiskPrompts(
        cm, item.name, model_identity(item.path, lease), codec, prompts.trim_state, auto_tokens=auto
    )
