"""What a loaded model is: `LoadedModel` (the weights a provider loaded, their cache lease) and
the `UsageLock` that marks it used. The pool that holds them is `provender._pool`."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger("provender._pool")


class UsageLock:
    """A re-entrant lock (the `threading.RLock` interface) that marks its model used on release,
    so idle time counts from the end of a generation, not from its start."""

    def __init__(self, on_release: Callable[[], None]) -> None:
        self._lock = threading.RLock()
        self._on_release = on_release
        self._depth = 0  # changed only by the owner, read by anyone

    @property
    def held(self) -> bool:
        """True while some thread (this one included) holds the lock."""
        return self._depth > 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self._lock.acquire(blocking, timeout)
        if got:
            self._depth += 1
        return got

    def release(self) -> None:
        self._depth -= 1
        self._lock.release()
        self._on_release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass(eq=False)
class LoadedModel:
    """One model in memory: what its provider loaded, and the cache lease that keeps its files.

    ``model`` and ``tokenizer`` are whatever the provider uses. Hold ``lock`` while using
    the model (one generation at a time per model); releasing it marks the model used.
    ``on_unload`` (optional) frees what dropping the references does not (GPU caches, handles).
    ``prompt_cache`` (optional) is the model's `provender._prompt_cache.PromptCache`: the
    provider sets it at load, `provender ps` reports its size, and unloading empties it.
    """

    name: str
    model: Any
    tokenizer: Any = None
    path: str = ""
    lease: Any = None  # provender.Lease, or None for a directory outside the cache
    kind: str = "generation"  # or "embedding"
    provider: str = ""
    entry_key: str | None = None  # the cache entry's key (taken from the lease when not given)
    on_unload: Callable[[], None] | None = None
    # loads this model again from the same local files (never downloading), so that a model
    # pushed out for a load that then failed can come back; None: it cannot
    reload: Callable[[], LoadedModel] | None = field(default=None, repr=False)
    prompt_cache: Any = field(default=None, repr=False)  # a PromptCache, or None
    key: str = ""  # set by the pool
    keep_alive: float | None = None  # per-model keep-alive (seconds, -1 forever); None: the pool's
    since: float = field(default_factory=time.time)  # wall clock, when it was loaded
    last_used: float = field(default_factory=time.monotonic)
    lock: UsageLock = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.lock = UsageLock(self._released)
        if self.entry_key is None and self.lease is not None:
            self.entry_key = getattr(getattr(self.lease, "entry", None), "key", None)
        self._wake: Callable[[], None] | None = None
        self._reserved = 0  # callers between `ModelPool.use` finding it and taking its lock

    def _released(self) -> None:
        self.last_used = time.monotonic()
        if self._wake is not None:
            self._wake()

    @property
    def loaded(self) -> bool:
        """False once unloaded."""
        return self.model is not None

    def unload(self) -> None:
        """Drop the model and release its cache lease. Idempotent."""
        lease, self.lease = self.lease, None
        hook, self.on_unload = self.on_unload, None
        prompts, self.prompt_cache = self.prompt_cache, None
        self.model = self.tokenizer = None
        try:
            if prompts is not None:
                prompts.clear()
            if hook is not None:
                hook()
        except Exception as exc:  # an unload hook failing must not keep the lease
            logger.warning("unloading %s: %s", self.name, exc)
        finally:
            if lease is not None:
                lease.release()

    def _busy(self) -> bool:
        return self._reserved > 0 or self.lock.held
