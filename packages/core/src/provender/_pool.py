"""The process-wide pool of loaded models, shared by every provider.

`model_pool()` returns the one `ModelPool` of the process. A provider keeps what it
has loaded there, under a key of its choosing (by convention ``"provider:model"``)::

    from provender import LoadedModel, model_pool

    def _loaded(self) -> LoadedModel:
        def load() -> LoadedModel:
            lease = cache.acquire(self.model)          # the files stay on disk while loaded
            try:
                model = expensive_load(lease.entry.model_path)
            except BaseException:
                lease.release()
                raise
            return LoadedModel(self.model, model, path=str(lease.entry.model_path),
                               lease=lease, provider=self.name)

        return model_pool().load(f"{self.name}:{self.model}", load)

    # using it: `use` loads (once) and holds the model's lock for the block, so it is
    # neither unloaded under the caller nor used by two generations at once
    with model_pool().use(f"{self.name}:{self.model}", load) as item:
        ...

The pool is an LRU bounded by count (``memory.max_models``) and idle time
(``memory.keep_alive``, or a per-request keep-alive given to `ModelPool.touch`, as
Ollama's ``keep_alive``). Two threads loading one key call the loader once. Leaving
the pool (LRU, idle, `unload`, `clear`) releases the model's cache lease, so no
process evicts files while they are in memory. A model in use (its `LoadedModel.lock`
held) is never unloaded under the user: its unload waits until the lock is free.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from provender._loaded import LoadedModel

logger = logging.getLogger(__name__)

FOREVER = -1.0
_MIN_WAIT = 0.02
_MAX_WAIT = 30.0


class ModelPool:
    """Loaded models by key, least recently used first; see the module docstring.

    ``max_models`` and ``keep_alive`` (seconds; negative = forever) default to the
    settings ``memory.max_models`` and ``memory.keep_alive``, read on first use.
    """

    def __init__(self, max_models: int | None = None, keep_alive: float | None = None) -> None:
        self._items: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.RLock()
        self._load_locks: dict[str, threading.Lock] = {}
        self._max_models = max_models
        self._keep_alive = keep_alive
        self._limits_given = (max_models, keep_alive)
        self._reaper: threading.Thread | None = None
        self._wake = threading.Event()  # set when limits or contents change: the reaper re-plans

    # -- limits ----------------------------------------------------------------------

    @property
    def max_models(self) -> int:
        return self._limits()[0]

    @property
    def keep_alive(self) -> float:
        return self._limits()[1]

    def _limits(self) -> tuple[int, float]:
        if self._max_models is None or self._keep_alive is None:
            from provender._settings import load_settings

            settings = load_settings()
            if self._max_models is None:
                self._max_models = settings.memory.max_models
            if self._keep_alive is None:
                self._keep_alive = settings.memory.keep_alive
        return self._max_models, self._keep_alive

    def configure(self, max_models: int | None = None, keep_alive: float | None = None) -> None:
        """Set the limits (None: from the settings, read again on next use) and apply them now."""
        if max_models is not None and max_models < 1:
            raise ValueError(f"max_models must be >= 1, got {max_models}")
        keep_alive = _seconds(keep_alive)
        with self._lock:
            self._max_models, self._keep_alive = max_models, keep_alive
            victims = self._plan(room=0)
        self._unload_all(victims)
        self._wake.set()

    # -- loading and lookup ------------------------------------------------------------

    def load(
        self,
        key: str,
        loader: Callable[[], LoadedModel],
        *,
        keep_alive: float | None = None,
        check: Callable[[], None] | None = None,
    ) -> LoadedModel:
        """The model under `key`, or ``loader()``'s, put in the pool. Concurrent callers of one
        key call `loader` once; the others wait and get its result. Room is made (the least
        recently used idle models unloaded) before loading, so memory never holds more than
        ``max_models``. An exception from `loader` propagates and nothing is added.

        `check` (optional) runs first, before room is made: a cheap test that the load can
        work (the files are whole). An exception from it propagates with nothing unloaded."""
        return self._load(key, loader, keep_alive, reserve=False, check=check)

    def _load(
        self,
        key: str,
        loader: Callable[[], LoadedModel],
        keep_alive: float | None,
        *,
        reserve: bool,
        check: Callable[[], None] | None = None,
    ) -> LoadedModel:
        keep_alive = _seconds(keep_alive)
        item = self._get(key, reserve=reserve, keep_alive=keep_alive)
        if item is None:
            with self._lock:
                lock = self._load_locks.setdefault(key, threading.Lock())
            with lock:
                item = self._get(key, reserve=reserve, keep_alive=keep_alive)
                if item is None:
                    if check is not None:
                        check()  # before anything is unloaded for it
                    with self._lock:
                        expired = self._expired(protect=key)
                        pushed_out = self._plan(room=1, protect=key)
                    self._unload_all(expired + pushed_out)
                    try:
                        item = loader()
                    except BaseException:
                        self._restore(pushed_out)
                        raise
                    if not isinstance(item, LoadedModel):
                        raise TypeError(f"the loader for {key!r} returned {type(item).__name__}, not a LoadedModel")
                    self._put(key, item, reserve=reserve, keep_alive=keep_alive)
        return item

    @contextmanager
    def use(
        self,
        key: str,
        loader: Callable[[], LoadedModel],
        *,
        keep_alive: float | None = None,
        check: Callable[[], None] | None = None,
    ) -> Iterator[LoadedModel]:
        """`load`, then hold the model's lock for the ``with`` block: the model cannot be
        unloaded between loading and using it (a keep-alive of 0 included)."""
        while True:
            # reserved: not unloaded before the lock
            item = self._load(key, loader, keep_alive, reserve=True, check=check)
            try:
                item.lock.acquire()
            finally:
                with self._lock:
                    item._reserved -= 1
            if item.loaded:
                break
            item.lock.release()  # unloaded anyway (cleared, or evicted from disk): load again
        try:
            yield item
        finally:
            item.lock.release()

    def put(self, key: str, item: LoadedModel) -> None:
        """Add (or replace) the model under `key`; the least recently used others go over the limit."""
        self._put(key, item, reserve=False, keep_alive=None)

    def _put(self, key: str, item: LoadedModel, *, reserve: bool, keep_alive: float | None) -> None:
        with self._lock:
            item.key = key
            item._wake = self._wake.set
            item.last_used = time.monotonic()
            if keep_alive is not None:
                item.keep_alive = float(keep_alive)
            if reserve:
                item._reserved += 1
            old = self._items.pop(key, None)
            self._items[key] = item
            victims = self._plan(room=0, protect=key)
            if old is not None and old is not item:
                victims.append(old)
            self._start_reaper()
        self._unload_all(victims)
        self._wake.set()

    def get(self, key: str) -> LoadedModel | None:
        """The model under `key` (marked used), or None."""
        return self._get(key, reserve=False, keep_alive=None)

    def _get(self, key: str, *, reserve: bool, keep_alive: float | None) -> LoadedModel | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                item.last_used = time.monotonic()
                if keep_alive is not None:
                    item.keep_alive = float(keep_alive)
                if reserve:
                    item._reserved += 1
            victims = self._expired()
        self._unload_all(victims)
        if keep_alive is not None:
            self._wake.set()
        return item

    def peek(self, key: str) -> LoadedModel | None:
        """The model under `key` without marking it used."""
        with self._lock:
            return self._items.get(key)

    def touch(self, key: str, keep_alive: float | None = None) -> bool:
        """Mark `key` used now; with `keep_alive` (seconds; -1 forever; 0 unload once idle),
        that model's keep-alive from now on. False if it is not loaded. A keep-alive past
        ten years (`provender._sizes.MAX_DURATION`) raises ValueError: -1 is forever."""
        keep_alive = _seconds(keep_alive)
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return False
            self._items.move_to_end(key)
            item.last_used = time.monotonic()
            if keep_alive is not None:
                item.keep_alive = float(keep_alive)
            self._start_reaper()
        self._wake.set()
        return True

    # -- unloading ---------------------------------------------------------------------

    def pop(self, key: str) -> LoadedModel | None:
        """Take the model under `key` out of the pool and unload it (after its current use)."""
        with self._lock:
            item = self._items.pop(key, None)
        if item is not None:
            self._unload_all([item])
        return item

    def unload(self, key: str) -> bool:
        """Unload the model under `key`; False if it was not loaded."""
        return self.pop(key) is not None

    def clear(self, provider: str | None = None) -> list[str]:
        """Unload every model (or every one of `provider`'s); returns their keys."""
        with self._lock:
            keys = [k for k, item in self._items.items() if provider is None or item.provider == provider]
            victims = [self._items.pop(k) for k in keys]
        self._unload_all(victims)
        return keys

    def unload_entry(self, entry: Any) -> list[str]:
        """Unload every model loaded from the cache entry `entry` (a `CacheEntry`, for the
        ``provender_cache_evicted`` hook); returns their keys."""
        key, root = getattr(entry, "key", None), getattr(entry, "path", None)
        with self._lock:
            keys = [k for k, item in self._items.items() if _from_entry(item, key, root)]
            victims = [self._items.pop(k) for k in keys]
        self._unload_all(victims)
        return keys

    # -- listing ----------------------------------------------------------------------

    def keys(self, provider: str | None = None) -> list[str]:
        """Keys of the loaded models, least recently used first."""
        with self._lock:
            return [k for k, item in self._items.items() if provider is None or item.provider == provider]

    def snapshot(self) -> list[dict[str, Any]]:
        """One row per loaded model, least recently used first (`provender ps`): ``key``,
        ``name``, ``provider``, ``kind``, ``path``, ``since`` and ``until`` (ISO 8601, UTC;
        ``until`` None when kept forever, or while busy), ``busy``, ``keep_alive``, and
        ``prompt_cache_bytes`` / ``prompt_cache_entries`` (None for a model without a prompt cache)."""
        now_wall, now = time.time(), time.monotonic()
        rows = []
        with self._lock:
            for key, item in self._items.items():
                keep = self._keep_alive_of(item)
                busy = item._busy()
                prompts = item.prompt_cache
                until = None if keep < 0 or busy else _iso(now_wall + max(item.last_used + keep - now, 0.0))
                rows.append(
                    {
                        "key": key,
                        "name": item.name,
                        "provider": item.provider,
                        "kind": item.kind,
                        "path": item.path,
                        "since": _iso(item.since) or "",
                        "until": until,
                        "busy": busy,
                        "keep_alive": keep,
                        "prompt_cache_bytes": None if prompts is None else prompts.nbytes,
                        "prompt_cache_entries": None if prompts is None else len(prompts),
                    }
                )
        return rows

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    # -- internals ----------------------------------------------------------------------

    def _keep_alive_of(self, item: LoadedModel) -> float:
        return item.keep_alive if item.keep_alive is not None else self._limits()[1]

    def _expired(self, protect: str | None = None) -> list[LoadedModel]:
        """Take out the idle models whose keep-alive has run out (caller holds the lock)."""
        now = time.monotonic()
        out = []
        for key, item in list(self._items.items()):
            if key == protect:
                continue
            keep = self._keep_alive_of(item)
            if keep >= 0 and now - item.last_used >= keep and not item._busy():
                logger.info("unloading %s: idle for %.1f s (keep_alive %.1f s)", key, now - item.last_used, keep)
                out.append(self._items.pop(key))
        return out

    def _plan(self, room: int, protect: str | None = None) -> list[LoadedModel]:
        """Take out expired models, then the least recently used (idle ones first) until
        ``len + room <= max_models`` (caller holds the lock)."""
        victims = self._expired(protect)
        max_models = self._limits()[0]
        while len(self._items) + room > max_models:
            candidates = [k for k in self._items if k != protect]
            if not candidates:
                break
            idle = [k for k in candidates if not self._items[k]._busy()]
            key = (idle or candidates)[0]
            logger.info("unloading %s (memory.max_models=%d)", key, max_models)
            victims.append(self._items.pop(key))
        return victims

    def _restore(self, pushed_out: list[LoadedModel]) -> None:
        """Load back the models unloaded to make room for a load that then failed, so that a
        failed load evicts nothing (a check cannot see every failure: an unknown architecture,
        a config that does not fit the weights). Only what was unloaded now and can reload
        from its own files comes back; a model in use was not unloaded and stays as it is."""
        for item in pushed_out:
            reload = item.reload
            if reload is None or item.loaded or item.key in self:
                continue
            try:
                self._load(item.key, reload, item.keep_alive, reserve=False)
            except Exception as exc:  # the failed load's own error is the one the caller sees
                logger.warning("could not reload %s after a failed load: %s", item.key, exc)
            else:
                logger.info("reloaded %s: the load it made room for failed", item.key)

    def _unload_all(self, items: list[LoadedModel]) -> None:
        """Unload now what is idle; what is in use, as soon as its user lets go (on a thread),
        never blocking the caller on another thread's generation."""
        for item in items:
            if not item.lock.held and item.lock._lock.acquire(blocking=False):
                try:
                    item.unload()
                finally:
                    item.lock._lock.release()
            else:
                threading.Thread(target=_unload_when_free, args=(item,), name="provender-unload", daemon=True).start()

    def _start_reaper(self) -> None:
        """A daemon thread that unloads idle models even if nobody calls the pool again
        (caller holds the lock). It sleeps until the next deadline and exits when empty."""
        if self._reaper is not None and self._reaper.is_alive():
            return
        self._reaper = threading.Thread(target=self._reap, name="provender-keep-alive", daemon=True)
        self._reaper.start()

    def _reap(self) -> None:
        while True:
            with self._lock:
                victims = self._expired()
                if not self._items:
                    self._reaper = None
                    wait = None
                else:
                    wait = self._next_wait()
            self._unload_all(victims)
            if wait is None:
                return
            self._wake.wait(wait)
            self._wake.clear()

    def _next_wait(self) -> float:
        now = time.monotonic()
        waits = [_MAX_WAIT]
        for item in self._items.values():
            keep = self._keep_alive_of(item)
            if keep >= 0:
                waits.append(item.last_used + keep - now)  # a busy one is re-planned when released
        return min(max(min(waits), _MIN_WAIT), _MAX_WAIT)


def _unload_when_free(item: LoadedModel) -> None:
    with item.lock._lock:
        item.unload()


def _from_entry(item: LoadedModel, key: str | None, root: Path | str | None) -> bool:
    if key and item.entry_key == key:
        return True
    if root is None or not item.path:
        return False
    return Path(item.path) == Path(root) or Path(root) in Path(item.path).parents


def _iso(ts: float) -> str | None:
    """`ts` in ISO 8601 (UTC); None past what a datetime can hold (a keep-alive given as a
    huge number by a caller that skipped `_seconds`): such a model is, in effect, kept forever."""
    try:
        return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")
    except (OverflowError, ValueError, OSError):
        return None


def _seconds(keep_alive: float | None) -> float | None:
    """A keep-alive checked as a setting is (`parse_duration`): negative is `FOREVER`; over
    ten years, NaN or infinite raise ValueError. None stays None (the pool's default)."""
    if keep_alive is None:
        return None
    from provender._sizes import parse_duration

    try:
        return parse_duration(keep_alive)
    except ValueError as exc:
        raise ValueError(f"keep_alive: {exc}") from None


_POOL: ModelPool | None = None
_POOL_GUARD = threading.Lock()


def model_pool() -> ModelPool:
    """The process's one `ModelPool`, shared by every provider (limits from the settings)."""
    global _POOL
    if _POOL is None:
        with _POOL_GUARD:
            if _POOL is None:
                _POOL = ModelPool()
    return _POOL
