"""`Catalog`: the index kept a cache of the truth on disk, and the entries read from it.

Opening (and rebuilding) the index, discovering entries that appeared by other means (another
tool downloading into ``hub/``), dropping those whose files vanished (`Catalog.reconcile`, the
one scan of the disk), the index rows of Hub repos, and the lookups that answer with immutable
`CacheEntry` objects (`find`, `get`, `entries`). Each method says whether it runs under the
cache lock (the store's).
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import Timeout

from provender._cache import _hub
from provender._cache._index import is_corruption
from provender._cache._layout import check_file
from provender._cache._locks import LeaseLock
from provender._cache._names import hub_key
from provender._cache._repair import record, row_from_manifest
from provender._cache._resolve import resolve
from provender.errors import AmbiguousNameError, EntryNotFoundError

if TYPE_CHECKING:
    from provender._cache._entry import CacheEntry
    from provender._cache._index import IndexRow
    from provender._cache._store import Store

logger = logging.getLogger(__name__)

SORT_KEYS = ("used", "size", "name")


class Catalog:
    """The entries of one cache: its `Store`'s index, synced with the store's folders."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- the index file ----------------------------------------------------------------------

    def open_index(self) -> None:
        """Check that the index can be read; a corrupt one is rebuilt from the files."""
        try:
            self.store.index.con.execute("SELECT COUNT(*) FROM entries").fetchone()
        except Exception as exc:
            if not is_corruption(exc):  # busy, locked, read-only...: not a reason to touch the file
                raise
            self.rebuild_index(str(exc))

    def rebuild_index(self, reason: str) -> None:
        """Set a corrupt index aside and rebuild it from the files (counters start again at 0)."""
        store, index = self.store, self.store.index
        with store.lock:
            index.close()
            try:  # another process may have rebuilt it while we waited for the lock
                index.con.execute("SELECT COUNT(*) FROM entries").fetchone()
                return
            except Exception as exc:
                if not is_corruption(exc):
                    raise
                index.close()
            stamp = time.strftime("%Y%m%dT%H%M%S")
            for suffix in ("", "-wal", "-shm"):
                path = Path(f"{index.path}{suffix}")
                if path.exists():
                    os.replace(path, f"{index.path}.corrupt-{stamp}{suffix}")
            done = f"cache index was unusable ({reason}); set aside as index.db.corrupt-{stamp}, rebuilt from the files"
            logger.warning("%s", done)
            record(store.cache_dir, key="", name="index.db", path=index.path, problem=done, fixed=True)
            self.reconcile()

    # -- rows of the disk ----------------------------------------------------------------------

    def discover(self, key: str) -> IndexRow | None:
        """Index ``objects/<key>`` if it is on disk but not indexed (stored by another process)."""
        store = self.store
        if not (store.objects_dir / key).is_dir():
            return None
        with store.lock:  # the row is written under the lock too: no evictor can remove the entry in between
            manifest = store.read_manifest(key)
            if manifest is not None:
                store.write_row(row_from_manifest(manifest))
        return None if manifest is None else store.index.get(key)

    def hub_row(
        self,
        folder: str,
        repo_type: str,
        repo_id: str,
        last_used: float | None,
        metadata: dict[str, Any] | None = None,
    ) -> IndexRow:
        """The index row of the Hub repo in ``hub/<folder>``."""
        path = self.store.hub_dir / folder
        return {
            "key": hub_key(repo_id, repo_type),
            "kind": "hub",
            "name": _hub.display_name(repo_id, repo_type),
            "path": f"hub/{folder}",
            "size": _hub.repo_size(path),
            "created": time.time(),
            "last_used": last_used,
            "hits": 0,
            "stamp": _hub.repo_stamp(path),
            "metadata": {"repo_type": repo_type, "repo_id": repo_id, **(metadata or {})},
        }

    def download_state(self, key: str) -> str:
        """``none``, ``running`` (a live process downloads) or ``interrupted`` (its process died)."""
        marker = self.store.pending_dir / f"{key}.lock"
        self.store.walls.check("pending")
        if not check_file(marker):  # a planted link is refused
            return "none"
        lock = LeaseLock(marker, blocking=False)
        try:
            lock.acquire_write()  # flock, as filelock: a live owner keeps it
        except Timeout:
            return "running"
        lock.release()
        return "interrupted"

    def hub_changed(self) -> bool:
        """True if hub/ gained or lost a repo folder since the last `reconcile` (one stat)."""
        return str(self.store.hub_dir.stat().st_mtime_ns) != self.store.index.get_meta("hub_mtime")

    def reconcile(self) -> None:
        """Make the index match the disk: discover new entries, drop vanished ones. Call under the lock."""
        store, index, walls = self.store, self.store.index, self.store.walls
        walls.check("objects", "hub", "pins", "trash")  # not swapped, no link where a folder belongs
        index.set_meta("hub_mtime", str(store.hub_dir.stat().st_mtime_ns))  # before the scan: no gap
        stamps = index.stamps()  # not index.all(): a listing after this parses each row once, not twice
        seen: set[str] = set()
        changes: list[IndexRow] = []
        with walls.open("objects") as objects_fd, os.scandir(objects_fd) as it:
            for item in it:
                key = item.name
                if item.is_symlink() or not item.is_dir(follow_symlinks=False):
                    # planted, not made by us: never read or follow it, only take it out of the way
                    logger.warning("removing %s: not an entry provender made (a link or a file)", item.name)
                    with suppress(FileNotFoundError):
                        os.unlink(key, dir_fd=objects_fd)
                    continue
                seen.add(key)
                if key in stamps:
                    continue
                manifest = store.read_manifest(key)  # a damaged manifest is rebuilt, never a reason to delete
                if manifest is not None:
                    changes.append(row_from_manifest(manifest))
        with walls.open("hub") as hub_fd, os.scandir(hub_fd) as it:
            for item in it:
                parsed = _hub.parse_folder_name(item.name)
                if parsed is None or not item.is_dir(follow_symlinks=False):
                    continue
                repo_type, repo_id = parsed
                key = hub_key(repo_id, repo_type)
                path = store.hub_dir / item.name
                old = stamps.get(key)
                if old is None and not _hub.has_snapshot(path):  # only *.incomplete blobs, or links: not an entry
                    continue
                seen.add(key)
                if old is None:
                    if self.download_state(key) != "none":
                        continue  # a partial download is not an entry (a later pull resumes it)
                    changes.append(self.hub_row(item.name, repo_type, repo_id, last_used=None))
                elif old != _hub.repo_stamp(path) and (row := index.get(key)) is not None:
                    changes.append({**row, "size": _hub.repo_size(path), "stamp": _hub.repo_stamp(path)})
        for key in store.pinned_keys() - seen:  # a pin whose entry is gone must not pin a later one
            store.unmark_pinned(key)
        gone = [key for key in stamps if key not in seen]
        if not changes and not gone:
            return

        def apply(con: Any) -> None:
            for row in changes:
                index.upsert(con, row)
            for key in gone:
                index.delete(con, key)

        index.write(apply, soft=True)  # on a full disk the listing is still right (a private copy)

    # -- lookups ---------------------------------------------------------------------------------

    def entries(self, sort: str = "used") -> list[CacheEntry]:
        """Every entry, after syncing the index with the disk. ``sort``: used (recent first), size, name."""
        if sort not in SORT_KEYS:
            raise ValueError(f"sort must be one of {', '.join(SORT_KEYS)}, not {sort!r}")
        store = self.store
        with store.lock:
            self.reconcile()
        pinned = store.pinned_keys()
        entries = [store.entry(row, pinned=row["key"] in pinned) for row in store.index.all()]
        if sort == "size":
            entries.sort(key=lambda e: (-e.size, e.name))
        elif sort == "name":
            entries.sort(key=lambda e: (e.name.lower(), e.key))
        else:
            entries.sort(key=lambda e: -(e.last_used or e.created))
        return entries

    def find(self, name_or_key: str) -> CacheEntry | None:
        """The entry with this key, else this name, else this unique key prefix (see `CacheManager.find`)."""
        if not isinstance(name_or_key, str) or not name_or_key:
            return None
        store = self.store
        try:
            row = resolve(store.index, name_or_key)
        except AmbiguousNameError:  # make sure no vanished entry is among the candidates
            row = None
        if row is None:
            with store.lock:
                self.reconcile()
            row = resolve(store.index, name_or_key)
        if row is None:  # an alias (`_aliases`): only when no entry has that name or key
            from provender._cache._aliases import Aliases

            alias = Aliases(store).get(name_or_key)
            row = store.index.get(alias.key) if alias is not None else None
        if row is None:
            return None
        entry = store.entry(row)
        return entry if entry.path.exists() else None

    def get(self, name_or_key: str) -> CacheEntry:
        """Like `find`, but raises EntryNotFoundError."""
        entry = self.find(name_or_key)
        if entry is None:
            raise EntryNotFoundError(name_or_key)
        return entry
