"""What the cache needs from the layers above it, handed down instead of imported up.

The cache sits below the settings and the plugins (docs/architecture.md), so it never
imports them. ``CacheManager()`` with no arguments still takes ``cache.dir`` and
``cache.max_size`` from the settings, and an eviction still reaches the plugins'
``provender_cache_evicted`` hook, because the package front (``provender/__init__.py``)
registers two callables here when provender is imported:

- the cache defaults: ``() -> (cache_dir, max_size)``, read when a ``CacheManager`` is
  built without them (`cache_defaults`);
- eviction listeners: ``(entry) -> None``, told about each entry the cache drops, after
  its files are gone (`notify_evicted`); a ``CacheManager(on_evicted=...)`` adds its own.

This module imports nothing from provender: it is the bottom layer.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)

CacheDefaults = Callable[[], "tuple[str | os.PathLike[str], int | str]"]
EvictionListener = Callable[[Any], None]  # called with a provender.CacheEntry

_defaults: CacheDefaults | None = None
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
