"""Keeping the index a cache of the truth on disk: opening (and rebuilding) it, discovering
entries that appeared by other means (another tool downloading into ``hub/``), dropping
those whose files vanished, and the index rows of Hub repos.

Functions of the `CacheManager` they keep in sync; each says whether it runs under the
cache lock.
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
from provender._cache._repair import record

if TYPE_CHECKING:
    from provender._cache._core import CacheCore
    from provender._cache._index import IndexRow

logger = logging.getLogger(__name__)


def open_index(cm: CacheCore) -> None:
    try:
        cm.index.con.execute("SELECT COUNT(*) FROM entries").fetchone()
    except Exception as exc:
        if not is_corruption(exc):  # busy, locked, read-only...: not a reason to touch the file
            raise
        rebuild_index(cm, str(exc))


def rebuild_index(cm: CacheCore, reason: str) -> None:
    """Set a corrupt index aside and rebuild it from the files (counters start again at 0)."""
    with cm.lock:
        cm.index.close()
        try:  # another process may have rebuilt it while we waited for the lock
            cm.index.con.execute("SELECT COUNT(*) FROM entries").fetchone()
            return
        except Exception as exc:
            if not is_corruption(exc):
                raise
            cm.index.close()
        stamp = time.strftime("%Y%m%dT%H%M%S")
        for suffix in ("", "-wal", "-shm"):
            path = Path(f"{cm.index.path}{suffix}")
            if path.exists():
                os.replace(path, f"{cm.index.path}.corrupt-{stamp}{suffix}")
        done = f"cache index was unusable ({reason}); set aside as index.db.corrupt-{stamp}, rebuilt from the files"
        logger.warning("%s", done)
        record(cm.cache_dir, key="", name="index.db", path=cm.index.path, problem=done, fixed=True)
        reconcile(cm)


def discover_object(cm: CacheCore, key: str) -> IndexRow | None:
    if not (cm.objects_dir / key).is_dir():
        return None
    with cm.lock:  # the row is written under the lock too: no evictor can remove the entry in between
        manifest = cm._read_manifest(key)
        if manifest is not None:
            cm._write_row(cm._row_from_manifest(manifest))
    return None if manifest is None else cm.index.get(key)


def hub_row(
    cm: CacheCore,
    folder: str,
    repo_type: str,
    repo_id: str,
    last_used: float | None,
    metadata: dict[str, Any] | None = None,
) -> IndexRow:
    path = cm.hub_dir / folder
    return {
        "key": cm.hub_key(repo_id, repo_type),
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


def download_state(cm: CacheCore, key: str) -> str:
    """``none``, ``running`` (a live process downloads) or ``interrupted`` (its process died)."""
    marker = cm._pending_dir / f"{key}.lock"
    cm.walls.check("pending")
    if not check_file(marker):  # a planted link is refused
        return "none"
    lock = LeaseLock(marker, blocking=False)
    try:
        lock.acquire_write()  # flock, as filelock: a live owner keeps it
    except Timeout:
        return "running"
    lock.release()
    return "interrupted"


def hub_changed(cm: CacheCore) -> bool:
    """True if hub/ gained or lost a repo folder since the last `_reconcile` (one stat)."""
    return str(cm.hub_dir.stat().st_mtime_ns) != cm.index.get_meta("hub_mtime")


def reconcile(cm: CacheCore) -> None:
    """Make the index match the disk: discover new entries, drop vanished ones. Call under the lock."""
    cm.walls.check("objects", "hub", "pins", "trash")  # not swapped, no link where a folder belongs
    cm.index.set_meta("hub_mtime", str(cm.hub_dir.stat().st_mtime_ns))  # before the scan: no gap
    rows = {r["key"]: r for r in cm.index.all()}
    seen: set[str] = set()
    changes: list[IndexRow] = []
    with cm.walls.open("objects") as objects_fd, os.scandir(objects_fd) as it:
        for item in it:
            key = item.name
            if item.is_symlink() or not item.is_dir(follow_symlinks=False):
                # planted, not made by us: never read or follow it, only take it out of the way
                logger.warning("removing %s: not an entry provender made (a link or a file)", item.name)
                with suppress(FileNotFoundError):
                    os.unlink(key, dir_fd=objects_fd)
                continue
            seen.add(key)
            if key in rows:
                continue
            manifest = cm._read_manifest(key)  # a damaged manifest is rebuilt, never a reason to delete
            if manifest is not None:
                changes.append(cm._row_from_manifest(manifest))
    with cm.walls.open("hub") as hub_fd, os.scandir(hub_fd) as it:
        for item in it:
            parsed = _hub.parse_folder_name(item.name)
            if parsed is None or not item.is_dir(follow_symlinks=False):
                continue
            repo_type, repo_id = parsed
            key = cm.hub_key(repo_id, repo_type)
            path = cm.hub_dir / item.name
            old = rows.get(key)
            if old is None and not _hub.has_snapshot(path):  # only *.incomplete blobs, or links: not an entry
                continue
            seen.add(key)
            if old is None:
                if download_state(cm, key) != "none":
                    continue  # a partial download is not an entry (a later pull resumes it)
                changes.append(hub_row(cm, item.name, repo_type, repo_id, last_used=None))
            elif old["stamp"] != _hub.repo_stamp(path):
                changes.append({**old, "size": _hub.repo_size(path), "stamp": _hub.repo_stamp(path)})
    for key in cm._pinned_keys() - seen:  # a pin whose entry is gone must not pin a later one
        cm.walls.unlink(cm._pins_dir / key)
    gone = [key for key in rows if key not in seen]
    if not changes and not gone:
        return

    def apply(con: Any) -> None:
        for row in changes:
            cm.index.upsert(con, row)
        for key in gone:
            cm.index.delete(con, key)

    cm.index.write(apply, soft=True)  # on a full disk the listing is still right (a private copy)
