"""`CacheManager`: the one disk cache of models shared by every provider, library and process.

Layout of ``cache.dir``::

    hub/               huggingface_hub's own layout (models--org--name/...), shared with `hf`
    objects/<key>/     entries provender stores itself (imports, cache_model), each with
                       its manifest .provender-entry.json, so the disk alone describes them
    pins/<key>         a pinned entry (marker files: pins survive an index rebuild)
    aliases.json       more names for entries (`_aliases`: kept outside the index, so they survive its rebuild)
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
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

from provender import _wiring
from provender._cache._aliases import AliasBook
from provender._cache._entry import (
    CacheEntry,
    CacheStats,
    PullOptions,
    PullResult,
    PushResult,
    VerifyIssue,
    model_path_of,
)
from provender._cache._eviction import ORIGIN, REMOVE_IN_USE, EvictionPlan, Evictor, plan_removal, warn_if_over
from provender._cache._fetch import Transfers
from provender._cache._fsops import LinkMode, fs_errors
from provender._cache._intake import Intake
from provender._cache._leases import Lease
from provender._cache._locks import LeaseLock
from provender._cache._names import check_key, check_name, generate_cache_key, hub_key, imported_key
from provender._cache._prompts import PromptShelf
from provender._cache._remote import RemoteTier, tier_from_settings
from provender._cache._repair import MANIFEST as MANIFEST  # re-exported: where callers look for it
from provender._cache._store import REPLACED_SUFFIX as REPLACED_SUFFIX
from provender._cache._store import Store
from provender._cache._sync import Catalog
from provender.errors import EntryInUseError, EntryNotFoundError

if TYPE_CHECKING:
    from provender._cache._index import Index
    from provender._cache._layout import Walls
    from provender._cache._locks import GuardedLock

__all__ = ["MANIFEST", "CacheManager", "Lease"]

_FROM_SETTINGS: Any = object()  # `remote` not given: the [remote] settings decide


class CacheManager:
    """The shared, size-limited, LRU disk cache of models (see the module docs for the layout).

    ``CacheManager(cache_dir=None, max_size=None)``: None takes the value from the settings
    (``cache.dir``, ``cache.max_size``, handed to the cache through `provender._wiring`).
    ``on_evicted(entry)`` is told about each entry this manager drops, besides the plugins'
    ``provender_cache_evicted`` hook. Any number of processes may use one cache directory at once.

    ``prompt_max_size``: the saved prompt caches' budget inside ``max_size`` (`prompts`; None: the
    setting ``cache.prompt_cache_max_size`` when the settings are read, else a tenth of ``max_size``).

    ``remote``: the shared remote tier (a `RemoteTier`, or its URL); not given, it comes from the
    ``[remote]`` settings when the settings are read at all (``cache_dir`` or ``max_size`` left to
    them); None: no tier. With a tier, a miss looks there before the Hub, and what is downloaded
    from the Hub or imported is written to it (unless it is read-only): see `pull` and `push`.

    The verbs: `find` / `get` / `entries` / `stats` (read), `acquire` (hold), `import_model` /
    `fetch` (add), `remove` / `prune` / `plan_eviction` (drop), `pin` / `unpin`, `verify`.
    The seed's names stay as documented aliases: `get_cached_model` (a lookup by key that
    counts a hit, returning the path), `cache_model` (`import_model` under a caller's key),
    `cleanup_old_models` (`prune`, returning what went).

    The manager is a front over parts that each hold their own state (docs/architecture.md):
    the `Store` (folders, lock, index, limit), the `Catalog` (the index synced with the disk),
    the `Evictor` (eviction and removal plans carried out), the `Intake` (every add) and
    `Transfers` (pull and push, holding the remote tier).
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str] | None = None,
        max_size: int | str | None = None,
        *,
        on_evicted: Callable[[CacheEntry], None] | None = None,
        remote: RemoteTier | str | None = _FROM_SETTINGS,
        prompt_max_size: int | str | None = None,
    ) -> None:
        from_settings = cache_dir is None or max_size is None
        if remote is _FROM_SETTINGS:  # the settings decide, as for the directory and the limit
            remote = tier_from_settings(_wiring.remote_defaults()) if cache_dir is None or max_size is None else None
        self._remote: RemoteTier | None = RemoteTier(remote) if isinstance(remote, str) else remote
        if cache_dir is None or max_size is None:
            default_dir, default_size = _wiring.cache_defaults()
            cache_dir = default_dir if cache_dir is None else cache_dir
            max_size = default_size if max_size is None else max_size
        from provender._sizes import parse_size

        self.cache_dir = Path(cache_dir).expanduser().absolute()
        if self._remote is not None:  # a file:// tier must not be in the cache, nor the cache in it
            self._remote.check_apart(self.cache_dir)
        self.hub_dir = self.cache_dir / "hub"
        self.objects_dir = self.cache_dir / "objects"
        if prompt_max_size is None and from_settings:  # cache.prompt_cache_max_size, as for the limit
            prompt_max_size = _wiring.prompt_defaults()
        prompts = None if prompt_max_size is None else parse_size(prompt_max_size)
        self._store = store = Store(self.cache_dir, parse_size(max_size), prompts)
        self._index = store.index
        self._catalog = catalog = Catalog(store)
        self._evictor = evictor = Evictor(store, on_evicted)
        self._intake = intake = Intake(store, catalog, evictor)
        self._aliases = AliasBook(store, catalog)
        self._transfers = Transfers(intake, self._remote)
        self._prompts = PromptShelf(store, catalog, evictor)
        with fs_errors(self.cache_dir):
            catalog.open_index()
            store.clean_leftovers()

    @property
    def max_size(self) -> int:
        """The size limit in bytes (``cache.max_size``); may be set."""
        return self._store.max_size

    @max_size.setter
    def max_size(self, value: int) -> None:
        self._store.max_size = value

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
        index = self._index
        root = str(self.cache_dir)  # strings, not pathlib, on the hot path of a hit
        found = index.hit(cache_key, lambda rel: os.path.exists(os.path.join(root, rel)))
        if found is None:  # not indexed (yet): it may be on disk, put there by another process or tool
            catalog = self._catalog
            row = catalog.discover(cache_key)
            if row is None and catalog.hub_changed():
                with self._store.lock:
                    catalog.reconcile()
                row = index.get(cache_key)
            if row is not None:
                found = index.hit(cache_key, lambda rel: os.path.exists(self.cache_dir / rel))
        if found is None:
            with index.transaction() as con:
                index.add_stat(con, "misses")
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
        entry = self._intake.add_local(
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
        with self._store.lock:
            self._catalog.reconcile()
            return self._evictor.plan(limit)

    def prune(self, max_size: int | None = None) -> EvictionPlan:
        """Evict least-recently-used entries down to `max_size` (default: the limit); returns what was done."""
        limit = self.max_size if max_size is None else max_size
        with self._store.lock:
            self._catalog.reconcile()
            plan = self._evictor.carry_out(limit, protect=set())
        self._evictor.notify(list(plan.evict))
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
        origin = {"path": str(Path(path).absolute()), "moved": link_mode == "move"}  # see `_eviction.only_copy`
        entry = self._intake.add_local(
            Path(path),
            imported_key(name),
            name=name,
            link_mode=link_mode,
            metadata={**metadata, "source": "import", ORIGIN: origin},
            replace=replace,
            pin=pin,
        )
        self._transfers.write_through(entry)  # a failing tier is a warning, never a failed import
        return entry

    @property
    def remote(self) -> RemoteTier | None:
        """The shared remote tier this cache reads through (``remote.url``), or None."""
        return self._remote

    def pull(self, repo_id: str, **options: Unpack[PullOptions]) -> PullResult:
        """Get a repo (or an imported entry) into the cache: from the cache, else the remote tier (verified
        against its sha256; offline too), else the Hub (written through to the tier unless read-only).

        Options, each keyword-only and optional (`PullOptions`): ``revision``, ``repo_type``,
        ``allow_patterns``, ``ignore_patterns``, ``progress`` (default True), ``endpoint``. Says where
        the bytes came from (`PullResult`). A failing tier is a warning, never a failed pull.
        """
        return self._transfers.pull(repo_id, **options)

    def fetch(self, repo_id: str, **options: Unpack[PullOptions]) -> CacheEntry:
        """Download a Hub repo into ``<cache.dir>/hub`` with huggingface_hub (resumable, shared with `hf`).

        Honours ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` (or ``endpoint``, for a mirror). Files already cached are not
        downloaded again. Marks the entry used and evicts others to fit ``max_size``. With a remote tier,
        a miss is served from it first: this is ``pull(...).entry`` (the same options: `PullOptions`).
        """
        return self._transfers.pull(repo_id, **options).entry

    def push(self, name_or_key: str, *, progress: bool | Callable[[int], object] = False) -> PushResult:
        """Upload an entry of this cache to the remote tier (blobs the tier holds already are skipped).

        ``progress``: a callable is told the bytes of each blob as it is uploaded or found there.

        Raises RemoteNotConfiguredError without a tier (or on a read-only one), RemoteTierError
        if the tier fails.
        """
        return self._transfers.push(name_or_key, progress=progress)

    # -- reading -----------------------------------------------------------------------

    def entries(self, sort: str = "used", *, prompts: bool = False) -> list[CacheEntry]:
        """Every entry, after syncing the index with the disk. ``sort``: used (recent first), size, name.
        The saved prompt caches (kind ``prompt``) only with ``prompts=True``: they are not models."""
        found = self._catalog.entries(sort)
        return found if prompts else [e for e in found if e.kind != "prompt"]

    @property
    def prompts(self) -> PromptShelf:
        """The saved prompt caches (`provender._cache._prompts.PromptShelf`: save, entries, hold)."""
        return self._prompts

    @property
    def prompt_max_size(self) -> int:
        """The saved prompt caches' budget in bytes, inside `max_size` (``cache.prompt_cache_max_size``); may be set."""
        return self._store.prompt_max_size

    @prompt_max_size.setter
    def prompt_max_size(self, value: int) -> None:
        self._store.prompt_max_size = value

    def find(self, name_or_key: str) -> CacheEntry | None:
        """The entry with this key, else this name, else this unique key prefix (at least 4 hex digits).

        A name shared by an imported entry and a Hub repo means the imported one. A name or
        prefix that matches more entries raises AmbiguousNameError listing them.
        """
        return self._catalog.find(name_or_key)

    def get(self, name_or_key: str) -> CacheEntry:
        """Like `find`, but raises EntryNotFoundError."""
        return self._catalog.get(name_or_key)

    def stats(self) -> CacheStats:
        """Persistent counters (hits, misses, evictions) and current totals."""
        store = self._store
        with store.lock:
            self._catalog.reconcile()
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
            pinned=len(store.pinned_keys() & {r["key"] for r in entries}),
            cache_dir=self.cache_dir,
            remote_hits=counters["remote_hits"],
            remote_misses=counters["remote_misses"],
            bytes_from_remote=counters["bytes_from_remote"],
            remote_errors=counters["remote_errors"],
        )

    def in_use(self, name_or_key: str) -> bool:
        """True if some live process holds a lease on the entry."""
        return self._store.held(self.get(name_or_key).key)

    # -- holding -----------------------------------------------------------------------

    def acquire(self, name_or_key: str) -> Lease:
        """Hold an entry in use (no eviction or removal) until `Lease.release()` or process exit.

        Marks the entry used and counts a hit (a miss if there is no such entry, which
        raises EntryNotFoundError). Use as ``with cm.acquire(name) as entry:``.
        """
        store, index = self._store, self._index
        entry = self._catalog.find(name_or_key)
        if entry is None:
            with index.transaction() as con:
                index.add_stat(con, "misses")
            raise EntryNotFoundError(name_or_key)
        lock = LeaseLock(store.lease_path(entry.key), is_singleton=False)
        lock.acquire_read()
        # Between `find` and the read lock an evictor may have removed it: check again.
        row = index.get(entry.key)
        if row is None or not store.entry(row).path.exists():
            lock.release()
            lock.close()
            with index.transaction() as con:  # a miss like any other, for the stats
                index.add_stat(con, "misses")
            raise EntryNotFoundError(name_or_key)
        index.record_hit(entry.key)
        return Lease(store.entry(row), lock, self._evictor.after_release)

    # -- removing, pinning -------------------------------------------------------------

    def remove(self, name_or_key: str, *, dry_run: bool = False) -> CacheEntry:
        """Remove one entry. Refused (EntryInUseError) while it is pinned, held by a live process, or named
        by aliases. `name_or_key` an alias: only the alias goes (`unalias`); returns the entry it named."""
        store = self._store
        with store.lock:
            entry = self.get(name_or_key)
            if self._aliases.only_alias(name_or_key, entry, dry_run=dry_run):
                return entry
            plan = plan_removal(entry, pinned=store.pinned_keys())  # leases: asked as it is carried out
            if plan.refused is not None:
                raise EntryInUseError(entry.name, plan.refused)
            if not self._evictor.remove(plan, dry_run=dry_run):
                raise EntryInUseError(entry.name, REMOVE_IN_USE)
        if not dry_run:
            self._evictor.notify([entry])
        return entry

    # -- aliases (`_aliases`: more names for an entry, kept in aliases.json) ----------------

    def alias(self, source: str, alias: str) -> CacheEntry:
        """Make `alias` another name of the entry `source` names (a name, key, prefix or alias); returns
        that entry. An alias of that name is moved; a name or key of an entry is refused (EntryExistsError)."""
        return self._aliases.make(source, alias)

    def unalias(self, alias: str) -> str:
        """Remove the alias `alias` (never the entry's files); returns the key it named.
        EntryNotFoundError if there is no such alias."""
        return self._aliases.unmake(alias)

    def aliases(self) -> dict[str, CacheEntry]:
        """Every alias whose entry is in the cache, and that entry."""
        return self._aliases.resolved()

    def pin(self, name_or_key: str) -> CacheEntry:
        """Protect an entry from eviction (it can still be removed after `unpin`)."""
        with self._store.lock:  # eviction holds it too: the entry cannot vanish between the lookup and the pin
            entry = self.get(name_or_key)
            if self._index.degraded is not None:
                raise self._index.degraded
            self._store.mark_pinned(entry.key)  # a planted link is refused, not followed
        return dataclasses.replace(entry, pinned=True)

    def unpin(self, name_or_key: str) -> CacheEntry:
        """Let an entry be evicted again; returns it as it was when unpinned."""
        with self._store.lock:
            entry = self.get(name_or_key)
            self._store.unmark_pinned(entry.key)
        return dataclasses.replace(entry, pinned=False)

    def verify(self, *, fix: bool = False, progress: Any = None) -> list[VerifyIssue]:
        """Re-hash content where a checksum is known; report (and with ``fix``, drop) what is corrupt."""
        from provender._cache._verify import verify_cache

        return verify_cache(self._catalog, self.remove, fix=fix, progress=progress)

    def hub_key(self, repo_id: str, repo_type: str = "model") -> str:
        """The cache key of a Hub repo (deterministic, the same in every process)."""
        return hub_key(repo_id, repo_type)

    # -- the parts, for introspection (not part of the public API) ------------------------

    @property
    def store(self) -> Store:
        """The `Store`: the cache's folders, lock and index (the Ollama import stages through it)."""
        return self._store

    @property
    def index(self) -> Index:
        """The SQLite index (the store's)."""
        return self._index

    @property
    def lock(self) -> GuardedLock:
        """The cache-wide lock (the store's)."""
        return self._store.lock

    @property
    def walls(self) -> Walls:
        """The cache's folders, opened without following links (the store's)."""
        return self._store.walls

    def lease_path(self, key: str) -> Path:
        """The lease file of entry `key` (the store's)."""
        return self._store.lease_path(key)

    def pending_path(self, key: str) -> Path:
        """The marker held while a Hub download of `key` runs (the store's)."""
        return self._store.pending_path(key)

    def __repr__(self) -> str:
        return f"CacheManager(cache_dir={str(self.cache_dir)!r}, max_size={self.max_size})"
