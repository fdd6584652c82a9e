"""`Store`: the cache's folders on disk, and the steps that change them so that a crash at any
instant leaves the old state or the new.

The store holds the walls (the folders opened without following links), the cache-wide lock,
the index (rows are written in the same steps as the files they describe) and the size limit.
Content is staged under ``tmp/`` (`Store.staging`), described by its manifest, then renamed into
``objects/`` in one step (`Store.commit`), or swapped with the entry it replaces with the old one
set aside in ``trash/`` (`Store.swap_in`); removals rename out to ``trash/`` first
(`Store.try_remove`). `Store.clean_leftovers` finishes or undoes what a killed process left.
Leases (``locks/<key>.lease``), download markers (``pending/``) and pins (``pins/<key>``) are
files of the store too. Nothing here syncs the index with the disk (`_sync.Catalog`) or evicts
(`_eviction.Evictor`): those take the store.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import Timeout

from provender._cache._entry import CacheEntry
from provender._cache._fsops import fs_errors, fsync_dir
from provender._cache._index import Index
from provender._cache._layout import DIRS, Walls, check_file, remove_at
from provender._cache._leases import exclusive
from provender._cache._locks import GuardedLock, LeaseLock
from provender._cache._names import check_key, within
from provender._cache._repair import read_or_repair
from provender.errors import CacheError, CacheNotWritableError, DiskFullError, EntryExistsError, EntryInUseError

if TYPE_CHECKING:
    from provender._cache._index import IndexRow

logger = logging.getLogger(__name__)

REPLACED_SUFFIX = ".replaced"  # trash/<key>.replaced: the old entry while a replacement swaps


class Store:
    """The folders of one cache directory, its lock and its index; ``max_size`` is the limit in bytes.

    Opening it prepares (or adopts) the folder, refuses one that is not a provender cache or that
    this user cannot write, and opens the index (not yet checked: `Catalog.open_index` does that).
    """

    def __init__(self, cache_dir: Path, max_size: int, prompt_max_size: int | None = None) -> None:
        self.cache_dir = cache_dir
        self.max_size = max_size
        # the saved prompt caches' own budget inside max_size (cache.prompt_cache_max_size); default a tenth
        self.prompt_max_size = max_size // 10 if prompt_max_size is None else prompt_max_size
        self.hub_dir = cache_dir / "hub"
        self.objects_dir = cache_dir / "objects"
        self.pins_dir = cache_dir / "pins"
        self.trash_dir = cache_dir / "trash"
        with fs_errors(cache_dir):
            self.walls = Walls(cache_dir)  # refuses a folder that is not a provender cache, and planted links
            for d in (cache_dir, *(cache_dir / name for name in DIRS)):
                if not os.access(d, os.W_OK):
                    raise CacheNotWritableError(d, "permission denied")
            if check_file(cache_dir / ".lock") and not os.access(cache_dir / ".lock", os.W_OK):
                raise CacheNotWritableError(cache_dir / ".lock", "the cache's lock file belongs to another user")
        self.lock = GuardedLock(self.walls)  # checks the walls, then locks
        self.locks_dir = self.walls.here("locks")  # leases, markers and staging go where was checked
        self.pending_dir = self.walls.here("pending")
        self.tmp_dir = self.walls.here("tmp")
        self.index = Index(cache_dir / "index.db", guard=self.walls.check)

    # -- leases, markers, pins -----------------------------------------------------------

    def lease_path(self, key: str) -> Path:
        """The lease file of entry `key` (a read-write lock: readers hold an entry in use)."""
        name = f"{check_key(key)}.lease"
        self.walls.check("locks")  # not swapped, and no link where the folder belongs
        check_file(self.cache_dir / "locks" / name)  # a planted link is refused (named as the user sees it)
        return self.locks_dir / name

    def pending_path(self, key: str) -> Path:
        """The marker held while a Hub download of `key` runs."""
        return self.pending_dir / f"{check_key(key)}.lock"

    def held(self, key: str) -> bool:
        """True if a live process holds a lease on `key`."""
        with exclusive(self.lease_path(key)) as taken:
            return not taken

    def pinned_keys(self) -> set[str]:
        """Keys of the pinned entries (marker files under ``pins/``)."""
        return set(self.walls.listdir("pins"))

    def mark_pinned(self, key: str) -> None:
        """Write the pin marker of `key`; a planted link there is refused, not followed."""
        with fs_errors(self.cache_dir):
            self.walls.touch(self.pins_dir / key)

    def unmark_pinned(self, key: str) -> None:
        self.walls.unlink(self.pins_dir / key)

    # -- rows and manifests ----------------------------------------------------------------

    def entry(self, row: IndexRow, pinned: bool | None = None) -> CacheEntry:
        """The public `CacheEntry` of an index row (`pinned` None: look at the pin marker)."""
        if pinned is None:
            pinned = (self.pins_dir / row["key"]).exists()
        return CacheEntry(
            key=row["key"],
            name=row["name"],
            kind=row["kind"],
            path=self.cache_dir / row["path"],
            size=row["size"],
            created=row["created"],
            last_used=row["last_used"],
            hits=row["hits"],
            pinned=pinned,
            metadata=row["metadata"],
        )

    def lru_entries(self) -> list[CacheEntry]:
        """Every indexed entry, least recently used first (``pinned`` left False: eviction asks the pins)."""
        return [self.entry(row, pinned=False) for row in self.index.lru_order()]

    def read_manifest(self, key: str) -> dict[str, Any] | None:
        """The manifest of stored entry `key`; a damaged one is rebuilt from the files, never deleted (under `lock`)."""
        return read_or_repair(self.index, self.cache_dir, key)

    def write_row(self, row: IndexRow) -> None:
        """Insert or replace `row` in the index (under `lock`); a full disk is a DiskFullError."""
        try:
            with self.index.transaction() as con:
                self.index.upsert(con, row)
        except Exception as exc:
            if "disk" in str(exc).lower() and "full" in str(exc).lower():
                raise DiskFullError(self.cache_dir) from exc
            raise

    # -- staging and committing ------------------------------------------------------------

    def clean_leftovers(self) -> None:
        """Remove what killed processes left in tmp/ and trash/ (their owners' locks are free).

        An entry set aside by a replacement that never completed is put back.
        """
        walls = self.walls
        # replacements swap under the lock: none is half-done while we hold it; trash/ is opened without
        # following links, so nothing outside is ever listed or deleted
        with self.lock, walls.open("trash") as trash_fd:
            for name in os.listdir(trash_fd):
                key = name.removesuffix(REPLACED_SUFFIX)
                if name.endswith(REPLACED_SUFFIX) and not os.path.lexists(self.objects_dir / key):
                    walls.rename(self.trash_dir / name, self.objects_dir / key)
                    logger.warning("restored cache entry %s: its replacement was interrupted", key)
                else:
                    remove_at(trash_fd, name)
        names = walls.listdir("tmp")
        for name in [n for n in names if n.endswith(".locking")]:  # died between creating and renaming it
            lock = LeaseLock(self.tmp_dir / name, blocking=False)
            try:
                lock.acquire_write()  # flock, as filelock: a live owner keeps it
            except (Timeout, OSError):  # live, or not a marker of ours (a link is refused by filelock)
                continue
            walls.unlink(self.tmp_dir / name)
            lock.release()
        for name in [n for n in names if n.endswith(".lock")]:
            lock = LeaseLock(self.tmp_dir / name, blocking=False)
            try:
                lock.acquire_write()  # flock, as filelock: a live owner keeps it
            except (Timeout, OSError):
                continue  # a live process is still staging
            try:
                walls.remove(self.tmp_dir / name.removesuffix(".lock"))
            finally:
                lock.release()
            walls.unlink(self.tmp_dir / name)

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh directory under tmp/, marked as owned by this process while it exists.

        The marker is locked under a name no cleanup looks at, then renamed into place:
        a marker is never visible unlocked, so a starting process cannot take a live
        staging for a dead one.
        """
        tmp_dir = self.tmp_dir
        self.walls.check("tmp", "objects", "trash")  # no link where these folders belong: nothing staged outside
        for _attempt in range(20):
            name = uuid.uuid4().hex
            claiming = tmp_dir / f"{name}.locking"
            marker = LeaseLock(claiming, blocking=False)  # opened through the held tmp/ descriptor
            with fs_errors(self.cache_dir):
                try:
                    marker.acquire_write()
                    os.rename(claiming, tmp_dir / f"{name}.lock")
                    break
                except (Timeout, FileNotFoundError):  # a cleanup took the fresh file for a dead one's: again
                    marker.release()
        else:
            raise CacheError(f"could not claim a staging directory under {tmp_dir}")
        stage = tmp_dir / name
        try:
            yield stage
        finally:
            self.walls.remove(stage)
            self.walls.unlink(tmp_dir / f"{name}.lock")
            marker.release()

    def refuse_replacing(self, key: str, display: str, replace: bool) -> None:
        """An entry under `key` exists: refuse unless `replace`, and always when it is pinned."""
        if not replace:
            raise EntryExistsError(display)
        if key in self.pinned_keys():
            raise EntryInUseError(display, "the entry it would replace is pinned")

    def commit(self, stage: Path, row: IndexRow, display: str, replace: bool) -> None:
        """Rename a staged entry into ``objects/<key>`` and index it (or swap it with the entry there,
        when `replace`). Call under `lock`."""
        target = self.objects_dir / row["key"]
        if not os.path.lexists(target):
            with fs_errors(self.cache_dir):
                self.walls.rename(stage, target)
                fsync_dir(self.objects_dir)
            self.write_row(row)
        else:
            self.refuse_replacing(row["key"], display, replace)
            self.swap_in(stage, target, display, row)

    def swap_in(self, stage: Path, target: Path, display: str, row: IndexRow) -> None:
        """Replace an entry so that a crash at any instant leaves the old or the new one, never neither.
        The row is written before the lease is free: no reader sees the new files under the old row."""
        backup = self.trash_dir / f"{target.name}{REPLACED_SUFFIX}"
        with exclusive(self.lease_path(target.name)) as taken:
            if not taken:
                raise EntryInUseError(display, "the entry it would replace is in use by a running process")
            with fs_errors(self.cache_dir):
                self.walls.remove(backup)
                self.walls.rename(target, backup)  # a crash from here on: the next start puts it back
                self.walls.rename(stage, target)
                fsync_dir(self.objects_dir)
            self.write_row(row)
        self.walls.remove(backup)

    # -- removing ----------------------------------------------------------------------------

    def to_trash(self, path: Path) -> Path:
        trash = self.trash_dir / uuid.uuid4().hex
        self.walls.rename(path, trash)  # parents opened without following links; a link moves as itself
        return trash

    def try_remove(self, entry: CacheEntry, *, dry_run: bool = False, evicted: bool = False) -> bool:
        """Remove an entry unless a live process holds it. Call under `lock`. False if in use.

        ``evicted``: count it as an eviction, and when it is in use, leave a note that its eviction
        happens when its last lease is released (`Evictor.after_release`)."""
        index = self.index
        with exclusive(self.lease_path(entry.key)) as taken:
            if not taken:
                if evicted and not dry_run:  # in use: its eviction happens when its last lease is released
                    index.set_meta(f"deferred:{entry.key}", "1")
                return False
            if dry_run:
                return True
            if not within(self.cache_dir, entry.path):  # a tampered index row
                logger.warning("not deleting %s: it is outside the cache dir", entry.path)
            elif os.path.lexists(entry.path):
                with fs_errors(self.cache_dir):
                    self.walls.remove(self.to_trash(entry.path))  # files first: frees space on a full disk

            def drop(con: Any) -> None:
                index.delete(con, entry.key)
                if evicted:
                    index.add_stat(con, "evictions")
                    index.add_stat(con, "bytes_evicted", entry.size)

            index.write(drop, soft=True)  # the entry is gone: report that, whatever the index can record
            self.unmark_pinned(entry.key)
        return True

    def __repr__(self) -> str:
        return f"Store({str(self.cache_dir)!r}, max_size={self.max_size})"
