"""The models a server holds: one provider per model name, one request at a time per model
(on a thread of the model's own), unloaded when idle past their keep-alive or when more than
``memory.max_models`` are held.

The weights themselves live where the provider keeps them (the core's model pool for
MLX, transformers and llama.cpp); unloading a model here calls ``provider.unload()`` and
``provider.close()``. Each held model also holds a lease on its disk-cache entry, so no
process evicts its files while the server serves it; a killed server's leases die with it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from provender import (
    InvalidOptionError,
    ModelNotFoundError,
    ProvenderError,
    Provider,
    UnknownProviderError,
    UnsupportedError,
    parse_model_name,
)
from provender_serve._batching import Batcher, spawn
from provender_serve.errors import APIError

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Slot:
    """One model the server holds."""

    name: str
    provider: Provider
    keep_alive: float
    lease: Any = None
    kind: str = "model"
    since: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    admitted: int = 0  # requests running or waiting for `lock`
    served: int = 0
    worker: ThreadPoolExecutor = field(init=False, repr=False)
    batcher: Batcher | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        # One long-lived thread per model runs all its work: runtimes keep per-thread state
        # (MLX streams, OpenMP thread teams in torch: a new thread per request cost ~20% here).
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"provender-model-{self.provider.name}")
        if getattr(self.provider, "supports_batching", False):  # its generations run together, on `worker`
            self.batcher = Batcher(self.provider, self.submit, self.lock)

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run `fn` on this model's thread (after the work queued before it)."""
        try:
            return self.worker.submit(fn)
        except RuntimeError:  # unloaded meanwhile: its thread is gone, run on a thread of its own
            return spawn(fn, name="provender-model-late")

    def until(self) -> float | None:
        """Wall-clock time it will be unloaded if idle (None: forever, or while busy)."""
        if self.keep_alive < 0 or self.admitted:
            return None
        return time.time() + max(0.0, self.keep_alive - (time.monotonic() - self.last_used))

    def row(self) -> dict[str, Any]:
        until = self.until()
        return {
            "model": self.name,
            "provider": self.provider.name,
            "kind": self.kind,
            "since": _iso(self.since) or "",
            "until": _iso(until) if until is not None else None,
            "keep_alive": self.keep_alive,
            "busy": self.admitted > 0,
            "queued": max(0, self.admitted - 1),
            "requests": self.served,
            "largest_batch": self.batcher.largest if self.batcher is not None else None,
            "dropped": self.batcher.dropped if self.batcher is not None else None,  # clients gone mid-batch
            "prompt_cache_bytes": self.prompt_cache_bytes(),
        }

    def prompt_cache_bytes(self) -> int | None:
        """Bytes of the model's prompt caches (None: its provider keeps none)."""
        prompts = getattr(self.provider, "prompt_cache", None)
        cache = prompts() if callable(prompts) else None
        return None if cache is None else int(cache.nbytes)


def _iso(ts: float) -> str | None:
    """`ts` in ISO 8601 (UTC); None past what a datetime can hold (in effect, forever): a
    keep-alive is checked where it is parsed, and a listing must never fail on one anyway."""
    try:
        return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")
    except (OverflowError, ValueError, OSError):
        return None


def check_name(name: str, allowed: list[str], *, local_paths: bool = True) -> None:
    """Refuse names that climb out of a directory, with an allow-list names not on it, and
    without `local_paths` names that are paths on the server's disk (``server.local_paths``)."""
    if any(ord(c) < 32 for c in name):
        raise APIError(400, "model: control characters are not allowed in a model name", "invalid_model", "model")
    _, bare = parse_model_name(name) if name.strip() else (None, name)
    if ".." in bare.replace("\\", "/").split("/"):
        raise APIError(400, f"model {name!r}: '..' is not allowed in a model name", "invalid_model", "model")
    if not local_paths and name not in allowed and bare not in allowed and _is_local_path(bare):
        # one answer whether the path exists or not: a refusal must not tell what is on the disk
        raise APIError(
            403,
            f"model {name!r}: this server does not load models by path; name a cached model (server.local_paths)",
            "path_not_allowed",
            "model",
        )
    if allowed and name not in allowed and bare not in allowed:
        raise APIError(
            403, f"model {name!r} is not one this server may load (server.models)", "model_not_allowed", "model"
        )


def _is_local_path(bare: str) -> bool:
    """A name only a path can mean (``/m``, ``./m``, ``~/m``). A relative name (``org/m``) is
    not looked at on the disk: without local paths the process reads no name as a path but
    those listed (`provender._resolve.confine_local_paths`), so it is a cache entry or Hub repo id
    whatever the server's working directory holds."""
    from provender._resolve import looks_like_path

    return looks_like_path(bare)


def api_error(exc: BaseException) -> APIError:
    """The HTTP answer for an exception raised while serving a request."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, (ModelNotFoundError, UnknownProviderError)):
        return APIError(404, str(exc), "model_not_found", "model")
    if isinstance(exc, (InvalidOptionError, UnsupportedError)):
        return APIError(400, str(exc), "unsupported" if isinstance(exc, UnsupportedError) else "invalid_value")
    if isinstance(exc, ProvenderError):
        return APIError(500, str(exc), "provider_error")
    logger.error("request failed", exc_info=exc)
    return APIError(500, f"the provider failed: {type(exc).__name__}: {exc}", "provider_error")


class ModelRegistry:
    """name -> `Slot`, bounded by `max_models` and `keep_alive` (seconds, <0: forever).

    `use(name)` admits a request (503 when `queue_size` requests already wait for that
    model), loads the provider once, and holds the model's lock while the request runs.
    """

    def __init__(
        self,
        *,
        allowed: list[str] | None = None,
        local_paths: bool = True,
        max_models: int = 2,
        keep_alive: float = 300.0,
        queue_size: int = 16,
    ) -> None:
        self.allowed = list(allowed or [])
        self.local_paths = local_paths
        if not local_paths:  # the names listed in server.models stay readable as paths
            from provender._resolve import confine_local_paths, parse_model_name

            confine_local_paths({n for name in self.allowed for n in (name, parse_model_name(name)[1])})
        self.max_models = max_models
        self.keep_alive = keep_alive
        self.queue_size = queue_size
        self._slots: dict[str, Slot] = {}
        self._guard = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="provender-serve-keep-alive", daemon=True)
        self._reaper.start()

    # -- requests ----------------------------------------------------------------------

    def admit(self, name: str) -> Slot:
        """Admit a request for `name` (403, 404, 503 as `APIError`), loading its provider if new.

        Every admitted slot must then be `hold`-ed exactly once, which ends the admission.
        """
        check_name(name, self.allowed, local_paths=self.local_paths)
        return self._admit(name)

    @contextlib.contextmanager
    def use(self, name: str, *, keep_alive: float | None = None, kind: str = "generation") -> Iterator[Slot]:
        """`admit` then `hold`, on the calling thread."""
        with self.hold(self.admit(name), keep_alive=keep_alive, kind=kind) as slot:
            yield slot

    @contextlib.contextmanager
    def hold(
        self, slot: Slot, *, keep_alive: float | None = None, kind: str = "generation", exclusive: bool = True
    ) -> Iterator[Slot]:
        """Wait for an admitted model and hold it while the block runs (one request at a time);
        not `exclusive`: a request of a batch, whose batch holds the model instead."""
        try:
            with slot.lock if exclusive else contextlib.nullcontext():
                if slot.kind == "model":
                    slot.kind = kind
                yield slot
                slot.served += 1
        finally:
            with self._guard:
                slot.admitted -= 1
                slot.last_used = time.monotonic()
                if keep_alive is not None:
                    slot.keep_alive = keep_alive
                drop = slot.admitted == 0 and slot.keep_alive == 0
            if keep_alive is not None:  # the weights in the core pool follow the request's keep-alive too
                _touch_pool(slot.provider, keep_alive)
            if drop:
                self.unload(slot.name)

    def _admit(self, name: str) -> Slot:
        with self._guard:
            # all models together: at most (1 running + queue_size waiting) per loadable model
            if sum(s.admitted for s in self._slots.values()) >= (self.queue_size + 1) * self.max_models:
                raise APIError(503, "the server has too many requests in progress; retry later", "queue_full")
            slot = self._slots.get(name)
            if slot is not None:
                if slot.admitted > self.queue_size:  # one running + queue_size waiting
                    raise APIError(503, f"too many requests are waiting for {name!r}; retry later", "queue_full")
                slot.admitted += 1
                return slot
            loading = self._loading.setdefault(name, threading.Lock())
        with loading:  # one thread creates a model's provider; the others wait for it
            with self._guard:
                slot = self._slots.get(name)
                if slot is not None:
                    slot.admitted += 1
                    return slot
            try:
                slot = self._load(name)
            finally:
                with self._guard:
                    self._loading.pop(name, None)
        logger.info("loaded %s (provider %s)", name, slot.provider.name)
        self._enforce_max()  # only now, the load having worked: a failed one pushes nothing out
        return slot

    def _load(self, name: str) -> Slot:
        """A new slot for `name`, its weights loaded (on the model's own thread) before it is
        registered: a load that fails leaves no slot and no lease, and has evicted nothing."""
        provider, lease = self._create(name)
        slot = Slot(name=name, provider=provider, keep_alive=self.keep_alive, lease=lease, admitted=1)
        # providers of the core's pool load now; others on use. With a keep-alive of 0 the pool
        # would unload a preloaded model before its request took it: it loads on use then.
        preload = getattr(provider, "load_model", None) if self.keep_alive != 0 else None
        try:
            if callable(preload):
                slot.worker.submit(preload).result()
        except BaseException:
            slot.worker.shutdown(wait=False)
            with contextlib.suppress(Exception):
                provider.close()
            if slot.lease is not None:
                slot.lease.release()
                slot.lease = None
            raise
        with self._guard:
            self._slots[name] = slot
        return slot

    def _create(self, name: str) -> tuple[Provider, Any]:
        from provender import get_provider

        provider = get_provider(name)
        lease = None
        _, bare = parse_model_name(name)
        with contextlib.suppress(Exception):  # a name that is not a cache entry (a path, an echo mode)
            from provender import CacheManager

            lease = CacheManager().acquire(bare)
        return provider, lease

    # -- unloading ---------------------------------------------------------------------

    def unload(self, name: str, *, only_idle: bool = False) -> bool:
        """Unload `name` now (after its running request); returns whether it was held.

        With `only_idle`, a model that a request is using or waiting for stays.
        """
        with self._guard:
            slot = self._slots.get(name)
            if slot is None or (only_idle and slot.admitted):
                return False
            del self._slots[name]
        with slot.lock:
            _release(slot)
        slot.worker.shutdown(wait=False)
        logger.info("unloaded %s", name)
        return True

    def unload_all(self) -> list[str]:
        with self._guard:
            names = list(self._slots)
        return [name for name in names if self.unload(name)]

    def snapshot(self) -> list[dict[str, Any]]:
        """What `provender ps` shows: one row per held model, the longest-held first."""
        with self._guard:
            return [slot.row() for slot in sorted(self._slots.values(), key=lambda s: s.since)]

    def names(self) -> list[str]:
        with self._guard:
            return list(self._slots)

    def close(self) -> None:
        """Stop the keep-alive thread and unload everything (releasing every lease)."""
        self._stop.set()
        self.unload_all()

    def _idle_victims(self) -> list[str]:
        now = time.monotonic()
        with self._guard:
            idle = [s for s in self._slots.values() if s.admitted == 0]
            expired = [s.name for s in idle if s.keep_alive >= 0 and now - s.last_used >= s.keep_alive]
            excess = len(self._slots) - len(expired) - self.max_models
            lru = sorted((s for s in idle if s.name not in expired), key=lambda s: s.last_used)
            return expired + [s.name for s in lru[: max(0, excess)]]

    def _enforce_max(self) -> None:
        for name in self._idle_victims():
            self.unload(name, only_idle=True)

    def _reap(self) -> None:
        while not self._stop.wait(0.25):
            try:
                self._enforce_max()
            except Exception:  # never let the keep-alive thread die
                logger.exception("unloading idle models failed")


def pool_key(provider: Provider) -> str:
    """The key a provider keeps its model under in the core pool (a `PooledProvider`'s own `key`,
    which carries its load arguments, else the ``name:model`` convention)."""
    key = getattr(provider, "key", None)
    return key if isinstance(key, str) else f"{provider.name}:{provider.model}"


def _touch_pool(provider: Provider, keep_alive: float) -> None:
    try:
        from provender import model_pool

        model_pool().touch(pool_key(provider), keep_alive)
    except Exception as exc:  # a core without the pool, or a provider that does not use it
        logger.debug("keep-alive of %s in the pool: %s", provider, exc)


def _release(slot: Slot) -> None:
    provider = slot.provider
    try:
        provider.unload()
    except UnsupportedError:
        pass  # nothing loaded in the pool (the echo example): close() releases the rest
    except Exception:
        logger.exception("unloading %s failed", slot.name)
    try:
        provider.close()
    except Exception:
        logger.exception("closing %s failed", slot.name)
    if slot.lease is not None:
        slot.lease.release()
        slot.lease = None
