"""Loaded models kept in memory: an LRU bounded by count (`memory.max_models`) and idle time
(`memory.keep_alive`), safe to use from many threads.

Each loaded model holds a lease on its disk-cache entry, so no process evicts the
files while they are in memory; leaving this cache (LRU, idle, clear, close) releases it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    name: str
    model: Any
    tokenizer: Any
    path: str
    lease: Any = None  # provender.Lease, or None for a plain directory outside the cache
    kind: str = "generation"  # or "embedding" (model is then a SentenceEncoder)
    entry_key: str | None = None
    last_used: float = field(default_factory=time.monotonic)
    lock: threading.RLock = field(default_factory=threading.RLock)  # one generation at a time per model

    def unload(self) -> None:
        if self.lease is not None:
            self.lease.release()
            self.lease = None
        self.model = self.tokenizer = None


class LoadedModels:
    """`MLXProvider._model_cache`: name -> LoadedModel, least recently used first."""

    def __init__(self, max_models: int | None = None, keep_alive: float | None = None) -> None:
        self._items: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.RLock()
        self._max_models = max_models
        self._keep_alive = keep_alive
        self._reaper: threading.Thread | None = None
        self._wake = threading.Event()  # set when limits or contents change: the reaper re-plans

    # limits come from the settings on first use, so importing this module stays cheap
    def _limits(self) -> tuple[int, float]:
        if self._max_models is None or self._keep_alive is None:
            from provender import load_settings

            settings = load_settings()
            if self._max_models is None:
                self._max_models = settings.memory.max_models
            if self._keep_alive is None:
                self._keep_alive = settings.memory.keep_alive
        return self._max_models, self._keep_alive

    def configure(self, max_models: int | None = None, keep_alive: float | None = None) -> None:
        """Set the limits (None: from the settings) and apply them now."""
        with self._lock:
            self._max_models, self._keep_alive = max_models, keep_alive
            self._enforce()
            self._wake.set()

    def get(self, name: str) -> LoadedModel | None:
        with self._lock:
            self._expire()
            item = self._items.get(name)
            if item is not None:
                self._items.move_to_end(name)
                item.last_used = time.monotonic()
            return item

    def put(self, item: LoadedModel) -> None:
        with self._lock:
            old = self._items.pop(item.name, None)
            if old is not None and old is not item:
                old.unload()
            self._items[item.name] = item
            self._enforce(protect=item.name)
            self._start_reaper()
            self._wake.set()

    def pop(self, name: str) -> LoadedModel | None:
        with self._lock:
            item = self._items.pop(name, None)
        if item is not None:
            with item.lock:
                item.unload()
        return item

    def clear(self) -> list[str]:
        with self._lock:
            names = list(self._items)
        for name in names:
            self.pop(name)
        return names

    def names(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _enforce(self, protect: str | None = None) -> None:
        max_models, _ = self._limits()
        self._expire()
        while len(self._items) > max_models:
            name = next((n for n in self._items if n != protect), None)
            if name is None:
                break
            logger.info("unloading %s (memory.max_models=%d)", name, max_models)
            self._items.pop(name).unload()

    def _expire(self) -> None:
        _, keep_alive = self._limits()
        if keep_alive < 0:
            return
        now = time.monotonic()
        for name, item in list(self._items.items()):
            if now - item.last_used >= keep_alive and item.lock.acquire(blocking=False):
                try:
                    logger.info("unloading %s: idle for %.0f s (memory.keep_alive)", name, now - item.last_used)
                    self._items.pop(name).unload()
                finally:
                    item.lock.release()

    def _start_reaper(self) -> None:
        """A daemon thread that unloads idle models even if nobody calls us again."""
        if self._reaper is not None and self._reaper.is_alive():
            return

        def reap() -> None:
            while True:
                _, keep_alive = self._limits()
                self._wake.wait(min(max(keep_alive / 4, 0.05), 30.0) if keep_alive >= 0 else 30.0)
                self._wake.clear()
                with self._lock:
                    self._expire()
                    if not self._items:
                        self._reaper = None
                        return

        self._reaper = threading.Thread(target=reap, name="provender-mlx-keep-alive", daemon=True)
        self._reaper.start()
