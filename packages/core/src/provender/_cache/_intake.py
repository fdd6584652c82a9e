"""`Intake`: the one way entries come into the cache (imports, `cache_model`, Hub downloads, the tier).

Every add ends the same way, under the cache lock: the store commits the files and their index
row, the catalog syncs the index with the disk, the pin marker is written if asked, and the
evictor makes room by evicting least-recently-used entries (never the one just added). The
evicted entries are returned, for the listeners to be told once the lock is released.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provender._cache._fsops import LinkMode, finish_move, fs_errors, place_tree, tree_size
from provender._cache._layout import within_real
from provender._cache._names import check_name
from provender._cache._repair import row_from_manifest, scan_files, write_manifest
from provender.errors import EntryTooLargeError, SourceInCacheError, SourceNotFoundError

if TYPE_CHECKING:
    from provender._cache._entry import CacheEntry
    from provender._cache._eviction import Evictor
    from provender._cache._index import IndexRow
    from provender._cache._locks import LeaseLock
    from provender._cache._store import Store
    from provender._cache._sync import Catalog

logger = logging.getLogger(__name__)


class Intake:
    """Adds entries to a `Store`, keeping its `Catalog` in step and its `Evictor` within the limit."""

    def __init__(self, store: Store, catalog: Catalog, evictor: Evictor) -> None:
        self.store = store
        self.catalog = catalog
        self.evictor = evictor

    def add_local(
        self,
        src: Path,
        key: str,
        *,
        name: str | None,
        link_mode: LinkMode,
        metadata: dict[str, Any],
        replace: bool,
        pin: bool = False,
    ) -> CacheEntry:
        """Store a local file or folder under `key` (zero-copy where the filesystem allows)."""
        store = self.store
        if not src.exists():
            raise SourceNotFoundError(src)
        src = src.absolute()
        if store.index.degraded is not None:  # a full disk: refuse before any file is touched
            raise store.index.degraded
        if within_real(src, store.cache_dir):
            raise SourceInCacheError(src, store.cache_dir, "it contains the cache folder")
        if link_mode == "move" and within_real(store.cache_dir, src):
            raise SourceInCacheError(src, store.cache_dir, "it is inside the cache folder (a move would take it away)")
        if name is not None:
            check_name(name)
        display = name or src.name
        size = tree_size(src)
        if size > store.max_size:
            raise EntryTooLargeError(display, size, store.max_size)
        now = time.time()
        if (store.objects_dir / key).exists():  # refuse early, before any file is touched
            store.refuse_replacing(key, display, replace)
        with store.staging() as stage:
            content = stage / src.name if src.is_file() else stage
            with fs_errors(store.cache_dir, size):
                counts = place_tree(src, content, link_mode)
                files = scan_files(stage)  # not a manifest the source brought along (an entry imported again)
                manifest = {
                    "key": key,
                    "name": display,
                    "kind": "local",
                    "created": now,
                    "files": files,
                    "filename": src.name if src.is_file() else None,
                    "metadata": metadata,
                }
                write_manifest(stage, manifest)  # never through a hard link into the source's files
            logger.info("staged %s (%s)", display, ", ".join(f"{v} {k}" for k, v in counts.items()))
            # A move has taken nothing of the source yet (staged as links or copies): a failure leaves it as it was.
            row, evicted = self.commit_local(stage, manifest, display, replace, now, pin)
        if link_mode == "move":
            finish_move(src)  # committed: only now does the source go
        self.evictor.notify(evicted)
        return store.entry(row)

    def commit_local(
        self, stage: Path, manifest: dict[str, Any], display: str, replace: bool, now: float, pin: bool
    ) -> tuple[IndexRow, list[CacheEntry]]:
        """Rename a staged entry (described by `manifest`) into objects/ and index it, under the lock;
        then evict to fit. Returns its row and what was evicted (not yet told to the listeners)."""
        store = self.store
        with store.lock:
            row = row_from_manifest(manifest, last_used=now)
            store.commit(stage, row, display, replace)
            self.catalog.reconcile()
            if pin:
                store.mark_pinned(row["key"])
            return row, self.evictor.evict(protect={row["key"]})

    def commit_hub(
        self, key: str, folder: str, repo_type: str, repo_id: str, metadata: dict[str, Any], pending: LeaseLock
    ) -> list[CacheEntry]:
        """Index a Hub repo that just landed in hub/ (under the lock), end its download marker, evict to fit."""
        store = self.store
        row = self.catalog.hub_row(folder, repo_type, repo_id, last_used=time.time(), metadata=metadata or None)
        old = store.index.get(key)
        if old is not None:
            row["created"] = old["created"]
        with store.lock:
            store.write_row(row)
            pending.release()
            store.pending_path(key).unlink(missing_ok=True)
            self.catalog.reconcile()
            return self.evictor.evict(protect={key})
