"""Saved prompt caches: a runtime's KV state for exact tokens of one model, as entries of their own kind.

A prompt cache is stored like an entry provender stores (``objects/<key>/``, a manifest, one
atomic rename), with ``kind: "prompt"`` in its manifest and index row. Its key is the sha256 of
what makes the state valid (`prompt_key`): the model's content (`model_id`: a Hub repo's
commit, a stored entry's key and creation time, a directory's files), the runtime and its
version, and the exact token ids. Its files:

- ``tokens.json``: the token ids the state holds (a JSON list of ints);
- the runtime's own files (mlx-lm's ``save_prompt_cache`` safetensors, a DynamicCache's
  per-layer tensors, llama.cpp's sequence state), written by the caller into the staging folder.

Every file's sha256 is in the manifest from the start, so `verify` checks them and a reader
can refuse a damaged file before handing it to the runtime (`check_files`). The metadata
(``metadata["prompt"]``) says which model, runtime, version and how many tokens.

They live under ``cache.max_size`` with a budget of their own (``cache.prompt_cache_max_size``,
`Store.prompt_max_size`): adding one evicts the least recently used prompt caches over that
budget, and any eviction takes prompt caches before models (`_eviction.plan_eviction`). Reading
one marks it used without counting a hit or a miss in the cache's stats (those are the models').
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provender._cache._fsops import fs_errors
from provender._cache._leases import Lease
from provender._cache._locks import LeaseLock
from provender._cache._repair import load_manifest, row_from_manifest, scan_files, write_manifest
from provender.errors import CacheError

if TYPE_CHECKING:
    from provender._cache._entry import CacheEntry
    from provender._cache._eviction import Evictor
    from provender._cache._store import Store
    from provender._cache._sync import Catalog

PROMPT = "prompt"
TOKENS_FILE = "tokens.json"


def tokens_digest(tokens: Sequence[int]) -> str:
    """The sha256 of token ids (as `tokens.json` holds them)."""
    return hashlib.sha256(json.dumps([int(t) for t in tokens], separators=(",", ":")).encode()).hexdigest()


def prompt_key(model_id: str, runtime: str, version: str, tokens: Sequence[int]) -> str:
    """The cache key of a prompt cache: the model's content, the runtime and its version, the exact tokens."""
    text = json.dumps([PROMPT, model_id, runtime, version, tokens_digest(tokens)])
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class PromptShelf:
    """The saved prompt caches of one cache (`CacheManager.save_prompt`, `prompt_entries`, `hold_prompt`)."""

    def __init__(self, store: Store, catalog: Catalog, evictor: Evictor) -> None:
        self.store, self.catalog, self.evictor = store, catalog, evictor

    def save(
        self,
        *,
        model: str,
        model_id: str,
        runtime: str,
        version: str,
        tokens: Sequence[int],
        write: Callable[[Path], None],
        extra: dict[str, Any] | None = None,
    ) -> CacheEntry:
        """Store a prompt cache: `write(folder)` writes the runtime's files into the staging folder.

        Replaces a prompt cache with the same key (the same model, runtime, version and tokens);
        then evicts prompt caches over their budget and anything over the cache's limit (never
        this one). Raises CacheError when it is larger than the prompt caches' budget."""
        store = self.store
        if store.index.degraded is not None:
            raise store.index.degraded
        tokens = [int(t) for t in tokens]
        key = prompt_key(model_id, runtime, version, tokens)
        name = f"prompt/{key[:12]}"
        now = time.time()
        with store.staging() as stage:
            with fs_errors(store.cache_dir):
                stage.mkdir(exist_ok=True)
                write(stage)
                (stage / TOKENS_FILE).write_text(json.dumps(tokens, separators=(",", ":")))
                files: dict[str, dict[str, Any]] = dict(scan_files(stage))
                for rel, info in files.items():
                    info["sha256"] = file_sha256(stage / rel)  # known from the start: verify and readers check it
                size = sum(int(f["size"]) for f in files.values())
                if size > store.prompt_max_size:
                    from provender._sizes import format_size

                    raise CacheError(
                        f"this prompt cache is {format_size(size)}, larger than cache.prompt_cache_max_size="
                        f"{format_size(store.prompt_max_size)}; not saved (raise the setting to save it)"
                    )
                metadata = {
                    PROMPT: {
                        "model": model,
                        "model_id": model_id,
                        "runtime": runtime,
                        "runtime_version": version,
                        "tokens": len(tokens),
                        "tokens_sha256": tokens_digest(tokens),
                        **(extra or {}),
                    }
                }
                manifest = {
                    "key": key,
                    "name": name,
                    "kind": PROMPT,
                    "created": now,
                    "files": files,
                    "filename": None,
                    "metadata": metadata,
                }
                write_manifest(stage, manifest)
            with store.lock:
                row = row_from_manifest(manifest, last_used=now)
                store.commit(stage, row, name, replace=True)
                self.catalog.reconcile()
                evicted = self.evictor.evict(protect={key})
        self.evictor.notify(evicted)
        return store.entry(row)

    def entries(self) -> list[CacheEntry]:
        """The saved prompt caches as the index has them (no scan of the disk: this runs per request),
        least recently used first."""
        store = self.store
        return [store.entry(row, pinned=False) for row in store.index.of_kind(PROMPT)]

    def hold(self, entry: CacheEntry) -> Lease | None:
        """Hold a prompt cache while its files are read (the read side of its lease, as for a model),
        marking it used; None when it went meanwhile. No hit or miss is counted in the cache's stats."""
        store = self.store
        lock = LeaseLock(store.lease_path(entry.key), is_singleton=False)
        lock.acquire_read()
        row = store.index.get(entry.key)
        if row is None or not os.path.isdir(store.cache_dir / row["path"]):
            lock.release()
            lock.close()
            return None
        store.index.touch(entry.key)
        return Lease(store.entry(row), lock, self.evictor.after_release)


def check_files(entry: CacheEntry) -> str | None:
    """Why the files of a saved prompt cache cannot be used (damaged, missing), or None: every file
    the manifest lists is there with its size and sha256, and the tokens file is the one recorded."""
    manifest, problem = load_manifest(entry.path)
    if problem is not None or manifest is None:
        return problem or "manifest is not valid"
    files = manifest["files"]
    if TOKENS_FILE not in files:
        return f"{TOKENS_FILE} is not listed in its manifest"
    for rel, info in files.items():
        path = entry.path / rel
        if os.path.islink(path) or not path.is_file():
            return f"{rel} is missing"
        if path.stat().st_size != info["size"]:
            return f"{rel} changed size ({info['size']} -> {path.stat().st_size} bytes)"
        if "sha256" in info and file_sha256(path) != info["sha256"]:
            return f"{rel} does not match its recorded sha256"
    return None


def read_tokens(entry: CacheEntry) -> list[int] | None:
    """The token ids a saved prompt cache holds, None when the file is missing or not what was recorded."""
    try:
        tokens = json.loads((entry.path / TOKENS_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(tokens, list) or not all(isinstance(t, int) for t in tokens):
        return None
    recorded = entry.metadata.get(PROMPT, {}).get("tokens_sha256")
    return tokens if recorded == tokens_digest(tokens) else None
