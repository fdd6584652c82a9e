"""The shared disk cache of models (see `CacheManager`)."""

from __future__ import annotations

from provender._cache._entry import CacheEntry, CacheStats, PullResult, PushResult, VerifyIssue
from provender._cache._eviction import EvictionPlan, plan_eviction
from provender._cache._manager import CacheManager, Lease
from provender._cache._names import check_key, check_name, generate_cache_key
from provender._cache._remote import RemoteEntry, RemoteTier
from provender.errors import NotACacheError, SourceInCacheError, UnsafeCacheError

__all__ = [
    "CacheEntry",
    "CacheManager",
    "CacheStats",
    "EvictionPlan",
    "Lease",
    "PullResult",
    "PushResult",
    "RemoteEntry",
    "RemoteTier",
    "NotACacheError",
    "SourceInCacheError",
    "UnsafeCacheError",
    "VerifyIssue",
    "check_key",
    "check_name",
    "generate_cache_key",
    "plan_eviction",
]
