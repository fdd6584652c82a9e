"""Eviction and removal as plans: what would go, what is kept and why, carried out apart.

`plan_eviction` is a pure function of the entries (least recently used first), the limit
and what is protected; `plan_removal` likewise for one entry someone asked to remove. The
`Evictor` carries plans out on a `Store` (`CacheManager.prune`, `remove`, and the eviction
after every add) and dry runs only show them (`CacheManager.plan_eviction`, ``remove(...,
dry_run=True)``), so ``--dry-run`` and the real command can never disagree about what is
evicted, kept or left over the limit.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from provender import _wiring
from provender._cache._entry import CacheEntry

if TYPE_CHECKING:
    from provender._cache._store import Store

logger = logging.getLogger(__name__)

BEING_ADDED = "being added"
PINNED = "pinned"
IN_USE = "in use by a running process"
ONLY_COPY = "the cache holds its only copy"
ORIGIN = "origin"  # an imported entry's metadata: where it came from ({"path": ..., "moved": bool})


def only_copy(entry: CacheEntry) -> str | None:
    """Why the cache cannot get `entry` back once evicted, or None if it can.

    An imported entry (``cache import``) whose files were moved in (``--move``), or whose source no
    longer exists (deleted, or a drive not mounted), is the only copy there is: eviction passes over
    it (`plan_eviction`), as over a pinned one; `remove` still removes it. A Hub repo can be
    downloaded again, an entry pulled from the remote tier pulled again, and an entry stored with
    `cache_model` is a cache of what its caller can make again: none of those is kept.
    """
    origin = entry.metadata.get(ORIGIN) if entry.kind == "local" else None
    if not isinstance(origin, dict):
        return None
    if origin.get("moved"):
        return f"{ONLY_COPY} (imported with --move)"
    source = origin.get("path")
    if isinstance(source, str) and source and not os.path.lexists(source):
        return f"{ONLY_COPY} (its source {source} no longer exists)"
    return None


@dataclass(frozen=True)
class EvictionPlan:
    """What evicting down to ``limit`` does: ``evict`` goes (oldest first), ``kept`` stays and why.

    ``kept`` lists the entries eviction had to pass over (pinned, in use, being added),
    not those that stay because the cache fits once the rest has gone.
    """

    limit: int
    total: int
    evict: tuple[CacheEntry, ...] = ()
    kept: tuple[tuple[CacheEntry, str], ...] = ()

    @property
    def freed(self) -> int:
        """Bytes the evicted entries held."""
        return sum(e.size for e in self.evict)

    @property
    def after(self) -> int:
        """The cache's size once the plan is carried out."""
        return self.total - self.freed

    @property
    def fits(self) -> bool:
        """True if the cache is within its limit once the plan is carried out."""
        return self.after <= self.limit

    @property
    def over(self) -> int:
        """Bytes over the limit that nothing can free (0 if it fits)."""
        return max(0, self.after - self.limit)


def plan_eviction(
    entries: Sequence[CacheEntry],
    limit: int,
    *,
    protected: Collection[str] = (),
    pinned: Collection[str] = (),
    in_use: Callable[[str], bool] | Collection[str] = (),
    prompt_limit: int | None = None,
) -> EvictionPlan:
    """Plan LRU eviction of ``entries`` (least recently used first) down to ``limit`` bytes.

    Saved prompt caches (kind ``prompt``) go before any model, least recently used first among
    them: they are recomputed from the model in seconds. With ``prompt_limit`` (their own budget,
    ``cache.prompt_cache_max_size``), they also go down to it first, whatever the total. Entries
    whose key is in ``protected`` (the one being added) or ``pinned``, the cache's only copy of a
    model (`only_copy`), and entries for which ``in_use(key)`` is true are kept; ``in_use`` is
    asked only about entries that would otherwise go. Nothing is touched: the plan only says what
    would happen.
    """
    if limit < 0:
        raise ValueError(f"a size limit cannot be negative: {limit}")
    held = in_use if callable(in_use) else in_use.__contains__

    def why_kept(entry: CacheEntry) -> str | None:
        if entry.key in protected:
            return BEING_ADDED
        if entry.key in pinned:
            return PINNED
        if (why := only_copy(entry)) is not None:
            return why
        return IN_USE if held(entry.key) else None

    entries = sorted(entries, key=lambda e: e.kind != "prompt")  # stable: LRU order within each group
    total = sum(e.size for e in entries)
    remaining = total
    evict: list[CacheEntry] = []
    kept: dict[str, tuple[CacheEntry, str]] = {}
    if prompt_limit is not None:
        prompts = sum(e.size for e in entries if e.kind == "prompt")
        for entry in (e for e in entries if e.kind == "prompt"):
            if prompts <= prompt_limit:
                break
            if (why := why_kept(entry)) is not None:
                kept[entry.key] = (entry, why)
                continue
            evict.append(entry)
            prompts -= entry.size
            remaining -= entry.size
    gone = {e.key for e in evict}
    for entry in entries:
        if remaining <= limit:
            break
        if entry.key in gone or entry.key in kept:
            continue
        if (why := why_kept(entry)) is not None:
            kept[entry.key] = (entry, why)
        else:
            evict.append(entry)
            remaining -= entry.size
    return EvictionPlan(limit=limit, total=total, evict=tuple(evict), kept=tuple(kept.values()))


def warn_if_over(plan: EvictionPlan) -> None:
    """Log that the cache stays over its limit after `plan`, naming what stands in the way (once, by
    whoever carried it out: a pull, an import, the server's loads)."""
    if not plan.fits:
        logger.warning(
            "cache is over its limit after eviction (%d > %d bytes): %s", plan.after, plan.limit, kept_line(plan)
        )


def kept_line(plan: EvictionPlan, most: int = 3) -> str:
    """What eviction passed over, and why, in one line: ``kept me/ft (the cache holds its only copy ...)``."""
    kept = [(e, why) for e, why in plan.kept if why != BEING_ADDED]
    if not kept:
        return "nothing else can go"
    said = "; ".join(f"{e.name} ({why})" for e, why in kept[:most])
    more = f"; and {len(kept) - most} more" if len(kept) > most else ""
    hint = ""
    if any(why.startswith(ONLY_COPY) for _e, why in kept):
        hint = " (`provender cache rm NAME` removes an only copy; or raise cache.max_size)"
    return f"kept {said}{more}{hint}"


REMOVE_PINNED = "it is pinned (run `provender cache unpin` first)"
REMOVE_IN_USE = "a running process is using it"


@dataclass(frozen=True)
class RemovalPlan:
    """Removing one entry: ``entry`` goes, unless ``refused`` says why not (pinned, in use)."""

    entry: CacheEntry
    refused: str | None = None


def plan_removal(
    entry: CacheEntry, *, pinned: Collection[str], in_use: Callable[[str], bool] | Collection[str] = ()
) -> RemovalPlan:
    """Plan the removal of `entry`: refused while it is pinned or held by a live process. Touches nothing."""
    held = in_use if callable(in_use) else in_use.__contains__
    if entry.key in pinned:
        return RemovalPlan(entry, REMOVE_PINNED)
    if held(entry.key):
        return RemovalPlan(entry, REMOVE_IN_USE)
    return RemovalPlan(entry)


class Evictor:
    """Carries eviction and removal plans out on a `Store`, and tells the listeners what went.

    ``on_evicted(entry)`` is the cache user's listener; the plugins' ``provender_cache_evicted``
    hook is reached through `provender._wiring`. Listeners are told after the lock is released.
    """

    def __init__(self, store: Store, on_evicted: Callable[[CacheEntry], None] | None = None) -> None:
        self.store = store
        self.on_evicted = on_evicted

    def plan(self, limit: int) -> EvictionPlan:
        """What evicting down to `limit` would do now (call under the lock, after a reconcile)."""
        store = self.store
        return plan_eviction(
            store.lru_entries(),
            limit,
            pinned=store.pinned_keys(),
            in_use=store.held,
            prompt_limit=store.prompt_max_size,
        )

    def carry_out(self, limit: int, protect: set[str]) -> EvictionPlan:
        """Plan eviction down to `limit` (and the saved prompt caches down to their budget,
        ``cache.prompt_cache_max_size``) and carry it out. Call under the cache lock, after a
        reconcile. An entry that a process took hold of since the plan was made is kept, and the
        plan made again.
        """
        store = self.store
        index = store.index
        total = index.total_size()
        if total <= limit and index.total_size(kind="prompt") <= store.prompt_max_size:
            return EvictionPlan(limit=limit, total=total)  # the common case after an add: two queries, no listing
        busy: set[str] = set()
        evicted: list[CacheEntry] = []
        while True:
            plan = plan_eviction(
                store.lru_entries(),
                limit,
                protected=protect,
                pinned=store.pinned_keys(),
                in_use=busy,
                prompt_limit=store.prompt_max_size,
            )
            for entry in plan.evict:
                if not store.try_remove(entry, evicted=True):
                    busy.add(entry.key)
                    break
                evicted.append(entry)
            else:
                kept = tuple((e, IN_USE if e.key in busy else why) for e, why in plan.kept)
                return EvictionPlan(limit=limit, total=total, evict=tuple(evicted), kept=kept)

    def evict(self, protect: set[str]) -> list[CacheEntry]:
        """Evict the saved prompt caches down to their budget and everything down to the store's
        limit (prompt caches first), never what is in `protect`; warns if still over. Under the lock."""
        plan = self.carry_out(self.store.max_size, protect)
        warn_if_over(plan)
        return list(plan.evict)

    def remove(self, plan: RemovalPlan, *, dry_run: bool = False) -> bool:
        """Carry out a removal plan (not a refused one). Call under the lock. False if a process took
        hold of the entry since the plan was made."""
        assert plan.refused is None, plan.refused
        return self.store.try_remove(plan.entry, dry_run=dry_run)

    def after_release(self, key: str) -> None:
        """After a lease on `key` ends: if an eviction passed over it while held, that eviction happens now."""
        store = self.store
        flag = f"deferred:{key}"
        try:
            if store.index.get_meta(flag) is None:
                return  # no eviction waited on this entry: a release alone evicts nothing
            with store.lock:
                store.index.write(lambda con: con.execute("DELETE FROM meta WHERE name=?", (flag,)), soft=True)
                evicted = self.evict(protect=set())
        except Exception as exc:  # releasing must never fail because of housekeeping
            logger.warning("eviction after a release failed: %s", exc)
            return
        self.notify(evicted)

    def notify(self, entries: list[CacheEntry]) -> None:
        """Tell the listeners handed down from above (the plugins' hook) and ``on_evicted``."""
        if entries:
            _wiring.notify_evicted(entries, self.on_evicted)
