"""`CacheCore`: what the cache's helper modules need from the cache they work on.

`CacheManager` (in `_manager.py`) is the front; the helpers beside it (`_store`, `_sync`,
`_repair`, `_eviction`, `_leases`, `_verify`, `_fetch`, `_gguf`, `_ollama`, the remote
tier's modules) take the cache as an argument typed with this Protocol, never with
`CacheManager`: so no helper imports the manager, and the package has no import cycle
(the import-linter contract "no import cycle between the core's modules" checks it).

The public members below are the pieces a helper may use: the layout's folders, the
index, the cache-wide lock, the walls (folders opened without following links), the
lease and pending-download paths, and the manager's public verbs. The underscored
members are the manager's own steps (reconcile, evict, remove...) that the helpers of
this package call; they are not public API. A new helper uses the public pieces.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from provender._cache._entry import CacheEntry
    from provender._cache._index import Index, IndexRow
    from provender._cache._layout import Walls
    from provender._cache._locks import GuardedLock
    from provender._cache._remote import RemoteTier

__all__ = ["CacheCore"]


class CacheCore(Protocol):
    """The cache as its helper modules see it (`CacheManager` implements it)."""

    # -- the layout and the limit (plain attributes of the manager) ---------------------------
    cache_dir: Path
    hub_dir: Path
    objects_dir: Path
    max_size: int

    # -- the shared pieces ---------------------------------------------------------------------
    @property
    def index(self) -> Index:
        """The SQLite index (rows, stats, meta)."""
        ...

    @property
    def lock(self) -> GuardedLock:
        """The cache-wide lock that serialises compound changes across processes (checks the walls first)."""
        ...

    @property
    def walls(self) -> Walls:
        """The cache's own folders, opened without following links (`check`, `here`, `listdir`, `touch`...)."""
        ...

    def lease_path(self, key: str) -> Path:
        """The lease file of entry `key` (a read-write lock: readers hold an entry in use)."""
        ...

    def pending_path(self, key: str) -> Path:
        """The marker held while a Hub download of `key` runs."""
        ...

    # -- the manager's own steps the helpers of this package call (underscored: not public API;
    # each says whether it must run under `lock`) -------------------------------------------
    _tmp_dir: Path
    _trash_dir: Path
    _pins_dir: Path
    _pending_dir: Path

    def _entry(self, row: IndexRow, pinned: bool | None = None) -> CacheEntry:
        """The public `CacheEntry` of an index row (`pinned` None: look at the pin marker)."""
        ...

    def _pinned_keys(self) -> set[str]:
        """Keys of the pinned entries."""
        ...

    def _reconcile(self) -> None:
        """Sync the index with the disk (under `lock`)."""
        ...

    def _evict(self, limit: int, protect: set[str]) -> list[CacheEntry]:
        """Evict least-recently-used entries down to `limit`, never those in `protect` (under `lock`)."""
        ...

    def _evict_if_over(self, key: str) -> None:
        """After a lease on `key` ends, the eviction that passed over it (takes `lock` itself)."""
        ...

    def _notify_evicted(self, entries: list[CacheEntry]) -> None:
        """Tell the eviction listeners about `entries` (after `lock` is released)."""
        ...

    def _try_remove(self, entry: CacheEntry, *, dry_run: bool = False, evicted: bool = False) -> bool:
        """Remove `entry` unless a live process holds it (under `lock`); False when held."""
        ...

    def _read_manifest(self, key: str) -> dict[str, Any] | None:
        """The manifest of stored entry `key`, repaired from the files if damaged (under `lock`)."""
        ...

    def _row_from_manifest(self, manifest: dict[str, Any], last_used: float | None = None) -> IndexRow:
        """The index row a manifest describes."""
        ...

    def _write_row(self, row: IndexRow) -> None:
        """Insert or replace `row` in the index (under `lock`)."""
        ...

    # -- the manager's public verbs a helper calls --------------------------------------------
    @property
    def remote(self) -> RemoteTier | None:
        """The shared remote tier (``remote.url``), or None."""
        ...

    def find(self, name_or_key: str) -> CacheEntry | None: ...

    def hub_key(self, repo_id: str, repo_type: str = "model") -> str: ...

    def get(self, name_or_key: str) -> CacheEntry: ...

    def entries(self, sort: str = "used") -> list[CacheEntry]: ...

    def remove(self, name_or_key: str, *, dry_run: bool = False) -> CacheEntry: ...

    def import_model(self, path: str | os.PathLike[str], name: str, **options: Any) -> CacheEntry:
        """`CacheManager.import_model` (options: link_mode, replace, pin, and metadata)."""
        ...
