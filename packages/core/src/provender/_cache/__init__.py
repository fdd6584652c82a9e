"""The shared disk cache of models (see `CacheManager`)."""

from __future__ import annotations

from provender._cache._entry import CacheEntry, CacheStats, VerifyIssue
from provender._cache._eviction import EvictionPlan, plan_eviction
from provender._cache._layout import NotACacheError, SourceInCacheError, UnsafeCacheError
from provender._cache._manager import CacheManager, Lease
from provender._cache._names import check_key, check_name, generate_cache_key

__all__ = [
    "CacheEntry",
    "CacheManager",
    "CacheStats",
    "EvictionPlan",
    "Lease",
    "NotACacheError",
    "SourceInCacheError",
    "UnsafeCacheError",
    "VerifyIssue",
    "check_key",
    "check_name",
    "generate_cache_key",
    "plan_eviction",
]
