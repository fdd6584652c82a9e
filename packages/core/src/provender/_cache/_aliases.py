"""Aliases: more names for a cache entry (what Ollama's ``/api/copy`` and ``provender cache alias`` make).

An alias is a name that resolves to an entry by its key; it holds no files. They live in one
small file, ``<cache.dir>/aliases.json``, outside the index, so an index rebuilt from the files
(a corrupt ``index.db`` set aside) keeps them::

    {"version": 1, "aliases": {"my-echo": {"key": "<64 hex>", "name": "test/echo", "created": 1764...}}}

The file is rewritten whole under the cache's lock: staged in ``tmp/`` (`Store.staging`, cleaned
after a crash), flushed, then renamed over the old one in one step, so a reader sees the old set or
the new one. It is read without following a link (a planted link there is refused); a file that
cannot be parsed is a warning and reads as no aliases (it is replaced on the next change).

Rules (docs/cache.md, "Aliases"):

- an alias is a model name (``org/name`` or ``name``) with an optional ``:tag``; ``:latest`` is
  dropped, as Ollama does. A name an entry has, a key, or something that reads as a key prefix
  cannot be an alias;
- a name or key of an entry always wins over an alias (lookups try them first);
- removing an alias removes only the alias; removing an entry that aliases point at is refused
  until they are removed (`CacheManager.remove`), so no alias silently loses its model. An
  evicted entry's aliases stay and resolve again once the entry is pulled back (same key).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from provender._cache._layout import link_error
from provender._cache._names import check_name
from provender.errors import EntryExistsError, EntryInUseError, EntryNotFoundError, InvalidNameError

if TYPE_CHECKING:
    from provender._cache._entry import CacheEntry
    from provender._cache._store import Store

logger = logging.getLogger(__name__)

FILE = "aliases.json"
VERSION = 1
MAX_FILE = 1 << 20  # a bigger aliases file is not ours
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_HEXISH = re.compile(r"[0-9a-f]{4,64}")


@dataclass(frozen=True)
class Alias:
    """One alias: its own name, the key of the entry it names, that entry's name when it was made."""

    alias: str
    key: str
    name: str
    created: float


def check_alias(name: str) -> str:
    """`name` as an alias is stored (``:latest`` dropped), or InvalidNameError."""
    if not isinstance(name, str) or not name:
        raise InvalidNameError(str(name), "an alias cannot be empty")
    name = name.removesuffix(":latest")
    base, sep, tag = name.partition(":")
    check_name(base)
    if sep and not _TAG.fullmatch(tag):
        raise InvalidNameError(name, "a tag is ASCII letters, digits, '.', '_' or '-', after one ':'")
    if _HEXISH.fullmatch(name):
        raise InvalidNameError(name, "4 to 64 hex digits read as a cache key; pick another alias")
    return name


class Aliases:
    """The aliases of one cache (its `Store`): read any time, changed under the store's lock."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.damaged = False  # the last read found a file it could not read: set it aside before writing

    def read(self) -> dict[str, Alias]:
        """Every alias, by its name (none when the file is absent or unreadable)."""
        store = self.store
        store.walls.check()
        with store.walls.open(".") as root:
            try:
                fd = os.open(FILE, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0), dir_fd=root)
            except FileNotFoundError:
                return {}
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise link_error(store.cache_dir / FILE, "file") from None
                raise
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_FILE + 1)
        self.damaged = False
        try:
            if len(data) > MAX_FILE:
                raise ValueError(f"larger than {MAX_FILE} bytes")
            raw = json.loads(data)
            if not isinstance(raw, dict) or not isinstance(raw.get("aliases"), dict):
                raise ValueError("no 'aliases' object")
            out: dict[str, Alias] = {}
            for alias, row in raw["aliases"].items():
                if isinstance(row, dict) and isinstance(row.get("key"), str):
                    out[alias] = Alias(alias, row["key"], str(row.get("name") or ""), float(row.get("created") or 0))
            return out
        except (ValueError, TypeError) as exc:
            logger.warning("ignoring %s: it cannot be read as provender's aliases (%s)", store.cache_dir / FILE, exc)
            self.damaged = True
            return {}

    def get(self, name: str) -> Alias | None:
        """The alias `name` (``:latest`` dropped), or None."""
        if not isinstance(name, str) or not name:
            return None
        found = self.read()
        return found.get(name) or found.get(name.removesuffix(":latest"))

    def pointing_at(self, key: str) -> list[str]:
        """The aliases of the entry `key`, sorted."""
        return sorted(a.alias for a in self.read().values() if a.key == key)

    def write(self, aliases: dict[str, Alias]) -> None:
        """Replace the file with `aliases` in one rename. Call under the store's lock."""
        from provender._cache._fsops import fs_errors, fsync_dir

        store = self.store
        body: dict[str, Any] = {
            "version": VERSION,
            "aliases": {
                a.alias: {"key": a.key, "name": a.name, "created": a.created} for a in sorted(aliases.values(), key=_by)
            },
        }
        with fs_errors(store.cache_dir), store.staging() as stage:
            os.mkdir(stage)
            staged = stage / FILE
            with open(staged, "w", encoding="utf-8") as f:
                json.dump(body, f, indent=1, sort_keys=True)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            if self.damaged:  # kept for its owner, as a corrupt index is: never overwritten
                aside = store.cache_dir / f"{FILE}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}"
                store.walls.rename(store.cache_dir / FILE, aside)
                logger.warning("set the unreadable %s aside as %s", FILE, aside.name)
                self.damaged = False
            store.walls.rename(staged, store.cache_dir / FILE)  # a link there is replaced, never followed
            fsync_dir(store.walls.here())

    def add(self, alias: str, key: str, name: str) -> Alias:
        """Make (or move) `alias` to the entry `key` named `name`. Call under the store's lock."""
        found = self.read()
        made = Alias(alias, key, name, time.time())
        found[alias] = made
        self.write(found)
        return made

    def drop(self, alias: str) -> Alias | None:
        """Remove `alias`; returns it, or None if there was none. Call under the store's lock."""
        found = self.read()
        gone = found.pop(alias, None)
        if gone is not None:
            self.write(found)
        return gone


def _by(alias: Alias) -> str:
    return alias.alias


class Finder(Protocol):
    """What `AliasBook` looks entries up with (the manager's `Catalog`)."""

    def find(self, name_or_key: str) -> CacheEntry | None: ...
    def get(self, name_or_key: str) -> CacheEntry: ...


class AliasBook:
    """The manager's alias verbs (`CacheManager.alias`, `unalias`, `aliases`, and `remove`'s rule)."""

    def __init__(self, store: Store, catalog: Finder) -> None:
        self.store, self.catalog, self.file = store, catalog, Aliases(store)

    def make(self, source: str, alias: str) -> CacheEntry:
        alias = check_alias(alias)
        with self.store.lock:
            entry = self.catalog.get(source)
            named = self.store.index.get(alias) or self.store.index.by_name(alias)
            if named:
                raise EntryExistsError(alias)
            if alias == entry.name:
                raise EntryExistsError(alias)
            self.file.add(alias, entry.key, entry.name)
        return entry

    def unmake(self, alias: str) -> str:
        with self.store.lock:
            gone = self.file.drop(alias) or self.file.drop(alias.removesuffix(":latest"))
        if gone is None:
            raise EntryNotFoundError(alias)
        return gone.key

    def resolved(self) -> dict[str, CacheEntry]:
        out: dict[str, CacheEntry] = {}
        index = self.store.index
        for alias in self.file.read().values():
            row = index.get(alias.key)
            if row is not None:
                out[alias.alias] = self.store.entry(row)
        return out

    def only_alias(self, name: str, entry: CacheEntry, *, dry_run: bool) -> bool:
        """`remove(name)` of `entry`, under the lock: True when `name` is an alias of it (dropped unless
        `dry_run`); else EntryInUseError if aliases name the entry; else False (remove the entry)."""
        if name not in (entry.name, entry.key):
            alias = self.file.get(name)
            if alias is not None and alias.key == entry.key:
                if not dry_run:
                    self.file.drop(alias.alias)
                return True
        pointing = self.file.pointing_at(entry.key)
        if pointing:
            shown = ", ".join(pointing)
            raise EntryInUseError(
                entry.name, f"aliases name it ({shown}); remove them first (`provender cache rm {pointing[0]}`)"
            )
        return False
