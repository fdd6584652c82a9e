"""Adding and removing entries so that a crash at any instant leaves the old state or the new.

Content is staged under ``tmp/`` (`staging`), described by its manifest, then renamed into
``objects/`` in one step (`commit_local`), or swapped with the entry it replaces with the
old one set aside in ``trash/`` (`swap_in`); removals rename out to ``trash/`` first
(`try_remove`). `clean_leftovers` finishes or undoes what a killed process left.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import Timeout

from provender._cache._entry import CacheEntry
from provender._cache._fsops import LinkMode, finish_move, fs_errors, fsync_dir, place_tree, tree_size
from provender._cache._layout import remove_at, within_real
from provender._cache._leases import exclusive
from provender._cache._locks import LeaseLock
from provender._cache._names import check_name, within
from provender._cache._repair import scan_files, write_manifest
from provender.errors import (
    CacheError,
    DiskFullError,
    EntryExistsError,
    EntryInUseError,
    EntryTooLargeError,
    SourceInCacheError,
    SourceNotFoundError,
)

if TYPE_CHECKING:
    from provender._cache._core import CacheCore
    from provender._cache._index import IndexRow

logger = logging.getLogger(__name__)

REPLACED_SUFFIX = ".replaced"  # trash/<key>.replaced: the old entry while a replacement swaps


def clean_leftovers(cm: CacheCore) -> None:
    """Remove what killed processes left in tmp/ and trash/ (their owners' locks are free).

    An entry set aside by a replacement that never completed is put back.
    """
    # replacements swap under the lock: none is half-done while we hold it; trash/ is opened without
    # following links, so nothing outside is ever listed or deleted
    with cm.lock, cm.walls.open("trash") as trash_fd:
        for name in os.listdir(trash_fd):
            key = name.removesuffix(REPLACED_SUFFIX)
            if name.endswith(REPLACED_SUFFIX) and not os.path.lexists(cm.objects_dir / key):
                cm.walls.rename(cm._trash_dir / name, cm.objects_dir / key)
                logger.warning("restored cache entry %s: its replacement was interrupted", key)
            else:
                remove_at(trash_fd, name)
    names = cm.walls.listdir("tmp")
    for name in [n for n in names if n.endswith(".locking")]:  # died between creating and renaming it
        lock = LeaseLock(cm._tmp_dir / name, blocking=False)
        try:
            lock.acquire_write()  # flock, as filelock: a live owner keeps it
        except (Timeout, OSError):  # live, or not a marker of ours (a link is refused by filelock)
            continue
        cm.walls.unlink(cm._tmp_dir / name)
        lock.release()
    for name in [n for n in names if n.endswith(".lock")]:
        lock = LeaseLock(cm._tmp_dir / name, blocking=False)
        try:
            lock.acquire_write()  # flock, as filelock: a live owner keeps it
        except (Timeout, OSError):
            continue  # a live process is still staging
        try:
            cm.walls.remove(cm._tmp_dir / name.removesuffix(".lock"))
        finally:
            lock.release()
        cm.walls.unlink(cm._tmp_dir / name)


@contextmanager
def staging(cm: CacheCore) -> Iterator[Path]:
    """A fresh directory under tmp/, marked as owned by this process while it exists.

    The marker is locked under a name no cleanup looks at, then renamed into place:
    a marker is never visible unlocked, so a starting process cannot take a live
    staging for a dead one.
    """
    cm.walls.check("tmp", "objects", "trash")  # no link where these folders belong: nothing staged outside
    for _attempt in range(20):
        name = uuid.uuid4().hex
        claiming = cm._tmp_dir / f"{name}.locking"
        marker = LeaseLock(claiming, blocking=False)  # opened through the held tmp/ descriptor
        with fs_errors(cm.cache_dir):
            try:
                marker.acquire_write()
                os.rename(claiming, cm._tmp_dir / f"{name}.lock")
                break
            except (Timeout, FileNotFoundError):  # a cleanup took the fresh file for a dead one's: again
                marker.release()
    else:
        raise CacheError(f"could not claim a staging directory under {cm._tmp_dir}")
    stage = cm._tmp_dir / name
    try:
        yield stage
    finally:
        cm.walls.remove(stage)
        cm.walls.unlink(cm._tmp_dir / f"{name}.lock")
        marker.release()


def store_local(
    cm: CacheCore,
    src: Path,
    key: str,
    *,
    name: str | None,
    link_mode: LinkMode,
    metadata: dict[str, Any],
    replace: bool,
    pin: bool = False,
) -> CacheEntry:
    if not src.exists():
        raise SourceNotFoundError(src)
    src = src.absolute()
    if cm.index.degraded is not None:  # a full disk: refuse before any file is touched
        raise cm.index.degraded
    if within_real(src, cm.cache_dir):
        raise SourceInCacheError(src, cm.cache_dir, "it contains the cache folder")
    if link_mode == "move" and within_real(cm.cache_dir, src):
        raise SourceInCacheError(src, cm.cache_dir, "it is inside the cache folder (a move would take it away)")
    if name is not None:
        check_name(name)
    display = name or src.name
    size = tree_size(src)
    if size > cm.max_size:
        raise EntryTooLargeError(display, size, cm.max_size)
    now = time.time()
    if (cm.objects_dir / key).exists():  # refuse early, before any file is touched
        if not replace:
            raise EntryExistsError(display)
        if key in cm._pinned_keys():
            raise EntryInUseError(display, "the entry it would replace is pinned")
    with staging(cm) as stage:
        content = stage / src.name if src.is_file() else stage
        with fs_errors(cm.cache_dir, size):
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
        row, evicted = commit_local(cm, stage, manifest, key, display, replace, now, pin)
    if link_mode == "move":
        finish_move(src)  # committed: only now does the source go
    cm._notify_evicted(evicted)
    return cm._entry(row)


def commit_local(
    cm: CacheCore,
    stage: Path,
    manifest: dict[str, Any],
    key: str,
    display: str,
    replace: bool,
    now: float,
    pin: bool,
) -> tuple[IndexRow, list[CacheEntry]]:
    """Rename a staged entry into objects/ and index it, under the lock; then evict to fit."""
    with cm.lock:
        target = cm.objects_dir / key
        row = cm._row_from_manifest(manifest, last_used=now)
        if not os.path.lexists(target):
            with fs_errors(cm.cache_dir):
                cm.walls.rename(stage, target)
                fsync_dir(cm.objects_dir)
            write_row(cm, row)
        else:
            if not replace:
                raise EntryExistsError(display)
            if key in cm._pinned_keys():
                raise EntryInUseError(display, "the entry it would replace is pinned")
            swap_in(cm, stage, target, display, row)
        cm._reconcile()
        if pin:
            with fs_errors(cm.cache_dir):
                cm.walls.touch(cm._pins_dir / key)
        return row, cm._evict(cm.max_size, protect={key})


def swap_in(cm: CacheCore, stage: Path, target: Path, display: str, row: IndexRow) -> None:
    """Replace an entry so that a crash at any instant leaves the old or the new one, never neither.
    The row is written before the lease is free: no reader sees the new files under the old row."""
    backup = cm._trash_dir / f"{target.name}{REPLACED_SUFFIX}"
    with exclusive(cm.lease_path(target.name)) as taken:
        if not taken:
            raise EntryInUseError(display, "the entry it would replace is in use by a running process")
        with fs_errors(cm.cache_dir):
            cm.walls.remove(backup)
            cm.walls.rename(target, backup)  # a crash from here on: the next start puts it back
            cm.walls.rename(stage, target)
            fsync_dir(cm.objects_dir)
        write_row(cm, row)
    cm.walls.remove(backup)


def write_row(cm: CacheCore, row: IndexRow) -> None:
    try:
        with cm.index.transaction() as con:
            cm.index.upsert(con, row)
    except Exception as exc:
        if "disk" in str(exc).lower() and "full" in str(exc).lower():
            raise DiskFullError(cm.cache_dir) from exc
        raise


def to_trash(cm: CacheCore, path: Path) -> Path:
    trash = cm._trash_dir / uuid.uuid4().hex
    cm.walls.rename(path, trash)  # parents opened without following links; a link moves as itself
    return trash


def try_remove(cm: CacheCore, entry: CacheEntry, *, dry_run: bool = False, evicted: bool = False) -> bool:
    """Remove an entry unless a live process holds it. Call under the lock. False if in use."""
    with exclusive(cm.lease_path(entry.key)) as taken:
        if not taken:
            if evicted and not dry_run:  # in use: its eviction happens when its last lease is released
                cm.index.set_meta(f"deferred:{entry.key}", "1")
            return False
        if dry_run:
            return True
        if not within(cm.cache_dir, entry.path):  # a tampered index row
            logger.warning("not deleting %s: it is outside the cache dir", entry.path)
        elif os.path.lexists(entry.path):
            with fs_errors(cm.cache_dir):
                cm.walls.remove(to_trash(cm, entry.path))  # files first: frees space on a full disk

        def drop(con: Any) -> None:
            cm.index.delete(con, entry.key)
            if evicted:
                cm.index.add_stat(con, "evictions")
                cm.index.add_stat(con, "bytes_evicted", entry.size)

        cm.index.write(drop, soft=True)  # the entry is gone: report that, whatever the index can record
        cm.walls.unlink(cm._pins_dir / entry.key)
    return True
