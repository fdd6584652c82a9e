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
from collections.abc import Callable
from pathlib import Path
from typing import Any

from provender import _wiring
from provender._cache import _fetch, _store, _sync, _tier_push
from provender._cache._entry import CacheEntry, CacheStats, VerifyIssue, model_path_of
from provender._cache._eviction import ORIGIN, EvictionPlan, carry_out, lru_entries, plan_eviction, warn_if_over
from provender._cache._fsops import LinkMode, fs_errors
from provender._cache._index import Index, IndexRow
from provender._cache._layout import DIRS, Walls, check_file
from provender._cache._leases import Lease, exclusive
from provender._cache._locks import GuardedLock, LeaseLock
from provender._cache._names import check_key, check_name, generate_cache_key
from provender._cache._remote import RemoteTier, tier_from_settings
from provender._cache._repair import MANIFEST as MANIFEST  # re-exported: where callers look for it
from provender._cache._repair import read_or_repair, row_from_manifest
from provender._cache._resolve import resolve
from provender._cache._store import REPLACED_SUFFIX as REPLACED_SUFFIX
from provender.errors import AmbiguousNameError, CacheNotWritableError, EntryInUseError, EntryNotFoundError

__all__ = ["MANIFEST", "CacheManager", "Lease"]

logger = logging.getLogger(__name__)

SORT_KEYS = ("used", "size", "name")
_FROM_SETTINGS: Any = object()  # `remote` not given: the [remote] settings decide


class CacheManager:
    """The shared, size-limited, LRU disk cache of models (see the module docs for the layout).

    ``CacheManager(cache_dir=None, max_size=None)``: None takes the value from the settings
    (``cache.dir``, ``cache.max_size``, handed to the cache through `provender._wiring`).
    ``on_evicted(entry)`` is told about each entry this manager drops, besides the plugins'
    ``provender_cache_evicted`` hook. Any number of processes may use one cache directory at once.

    ``remote``: the shared remote tier (a `RemoteTier`, or its URL); not given, it comes from the
    ``[remote]`` settings when the settings are read at all (``cache_dir`` or ``max_size`` left to
    them); None: no tier. With a tier, a miss looks there before the Hub, and what is downloaded
    from the Hub or imported is written to it (unless it is read-only): see `pull` and `push`.

    The verbs: `find` / `get` / `entries` / `stats` (read), `acquire` (hold), `import_model` /
    `fetch` (add), `remove` / `prune` / `plan_eviction` (drop), `pin` / `unpin`, `verify`.
    The seed's names stay as documented aliases: `get_cached_model` (a lookup by key that
    counts a hit, returning the path), `cache_model` (`import_model` under a caller's key),
    `cleanup_old_models` (`prune`, returning what went).
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str] | None = None,
        max_size: int | str | None = None,
        *,
        on_evicted: Callable[[CacheEntry], None] | None = None,
        remote: RemoteTier | str | None = _FROM_SETTINGS,
    ) -> None:
        if remote is _FROM_SETTINGS:  # the settings decide, as for the directory and the limit
            remote = tier_from_settings(_wiring.remote_defaults()) if cache_dir is None or max_size is None else None
        self._remote: RemoteTier | None = RemoteTier(remote) if isinstance(remote, str) else remote
        if cache_dir is None or max_size is None:
            default_dir, default_size = _wiring.cache_defaults()
            cache_dir = default_dir if cache_dir is None else cache_dir
            max_size = default_size if max_size is None else max_size
        from provender._sizes import parse_size

        self._on_evicted = on_evicted

        self.cache_dir = Path(cache_dir).expanduser().absolute()
        if self._remote is not None:  # a file:// tier must not be in the cache, nor the cache in it
            self._remote.check_apart(self.cache_dir)
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
        root = str(self.cache_dir)  # strings, not pathlib, on the hot path of a hit
        found = self._index.hit(cache_key, lambda rel: os.path.exists(os.path.join(root, rel)))
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
        Eviction never takes an entry that is the only copy of its model: moved in
        (``link_mode="move"``), or whose source has gone since (see `only_copy`).
        With a remote tier (not read-only), the entry is written through to it.
        """
        check_name(name)
        key = generate_cache_key(name, None, {"source": "import"})
        origin = {"path": str(Path(path).absolute()), "moved": link_mode == "move"}  # see `_eviction.only_copy`
        entry = self._store_local(
            Path(path),
            key,
            name=name,
            link_mode=link_mode,
            metadata={**metadata, "source": "import", ORIGIN: origin},
            replace=replace,
            pin=pin,
        )
        if self._remote is not None and not self._remote.read_only:
            _tier_push.write_through(self, entry)  # a failing tier is a warning, never a failed import
        return entry

    @property
    def remote(self) -> RemoteTier | None:
        """The shared remote tier this cache reads through (``remote.url``), or None."""
        return self._remote

    # pull and fetch (their options: `PullOptions`), push: the bodies are in _fetch and _tier_push
    pull = _fetch.pull
    fetch = _fetch.fetch
    push = _tier_push.push

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
            remote_hits=counters["remote_hits"],
            remote_misses=counters["remote_misses"],
            bytes_from_remote=counters["bytes_from_remote"],
            remote_errors=counters["remote_errors"],
        )

    def in_use(self, name_or_key: str) -> bool:
        """True if some live process holds a lease on the entry."""
        return self._held(self.get(name_or_key).key)

    def _held(self, key: str) -> bool:
        with exclusive(self._lease_path(key)) as taken:
            return not taken

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

    # -- the pieces the helper modules share (the `CacheCore` protocol of _core.py) -------

    @property
    def index(self) -> Index:
        """The SQLite index (for the cache's helper modules; not part of the public API)."""
        return self._index

    @property
    def lock(self) -> GuardedLock:
        """The cache-wide lock (for the cache's helper modules; not part of the public API)."""
        return self._lock

    @property
    def walls(self) -> Walls:
        """The cache's folders, opened without following links (for the helper modules)."""
        return self._walls

    def lease_path(self, key: str) -> Path:
        """The lease file of entry `key` (for the helper modules)."""
        return self._lease_path(key)

    def pending_path(self, key: str) -> Path:
        """The marker held while a Hub download of `key` runs (for the helper modules)."""
        return self._pending_dir / f"{check_key(key)}.lock"

    # -- internals ---------------------------------------------------------------------

    def _lease_path(self, key: str) -> Path:
        name = f"{check_key(key)}.lease"
        self._walls.check("locks")  # not swapped, and no link where the folder belongs
        check_file(self.cache_dir / "locks" / name)  # a planted link is refused (named as the user sees it)
        return self._locks_dir / name

    def _pinned_keys(self) -> set[str]:
        return set(self._walls.listdir("pins"))

    def _entry(self, row: IndexRow, pinned: bool | None = None) -> CacheEntry:
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

    # -- the pieces, one module each: syncing with the disk (_sync), adding and removing (_store)

    _open_index = _sync.open_index
    _rebuild_index = _sync.rebuild_index
    _discover_object = _sync.discover_object
    _hub_row = _sync.hub_row
    _download_state = _sync.download_state
    _hub_changed = _sync.hub_changed
    _reconcile = _sync.reconcile
    _clean_leftovers = _store.clean_leftovers
    _staging = _store.staging
    _store_local = _store.store_local
    _commit_local = _store.commit_local
    _swap_in = _store.swap_in
    _write_row = _store.write_row
    _to_trash = _store.to_trash
    _try_remove = _store.try_remove
    _row_from_manifest = staticmethod(row_from_manifest)

    def _read_manifest(self, key: str) -> dict[str, Any] | None:
        """The entry's manifest; a damaged one is rebuilt from the files, never deleted (call under the lock)."""
        return read_or_repair(self, key)

    def hub_key(self, repo_id: str, repo_type: str = "model") -> str:
        """The cache key of a Hub repo (deterministic, the same in every process)."""
        return generate_cache_key(repo_id, None, {"source": "hub", "repo_type": repo_type})

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
        """Tell the listeners handed down from above (the plugins' hook) and `on_evicted`."""
        if entries:
            _wiring.notify_evicted(entries, self._on_evicted)

    def __repr__(self) -> str:
        return f"CacheManager(cache_dir={str(self.cache_dir)!r}, max_size={self.max_size})"
