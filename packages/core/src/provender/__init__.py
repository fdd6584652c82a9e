"""provender: run local ML models through pluggable providers that share one disk cache.

The public API is imported lazily, so ``import provender`` (and ``provender --help``)
stays fast: pydantic, huggingface_hub and every provider load only when used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from provender import _wiring

__version__ = "0.1.0"

__all__ = [
    "AmbiguousNameError",
    "BatchSession",
    "BlobMismatchError",
    "CacheEntry",
    "CacheError",
    "CacheManager",
    "CacheNotWritableError",
    "CacheStats",
    "ConfigError",
    "ConstraintViolationError",
    "CorruptBlobError",
    "DiskFullError",
    "EntryExistsError",
    "EntryInUseError",
    "EntryNotFoundError",
    "EntryTooLargeError",
    "GGUFFormatError",
    "HubError",
    "InvalidModelNameError",
    "InvalidNameError",
    "InvalidOptionError",
    "Lease",
    "LoadedModel",
    "ModelNotFoundError",
    "ModelPathNotFoundError",
    "ModelPool",
    "NotACacheError",
    "PluginError",
    "PooledProvider",
    "ProvenderError",
    "Provider",
    "PullResult",
    "PushResult",
    "RemoteEntry",
    "RemoteNotConfiguredError",
    "RemoteTier",
    "RemoteTierError",
    "Section",
    "ServerError",
    "ServerRequestError",
    "Settings",
    "SourceInCacheError",
    "SourceNotFoundError",
    "TierContentError",
    "UnknownProviderError",
    "UnsafeCacheError",
    "UnsupportedError",
    "VerifyIssue",
    "__version__",
    "check_embed_input",
    "check_generation_options",
    "check_messages",
    "check_options",
    "check_rerank_input",
    "cut_at_stops",
    "get_plugin_manager",
    "get_provider",
    "hookimpl",
    "iterate_in_thread",
    "load_settings",
    "model_pool",
    "parse_model_name",
    "prefer_order",
    "resolve_model_files",
]

_LAZY = {
    "CacheEntry": "provender._cache",
    "PushResult": "provender._cache",
    "PullResult": "provender._cache",
    "RemoteEntry": "provender._cache",
    "RemoteTier": "provender._cache",
    "CacheManager": "provender._cache",
    "CacheStats": "provender._cache",
    "Lease": "provender._cache",
    "VerifyIssue": "provender._cache",
    "LoadedModel": "provender._loaded",
    "ModelPool": "provender._pool",
    "model_pool": "provender._pool",
    "Provider": "provender._provider",
    "PooledProvider": "provender._pooled",
    "check_embed_input": "provender._provider",
    "check_messages": "provender._provider",
    "check_options": "provender._provider",
    "check_rerank_input": "provender._rerank",
    "BatchSession": "provender._provider",
    "check_generation_options": "provender._provider",
    "cut_at_stops": "provender._provider",
    "prefer_order": "provender._resolve",
    "resolve_model_files": "provender._resolve",
    "iterate_in_thread": "provender._provider",
    "parse_model_name": "provender._resolve",
    "Section": "provender._settings",
    "Settings": "provender._settings",
    "load_settings": "provender._settings",
    "hookimpl": "provender._plugins",
    "get_plugin_manager": "provender._plugins",
}
_ERRORS = frozenset(name for name in __all__ if name.endswith("Error"))  # all live in provender.errors


def get_provider(model: str) -> Provider:
    """The provider serving `model` (``provider:model``, or a bare name claimed from the cache)."""
    from provender._resolve import resolve_provider

    return resolve_provider(model)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name) or ("provender.errors" if name in _ERRORS or name.endswith("Error") else None)
    value = getattr(importlib.import_module(module), name, None) if module else None
    if value is None:  # every error of provender.errors is importable from here too
        raise AttributeError(f"module 'provender' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(__all__) | set(globals()))


def _settings_cache_defaults() -> tuple[Any, Any]:
    from provender._settings import cache_defaults

    return cache_defaults()


def _settings_remote_defaults() -> dict[str, Any] | None:
    from provender._settings import remote_defaults

    return remote_defaults()


def _settings_prompt_defaults() -> int:
    from provender._settings import prompt_defaults

    return prompt_defaults()


def _tell_plugins_evicted(entry: Any) -> None:
    from provender._plugins import tell_plugins_evicted

    tell_plugins_evicted(entry)


# The package front wires the layers: the cache (below the settings and the plugins) gets its
# defaults and its eviction listener handed down instead of importing them (docs/architecture.md).
_wiring.set_cache_defaults(_settings_cache_defaults)
_wiring.set_remote_defaults(_settings_remote_defaults)
_wiring.set_prompt_defaults(_settings_prompt_defaults)
_wiring.add_eviction_listener(_tell_plugins_evicted)

if TYPE_CHECKING:
    from provender._cache import (
        CacheEntry,
        CacheManager,
        CacheStats,
        Lease,
        PullResult,
        PushResult,
        RemoteEntry,
        RemoteTier,
        VerifyIssue,
    )
    from provender._loaded import LoadedModel
    from provender._plugins import get_plugin_manager, hookimpl
    from provender._pool import ModelPool, model_pool
    from provender._pooled import PooledProvider
    from provender._provider import (
        BatchSession,
        Provider,
        check_embed_input,
        check_generation_options,
        check_messages,
        check_options,
        cut_at_stops,
        iterate_in_thread,
    )
    from provender._rerank import check_rerank_input
    from provender._resolve import parse_model_name, prefer_order, resolve_model_files
    from provender._settings import Section, Settings, load_settings
    from provender.errors import (
        AmbiguousNameError,
        BlobMismatchError,
        CacheError,
        CacheNotWritableError,
        ConfigError,
        ConstraintViolationError,
        CorruptBlobError,
        DiskFullError,
        EntryExistsError,
        EntryInUseError,
        EntryNotFoundError,
        EntryTooLargeError,
        GGUFFormatError,
        HubError,
        InvalidModelNameError,
        InvalidNameError,
        InvalidOptionError,
        ModelNotFoundError,
        ModelPathNotFoundError,
        NotACacheError,
        PluginError,
        ProvenderError,
        RemoteNotConfiguredError,
        RemoteTierError,
        ServerError,
        ServerRequestError,
        SourceInCacheError,
        SourceNotFoundError,
        TierContentError,
        UnknownProviderError,
        UnsafeCacheError,
        UnsupportedError,
    )
