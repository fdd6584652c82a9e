"""`CacheManager`: the one disk cache of models shared by every provider, library and process.

Layout of ``cache.dir``::

    hub/               huggingface_hub's own layout (models--org--name/...), shared with `hf`
    objects/<key>/     entries provender stores itself (imports, cache_model), each with
                       its manifest .provender-entry.json, so the disk alone describes them
    pins/<key>         a pinned entry (marker files: pins survive an index rebuild)
    locks/<key>.lease  read-write locks: a process using an entry holds the read side
    pending/<key>.lock held while a hub download runs; left behind by a killed download
    tmp/, trash/       staging for atomic adds, and removals in progress (cleaned on start)
    index.db           SQLite index: last-used times, hit counts, stats (rebuildable)
    repairs.jsonl      what the cache repaired on its own (a damaged manifest...), for `verify`
    .lock              serialises compound changes (add, evict, remove) across processes
    .provender-cache   the mark that makes the folder a cache; CACHEDIR.TAG beside it (see _layout)

Crash safety comes from ordering: content is staged under tmp/, described by its
manifest, then renamed into objects/ in one step; removals rename out to trash/
first. A process killed at any point leaves either the old state or the new one,
plus leftovers in tmp/ or trash/ that the next start removes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from filelock import Timeout

from provender._cache import _hub
from provender._cache._entry import CacheEntry, CacheStats, VerifyIssue, model_path_of
from provender._cache._eviction import EvictionPlan, carry_out, lru_entries, plan_eviction, warn_if_over
from provender._cache._fsops import LinkMode, finish_move, fs_errors, fsync_dir, place_tree, tree_size
from provender._cache._index import Index, is_corruption
from provender._cache._layout import (
    DIRS,
    SourceInCacheError,
    Walls,
    check_file,
    remove_at,
    within_real,
)
from provender._cache._locks import GuardedLock, LeaseLock
from provender._cache._names import check_key, check_name, generate_cache_key, within
from provender._cache._repair import MANIFEST as MANIFEST  # re-exported: where callers look for it
from provender._cache._repair import read_or_repair, record, row_from_manifest, scan_files, write_manifest
from provender._cache._resolve import resolve
from provender._errors import (
    AmbiguousNameError,
    CacheError,
    CacheNotWritableError,
    DiskFullError,
    EntryExistsError,
    EntryInUseError,
    EntryNotFoundError,
    EntryTooLargeError,
    SourceNotFoundError,
)

logger = logging.getLogger(__name__)

REPLACED_SUFFIX = ".replaced"  # trash/<key>.replaced: the old entry while a replacement swaps
SORT_KEYS = ("used", "size", "name")


class Lease:
    """A hold on an entry: while it is held, no process evicts or removes the entry.

    The hold is an OS file lock, so it ends when the process does, however it dies.
    """

    def __init__(self, entry: CacheEntry, lock: LeaseLock, manager: CacheManager | None = None) -> None:
        self.entry = entry
        self._lock: LeaseLock | None = lock
        self._manager = manager

    @property
    def held(self) -> bool:
        return self._lock is not None

    def release(self) -> None:
        """Let go of the entry. If holding it blocked an eviction, that eviction happens now.

        A release alone evicts nothing else: the entry just used is not evicted by its own release.
        """
        lock, self._lock = self._lock, None
        if lock is not None:
            with suppress(Exception):
                lock.release()
            with suppress(Exception):
                lock.close()
            if self._manager is not None:
                self._manager._evict_if_over(self.entry.key)

    def _drop(self) -> None:
        """Release without evicting (garbage collection, interpreter exit)."""
        self._manager = None
        self.release()

    def __enter__(self) -> CacheEntry:
        return self.entry

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self._drop()


class CacheManager:
    """The shared, size-limited, LRU disk cache of models (see the module docs for the layout).

    ``CacheManager(cache_dir=None, max_size=None)``: None takes the value from the settings.
    Any number of processes may use one cache directory at once.
    """

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None, max_size: int | str | None = None) -> None:
        if cache_dir is None or max_size is None:
            from provender._settings import load_settings

            settings = load_settings()
            cache_dir = settings.cache.dir if cache_dir is None else cache_dir
            max_size = settings.cache.max_size if max_size is None else max_size
        from provender._sizes import parse_size

        self.cache_dir = Path(cache_dir).expanduser().absolute()
        self.max_size = parse_size(max_size)
        self.hub_dir = self.cache_dir / "hub"
        self.objects_dir = self.cache_dir / "objects"
        self._pins_dir = self.cache_dir / "pins"
        self._locks_dir = self.cache_dir / "locks"
        self._pending_dir = self.cache_dir / "pending"
        self._tmp_dir = self.cache_dir / "tmp"
        self._trash_dir = self.cache_dir / "trash"
        with fs_errors(self.cache_dir):
            self._walls = Walls(self.cache_dir)  # refuses a folder that is not a provender cache, and planted links
            for d in (self.cache_dir, *(self.cache_dir / name for name in DIRS)):
                if not os.access(d, os.W_OK):
                    raise CacheNotWritableError(d, "permission denied")
            if check_file(self.cache_dir / ".lock") and not os.access(self.cache_dir / ".lock", os.W_OK):
                raise CacheNotWritableError(self.cache_dir / ".lock", "the cache's lock file belongs to another user")
        self._lock = GuardedLock(self._walls)  # checks the walls, then locks
        self._locks_dir = self._walls.here("locks")  # leases, markers and staging go where was checked
        self._pending_dir = self._walls.here("pending")
        self._tmp_dir = self._walls.here("tmp")
        self._index = Index(self.cache_dir / "index.db", guard=self._walls.check)
        with fs_errors(self.cache_dir):
            self._open_index()
            self._clean_leftovers()

    # -- seed API ----------------------------------------------------------------------

    @staticmethod
    def generate_cache_key(repo: str, filename: str | None = None, metadata: dict[str, Any] | None = None) -> str:
        """Deterministic 64-hex sha256 key over repo, filename and metadata."""
        return generate_cache_key(repo, filename, metadata)

    def get_cached_model(self, cache_key: str) -> Path | None:
        """The model path stored under `cache_key`, or None. A hit marks the entry used.

        Counts a hit or a miss in the persistent stats. The path is not protected from
        eviction by another process: hold `acquire(key)` while you read it.
        """
        check_key(cache_key)
        found = self._index.hit(cache_key, lambda rel: os.path.exists(self.cache_dir / rel))
        if found is None:  # not indexed (yet): it may be on disk, put there by another process or tool
            row = self._discover_object(cache_key)
            if row is None and self._hub_changed():
                with self._lock:
                    self._reconcile()
                row = self._index.get(cache_key)
            if row is not None:
                found = self._index.hit(cache_key, lambda rel: os.path.exists(self.cache_dir / rel))
        if found is None:
            with self._index.transaction() as con:
                self._index.add_stat(con, "misses")
            return None
        kind, rel, metadata = found
        return model_path_of(self.cache_dir / rel, kind, metadata)

    def cache_model(
        self,
        model_path: str | os.PathLike[str],
        cache_key: str,
        *,
        name: str | None = None,
        link_mode: LinkMode = "auto",
        pin: bool = False,
        **metadata: Any,
    ) -> Path:
        """Store a model file or directory under `cache_key`; returns its path in the cache.

        The bytes are not copied where the filesystem allows (copy-on-write clone, else
        hard link; ``link_mode="copy"`` forces a copy, ``"move"`` moves the source in).
        An existing entry with the same key is replaced. Least-recently-used entries are
        then evicted to fit ``max_size``; the new entry never is. ``pin=True`` pins it in the
        same step, so no other process can evict it between the add and a `pin` call.
        """
        check_key(cache_key)
        entry = self._store_local(
            Path(model_path), cache_key, name=name, link_mode=link_mode, metadata=metadata, replace=True, pin=pin
        )
        return entry.model_path

    def cleanup_old_models(self, max_size: int | None = None, *, dry_run: bool = False) -> list[CacheEntry]:
        """Evict least-recently-used entries until the cache fits `max_size`; returns what went.

        Pinned entries and entries in use by a live process are skipped (with a warning if the
        cache stays over the limit). ``dry_run``: only say what would go (see `plan_eviction`).
        """
        plan = self.plan_eviction(max_size) if dry_run else self.prune(max_size)
        if not dry_run:
            warn_if_over(plan)
        return list(plan.evict)

    def plan_eviction(self, max_size: int | None = None) -> EvictionPlan:
        """What `prune` would evict now, and what it would keep and why; changes nothing."""
        limit = self.max_size if max_size is None else max_size
        with self._lock:
            self._reconcile()
            return plan_eviction(lru_entries(self), limit, pinned=self._pinned_keys(), in_use=self._held)

    def prune(self, max_size: int | None = None) -> EvictionPlan:
        """Evict least-recently-used entries down to `max_size` (default: the limit); returns what was done."""
        limit = self.max_size if max_size is None else max_size
        with self._lock:
            self._reconcile()
            plan = carry_out(self, limit, protect=set())
        self._notify_evicted(list(plan.evict))
        return plan

    # -- adding ------------------------------------------------------------------------

    def import_model(
        self,
        path: str | os.PathLike[str],
        name: str,
        *,
        link_mode: LinkMode = "auto",
        replace: bool = False,
        pin: bool = False,
        **metadata: Any,
    ) -> CacheEntry:
        """Sideload a local model (file or directory) under `name` (``org/name``), offline.

        Zero-copy where the filesystem allows. Raises EntryExistsError if an imported
        entry has that name already, unless ``replace=True``. ``pin=True`` pins it as it lands.
        """
        check_name(name)
        key = generate_cache_key(name, None, {"source": "import"})
        return self._store_local(
            Path(path),
            key,
            name=name,
            link_mode=link_mode,
            metadata={**metadata, "source": "import"},
            replace=replace,
            pin=pin,
        )

    def fetch(
        self,
        repo_id: str,
        *,
        revision: str | None = None,
        repo_type: str = "model",
        allow_patterns: list[str] | str | None = None,
        ignore_patterns: list[str] | str | None = None,
        progress: bool = True,
        endpoint: str | None = None,
    ) -> CacheEntry:
        """Download a Hub repo into ``<cache.dir>/hub`` with huggingface_hub (resumable, shared with `hf`).

        Honours ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` (or `endpoint`, for a mirror). Files already cached are not
        downloaded again. Marks the entry used and evicts others to fit ``max_size``.
        """
        from provender._cache._fetch import fetch_repo

        return fetch_repo(
            self,
            repo_id,
            revision=revision,
            repo_type=repo_type,
            allow_patterns=allow_patterns,
            ignore_patterns=ignore_patterns,
            progress=progress,
            endpoint=endpoint,
        )

    # -- reading -----------------------------------------------------------------------

    def entries(self, sort: str = "used") -> list[CacheEntry]:
        """Every entry, after syncing the index with the disk. ``sort``: used (recent first), size, name."""
        if sort not in SORT_KEYS:
            raise ValueError(f"sort must be one of {', '.join(SORT_KEYS)}, not {sort!r}")
        with self._lock:
            self._reconcile()
        pinned = self._pinned_keys()
        entries = [self._entry(row, pinned=row["key"] in pinned) for row in self._index.all()]
        if sort == "size":
            entries.sort(key=lambda e: (-e.size, e.name))
        elif sort == "name":
            entries.sort(key=lambda e: (e.name.lower(), e.key))
        else:
            entries.sort(key=lambda e: -(e.last_used or e.created))
        return entries

    def find(self, name_or_key: str) -> CacheEntry | None:
        """The entry with this key, else this name, else this unique key prefix (at least 4 hex digits).

        A name shared by an imported entry and a Hub repo means the imported one. A name or
        prefix that matches more entries raises AmbiguousNameError listing them.
        """
        if not isinstance(name_or_key, str) or not name_or_key:
            return None
        try:
            row = resolve(self._index, name_or_key)
        except AmbiguousNameError:  # make sure no vanished entry is among the candidates
            row = None
        if row is None:
            with self._lock:
                self._reconcile()
            row = resolve(self._index, name_or_key)
        if row is None:
            return None
        entry = self._entry(row)
        return entry if entry.path.exists() else None

    def get(self, name_or_key: str) -> CacheEntry:
        """Like `find`, but raises EntryNotFoundError."""
        entry = self.find(name_or_key)
        if entry is None:
            raise EntryNotFoundError(name_or_key)
        return entry

    def stats(self) -> CacheStats:
        """Persistent counters (hits, misses, evictions) and current totals."""
        with self._lock:
            self._reconcile()
        counters = self._index.stats()
        entries = self._index.all()
        return CacheStats(
            hits=counters["hits"],
            misses=counters["misses"],
            evictions=counters["evictions"],
            bytes_evicted=counters["bytes_evicted"],
            entries=len(entries),
            size=sum(r["size"] for r in entries),
            max_size=self.max_size,
            pinned=len(self._pinned_keys() & {r["key"] for r in entries}),
            cache_dir=self.cache_dir,
        )

    def in_use(self, name_or_key: str) -> bool:
        """True if some live process holds a lease on the entry."""
        return self._held(self.get(name_or_key).key)

    def _held(self, key: str) -> bool:
        lock = LeaseLock(self._lease_path(key), is_singleton=False, blocking=False)
        try:
            lock.acquire_write()
        except Timeout:
            return True
        finally:
            with suppress(Exception):
                lock.release()
            lock.close()
        return False

    # -- holding -----------------------------------------------------------------------

    def acquire(self, name_or_key: str) -> Lease:
        """Hold an entry in use (no eviction or removal) until `Lease.release()` or process exit.

        Marks the entry used and counts a hit (a miss if there is no such entry, which
        raises EntryNotFoundError). Use as ``with cm.acquire(name) as entry:``.
        """
        entry = self.find(name_or_key)
        if entry is None:
            with self._index.transaction() as con:
                self._index.add_stat(con, "misses")
            raise EntryNotFoundError(name_or_key)
        lock = LeaseLock(self._lease_path(entry.key), is_singleton=False)
        lock.acquire_read()
        # Between `get` and the read lock an evictor may have removed it: check again.
        row = self._index.get(entry.key)
        if row is None or not self._entry(row).path.exists():
            lock.release()
            lock.close()
            with self._index.transaction() as con:  # a miss like any other, for the stats
                self._index.add_stat(con, "misses")
            raise EntryNotFoundError(name_or_key)
        self._index.record_hit(entry.key)
        return Lease(self._entry(row), lock, self)

    # -- removing, pinning -------------------------------------------------------------

    def remove(self, name_or_key: str, *, dry_run: bool = False) -> CacheEntry:
        """Remove one entry. Refused (EntryInUseError) while it is pinned or held by a live process."""
        with self._lock:
            entry = self.get(name_or_key)
            if entry.key in self._pinned_keys():
                raise EntryInUseError(entry.name, "it is pinned (run `provender cache unpin` first)")
            if not self._try_remove(entry, dry_run=dry_run):
                raise EntryInUseError(entry.name, "a running process is using it")
        if not dry_run:
            self._notify_evicted([entry])
        return entry

    def pin(self, name_or_key: str) -> CacheEntry:
        """Protect an entry from eviction (it can still be removed after `unpin`)."""
        with self._lock:  # eviction holds it too: the entry cannot vanish between the lookup and the pin
            entry = self.get(name_or_key)
            if self._index.degraded is not None:
                raise self._index.degraded
            with fs_errors(self.cache_dir):
                self._walls.touch(self._pins_dir / entry.key)  # a planted link is refused, not followed
        return dataclasses.replace(entry, pinned=True)

    def unpin(self, name_or_key: str) -> CacheEntry:
        """Let an entry be evicted again; returns it as it was when unpinned."""
        with self._lock:
            entry = self.get(name_or_key)
            self._walls.unlink(self._pins_dir / entry.key)
        return dataclasses.replace(entry, pinned=False)

    def verify(self, *, fix: bool = False, progress: Any = None) -> list[VerifyIssue]:
        """Re-hash content where a checksum is known; report (and with ``fix``, drop) what is corrupt."""
        from provender._cache._verify import verify_cache

        return verify_cache(self, fix=fix, progress=progress)

    # -- internals ---------------------------------------------------------------------

    def _lease_path(self, key: str) -> Path:
        name = f"{check_key(key)}.lease"
        self._walls.check("locks")  # not swapped, and no link where the folder belongs
        check_file(self.cache_dir / "locks" / name)  # a planted link is refused (named as the user sees it)
        return self._locks_dir / name

    def _pinned_keys(self) -> set[str]:
        return set(self._walls.listdir("pins"))

    def _entry(self, row: dict[str, Any], pinned: bool | None = None) -> CacheEntry:
        if pinned is None:
            pinned = (self._pins_dir / row["key"]).exists()
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

    def _open_index(self) -> None:
        try:
            self._index.con.execute("SELECT COUNT(*) FROM entries").fetchone()
        except Exception as exc:
            if not is_corruption(exc):  # busy, locked, read-only...: not a reason to touch the file
                raise
            self._rebuild_index(str(exc))

    def _rebuild_index(self, reason: str) -> None:
        """Set a corrupt index aside and rebuild it from the files (counters start again at 0)."""
        with self._lock:
            self._index.close()
            try:  # another process may have rebuilt it while we waited for the lock
                self._index.con.execute("SELECT COUNT(*) FROM entries").fetchone()
                return
            except Exception as exc:
                if not is_corruption(exc):
                    raise
                self._index.close()
            stamp = time.strftime("%Y%m%dT%H%M%S")
            for suffix in ("", "-wal", "-shm"):
                path = Path(f"{self._index.path}{suffix}")
                if path.exists():
                    os.replace(path, f"{self._index.path}.corrupt-{stamp}{suffix}")
            done = f"cache index was unusable ({reason}); set aside as index.db.corrupt-{stamp}, rebuilt from the files"
            logger.warning("%s", done)
            record(self.cache_dir, key="", name="index.db", path=self._index.path, problem=done, fixed=True)
            self._reconcile()

    def _clean_leftovers(self) -> None:
        """Remove what killed processes left in tmp/ and trash/ (their owners' locks are free).

        An entry set aside by a replacement that never completed is put back.
        """
        # replacements swap under the lock: none is half-done while we hold it; trash/ is opened without
        # following links, so nothing outside is ever listed or deleted
        with self._lock, self._walls.open("trash") as trash_fd:
            for name in os.listdir(trash_fd):
                key = name.removesuffix(REPLACED_SUFFIX)
                if name.endswith(REPLACED_SUFFIX) and not os.path.lexists(self.objects_dir / key):
                    self._walls.rename(self._trash_dir / name, self.objects_dir / key)
                    logger.warning("restored cache entry %s: its replacement was interrupted", key)
                else:
                    remove_at(trash_fd, name)
        names = self._walls.listdir("tmp")
        for name in [n for n in names if n.endswith(".locking")]:  # died between creating and renaming it
            lock = LeaseLock(self._tmp_dir / name, blocking=False)
            try:
                lock.acquire_write()  # flock, as filelock: a live owner keeps it
            except (Timeout, OSError):  # live, or not a marker of ours (a link is refused by filelock)
                continue
            self._walls.unlink(self._tmp_dir / name)
            lock.release()
        for name in [n for n in names if n.endswith(".lock")]:
            lock = LeaseLock(self._tmp_dir / name, blocking=False)
            try:
                lock.acquire_write()  # flock, as filelock: a live owner keeps it
            except (Timeout, OSError):
                continue  # a live process is still staging
            try:
                self._walls.remove(self._tmp_dir / name.removesuffix(".lock"))
            finally:
                lock.release()
            self._walls.unlink(self._tmp_dir / name)

    @contextmanager
    def _staging(self) -> Iterator[Path]:
        """A fresh directory under tmp/, marked as owned by this process while it exists.

        The marker is locked under a name no cleanup looks at, then renamed into place:
        a marker is never visible unlocked, so a starting process cannot take a live
        staging for a dead one.
        """
        self._walls.check("tmp", "objects", "trash")  # no link where these folders belong: nothing staged outside
        for _attempt in range(20):
            name = uuid.uuid4().hex
            claiming = self._tmp_dir / f"{name}.locking"
            marker = LeaseLock(claiming, blocking=False)  # opened through the held tmp/ descriptor
            with fs_errors(self.cache_dir):
                try:
                    marker.acquire_write()
                    os.rename(claiming, self._tmp_dir / f"{name}.lock")
                    break
                except (Timeout, FileNotFoundError):  # a cleanup took the fresh file for a dead one's: again
                    marker.release()
        else:
            raise CacheError(f"could not claim a staging directory under {self._tmp_dir}")
        stage = self._tmp_dir / name
        try:
            yield stage
        finally:
            self._walls.remove(stage)
            self._walls.unlink(self._tmp_dir / f"{name}.lock")
            marker.release()

    def _store_local(
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
        if not src.exists():
            raise SourceNotFoundError(src)
        src = src.absolute()
        if self._index.degraded is not None:  # a full disk: refuse before any file is touched
            raise self._index.degraded
        if within_real(src, self.cache_dir):
            raise SourceInCacheError(src, self.cache_dir, "it contains the cache folder")
        if link_mode == "move" and within_real(self.cache_dir, src):
            raise SourceInCacheError(src, self.cache_dir, "it is inside the cache folder (a move would take it away)")
        if name is not None:
            check_name(name)
        display = name or src.name
        size = tree_size(src)
        if size > self.max_size:
            raise EntryTooLargeError(display, size, self.max_size)
        now = time.time()
        if (self.objects_dir / key).exists():  # refuse early, before any file is touched
            if not replace:
                raise EntryExistsError(display)
            if key in self._pinned_keys():
                raise EntryInUseError(display, "the entry it would replace is pinned")
        with self._staging() as stage:
            content = stage / src.name if src.is_file() else stage
            with fs_errors(self.cache_dir, size):
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
            row, evicted = self._commit_local(stage, manifest, key, display, replace, now, pin)
        if link_mode == "move":
            finish_move(src)  # committed: only now does the source go
        self._notify_evicted(evicted)
        return self._entry(row)

    def _commit_local(
        self, stage: Path, manifest: dict[str, Any], key: str, display: str, replace: bool, now: float, pin: bool
    ) -> tuple[dict[str, Any], list[CacheEntry]]:
        """Rename a staged entry into objects/ and index it, under the lock; then evict to fit."""
        with self._lock:
            target = self.objects_dir / key
            row = self._row_from_manifest(manifest, last_used=now)
            if not os.path.lexists(target):
                with fs_errors(self.cache_dir):
                    self._walls.rename(stage, target)
                    fsync_dir(self.objects_dir)
                self._write_row(row)
            else:
                if not replace:
                    raise EntryExistsError(display)
                if key in self._pinned_keys():
                    raise EntryInUseError(display, "the entry it would replace is pinned")
                self._swap_in(stage, target, display, row)
            self._reconcile()
            if pin:
                with fs_errors(self.cache_dir):
                    self._walls.touch(self._pins_dir / key)
            return row, self._evict(self.max_size, protect={key})

    def _swap_in(self, stage: Path, target: Path, display: str, row: dict[str, Any]) -> None:
        """Replace an entry so that a crash at any instant leaves the old or the new one, never neither.
        The row is written before the lease is free: no reader sees the new files under the old row."""
        lock = LeaseLock(self._lease_path(target.name), is_singleton=False, blocking=False)
        try:
            lock.acquire_write()
        except Timeout:
            lock.close()
            raise EntryInUseError(display, "the entry it would replace is in use by a running process") from None
        backup = self._trash_dir / f"{target.name}{REPLACED_SUFFIX}"
        try:
            with fs_errors(self.cache_dir):
                self._walls.remove(backup)
                self._walls.rename(target, backup)  # a crash from here on: the next start puts it back
                self._walls.rename(stage, target)
                fsync_dir(self.objects_dir)
            self._write_row(row)
        finally:
            lock.release()
            lock.close()
        self._walls.remove(backup)

    def _write_row(self, row: dict[str, Any]) -> None:
        try:
            with self._index.transaction() as con:
                self._index.upsert(con, row)
        except Exception as exc:
            if "disk" in str(exc).lower() and "full" in str(exc).lower():
                raise DiskFullError(self.cache_dir) from exc
            raise

    _row_from_manifest = staticmethod(row_from_manifest)

    def _read_manifest(self, key: str) -> dict[str, Any] | None:
        """The entry's manifest; a damaged one is rebuilt from the files, never deleted (call under the lock)."""
        return read_or_repair(self, key)

    def _discover_object(self, key: str) -> dict[str, Any] | None:
        if not (self.objects_dir / key).is_dir():
            return None
        with self._lock:  # the row is written under the lock too: no evictor can remove the entry in between
            manifest = self._read_manifest(key)
            if manifest is not None:
                self._write_row(self._row_from_manifest(manifest))
        return None if manifest is None else self._index.get(key)

    def hub_key(self, repo_id: str, repo_type: str = "model") -> str:
        """The cache key of a Hub repo (deterministic, the same in every process)."""
        return generate_cache_key(repo_id, None, {"source": "hub", "repo_type": repo_type})

    def _hub_row(
        self, folder: str, repo_type: str, repo_id: str, last_used: float | None, metadata: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        path = self.hub_dir / folder
        return {
            "key": self.hub_key(repo_id, repo_type),
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

    def _download_state(self, key: str) -> str:
        """``none``, ``running`` (a live process downloads) or ``interrupted`` (its process died)."""
        marker = self._pending_dir / f"{key}.lock"
        self._walls.check("pending")
        if not check_file(marker):  # a planted link is refused
            return "none"
        lock = LeaseLock(marker, blocking=False)
        try:
            lock.acquire_write()  # flock, as filelock: a live owner keeps it
        except Timeout:
            return "running"
        lock.release()
        return "interrupted"

    def _hub_changed(self) -> bool:
        """True if hub/ gained or lost a repo folder since the last `_reconcile` (one stat)."""
        return str(self.hub_dir.stat().st_mtime_ns) != self._index.get_meta("hub_mtime")

    def _reconcile(self) -> None:
        """Make the index match the disk: discover new entries, drop vanished ones. Call under the lock."""
        self._walls.check("objects", "hub", "pins", "trash")  # not swapped, no link where a folder belongs
        self._index.set_meta("hub_mtime", str(self.hub_dir.stat().st_mtime_ns))  # before the scan: no gap
        rows = {r["key"]: r for r in self._index.all()}
        seen: set[str] = set()
        changes: list[dict[str, Any]] = []
        with self._walls.open("objects") as objects_fd, os.scandir(objects_fd) as it:
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
                manifest = self._read_manifest(key)  # a damaged manifest is rebuilt, never a reason to delete
                if manifest is not None:
                    changes.append(self._row_from_manifest(manifest))
        with self._walls.open("hub") as hub_fd, os.scandir(hub_fd) as it:
            for item in it:
                parsed = _hub.parse_folder_name(item.name)
                if parsed is None or not item.is_dir(follow_symlinks=False):
                    continue
                repo_type, repo_id = parsed
                key = self.hub_key(repo_id, repo_type)
                path = self.hub_dir / item.name
                old = rows.get(key)
                if old is None and not _hub.has_snapshot(path):  # only *.incomplete blobs, or links: not an entry
                    continue
                seen.add(key)
                if old is None:
                    if self._download_state(key) != "none":
                        continue  # a partial download is not an entry (a later pull resumes it)
                    changes.append(self._hub_row(item.name, repo_type, repo_id, last_used=None))
                elif old["stamp"] != _hub.repo_stamp(path):
                    changes.append({**old, "size": _hub.repo_size(path), "stamp": _hub.repo_stamp(path)})
        for key in self._pinned_keys() - seen:  # a pin whose entry is gone must not pin a later one
            self._walls.unlink(self._pins_dir / key)
        gone = [key for key in rows if key not in seen]
        if not changes and not gone:
            return

        def apply(con: Any) -> None:
            for row in changes:
                self._index.upsert(con, row)
            for key in gone:
                self._index.delete(con, key)

        self._index.write(apply, soft=True)  # on a full disk the listing is still right (a private copy)

    def _to_trash(self, path: Path) -> Path:
        trash = self._trash_dir / uuid.uuid4().hex
        self._walls.rename(path, trash)  # parents opened without following links; a link moves as itself
        return trash

    def _try_remove(self, entry: CacheEntry, *, dry_run: bool = False, evicted: bool = False) -> bool:
        """Remove an entry unless a live process holds it. Call under the lock. False if in use."""
        lock = LeaseLock(self._lease_path(entry.key), is_singleton=False, blocking=False)
        try:
            lock.acquire_write()
        except Timeout:
            lock.close()
            if evicted and not dry_run:  # in use: its eviction happens when its last lease is released
                self._index.set_meta(f"deferred:{entry.key}", "1")
            return False
        try:
            if dry_run:
                return True
            if not within(self.cache_dir, entry.path):  # a tampered index row
                logger.warning("not deleting %s: it is outside the cache dir", entry.path)
            elif os.path.lexists(entry.path):
                with fs_errors(self.cache_dir):
                    self._walls.remove(self._to_trash(entry.path))  # files first: frees space on a full disk

            def drop(con: Any) -> None:
                self._index.delete(con, entry.key)
                if evicted:
                    self._index.add_stat(con, "evictions")
                    self._index.add_stat(con, "bytes_evicted", entry.size)

            self._index.write(drop, soft=True)  # the entry is gone: report that, whatever the index can record
            self._walls.unlink(self._pins_dir / entry.key)
        finally:
            lock.release()
            lock.close()
        return True

    def _evict(self, limit: int, protect: set[str]) -> list[CacheEntry]:
        """Evict LRU entries until the total fits `limit`. Call under the lock (after `_reconcile`)."""
        plan = carry_out(self, limit, protect)
        warn_if_over(plan)
        return list(plan.evict)

    def _evict_if_over(self, key: str) -> None:
        """After a lease on `key` ends: if an eviction passed over it while held, that eviction happens now."""
        flag = f"deferred:{key}"
        try:
            if self._index.get_meta(flag) is None:
                return  # no eviction waited on this entry: a release alone evicts nothing
            with self._lock:
                self._index.write(lambda con: con.execute("DELETE FROM meta WHERE name=?", (flag,)), soft=True)
                evicted = self._evict(self.max_size, protect=set())
        except Exception as exc:  # releasing must never fail because of housekeeping
            logger.warning("eviction after a release failed: %s", exc)
            return
        self._notify_evicted(evicted)

    def _notify_evicted(self, entries: list[CacheEntry]) -> None:
        if not entries:
            return
        from provender._plugins import plugin_manager_if_loaded

        manager = plugin_manager_if_loaded()
        if manager is None:
            return
        for entry in entries:
            try:
                manager.hook.provender_cache_evicted(entry=entry)
            except Exception as exc:
                logger.warning("a plugin failed on provender_cache_evicted(%s): %s", entry.name, exc)

    def __repr__(self) -> str:
        return f"CacheManager(cache_dir={str(self.cache_dir)!r}, max_size={self.max_size})"
