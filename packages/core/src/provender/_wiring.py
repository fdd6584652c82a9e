"""What the cache needs from the layers above it, handed down instead of imported up.

The cache sits below the settings and the plugins (docs/architecture.md), so it never
imports them. ``CacheManager()`` with no arguments still takes ``cache.dir`` and
``cache.max_size`` from the settings, and an eviction still reaches the plugins'
``provender_cache_evicted`` hook, because the package front (``provender/__init__.py``)
registers two callables here when provender is imported:

- the cache defaults: ``() -> (cache_dir, max_size)``, read when a ``CacheManager`` is
  built without them (`cache_defaults`);
- the remote tier's settings: ``() -> dict | None``, read when a ``CacheManager`` is built
  without ``remote=`` and without both of its defaults (`remote_defaults`);
- eviction listeners: ``(entry) -> None``, told about each entry the cache drops, after
  its files are gone (`notify_evicted`); a ``CacheManager(on_evicted=...)`` adds its own.

This module imports nothing from provender but the lazy loggers: it is the bottom layer.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from provender._log import get_logger

logger = get_logger(__name__)

CacheDefaults = Callable[[], "tuple[str | os.PathLike[str], int | str]"]
EvictionListener = Callable[[Any], None]  # called with a provender.CacheEntry

RemoteDefaults = Callable[[], "dict[str, Any] | None"]

_defaults: CacheDefaults | None = None
_prompt_defaults: Callable[[], int | str | None] | None = None
_remote_defaults: RemoteDefaults | None = None
_listeners: list[EvictionListener] = []


def set_cache_defaults(provider: CacheDefaults) -> None:
    """Where ``CacheManager()`` takes its directory and size limit from (the settings)."""
    global _defaults
    _defaults = provider


def cache_defaults() -> tuple[str | os.PathLike[str], int | str]:
    """``(cache_dir, max_size)`` from the registered provider."""
    if _defaults is None:
        raise RuntimeError("no cache defaults registered: pass cache_dir and max_size to CacheManager")
    return _defaults()


def set_prompt_defaults(provider: Callable[[], int | str | None]) -> None:
    """Where ``CacheManager()`` takes the saved prompt caches' budget from (``cache.prompt_cache_max_size``)."""
    global _prompt_defaults
    _prompt_defaults = provider


def prompt_defaults() -> int | str | None:
    """The saved prompt caches' budget from the registered provider; None: none registered (a tenth of the limit)."""
    return None if _prompt_defaults is None else _prompt_defaults()


def set_remote_defaults(provider: RemoteDefaults) -> None:
    """Where ``CacheManager()`` takes its remote tier from (the ``[remote]`` settings)."""
    global _remote_defaults
    _remote_defaults = provider


def remote_defaults() -> dict[str, Any] | None:
    """The remote tier's settings (``url``, ``read_only``, ``endpoint_url``, ``timeout``), or None:
    no tier configured, or no provider registered (provender imported without its front)."""
    return None if _remote_defaults is None else _remote_defaults()


def add_eviction_listener(listener: EvictionListener) -> None:
    """Call `listener(entry)` for every entry any cache in this process drops."""
    if listener not in _listeners:
        _listeners.append(listener)


def notify_evicted(entries: list[Any], extra: EvictionListener | None = None) -> None:
    """Tell every listener (and `extra`) about `entries`; a listener that raises is logged, never fatal."""
    listeners = [*_listeners, *([extra] if extra is not None else [])]
    for entry in entries:
        for listener in listeners:
            try:
                listener(entry)
            except Exception as exc:
                logger.warning("a listener failed on the eviction of %s: %s", getattr(entry, "name", entry), exc)
