"""From what a user typed to one cache entry: a full key, a name, or a unique prefix of a key.

In that order: an exact key wins, then an exact name, then a key prefix. A name shared by
an imported (or stored) entry and a Hub repo means the imported one: a sideload under a
repo's name overrides the download, as a local image does in docker. Two stored entries,
or two Hub repos, sharing a name are ambiguous, and so is a prefix of two keys: both raise
`AmbiguousNameError` listing the candidates, never a silent pick.

Prefixes apply to the 64-hex keys provender generates (``cache ls`` prints their first 12
characters) and need at least 4 characters, as in git; a key a caller chose itself is
matched whole, so ``remove("model-v1")`` can never remove ``model-v10``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol, TypeAlias

from provender.errors import AmbiguousNameError

if TYPE_CHECKING:
    from provender._cache._index import IndexRow

MIN_PREFIX = 4
_PREFIX = re.compile(rf"[0-9a-f]{{{MIN_PREFIX},63}}")
_HEX_KEY = re.compile(r"[0-9a-f]{64}")

Row: TypeAlias = "IndexRow"


def short_key(key: str) -> str:
    """How `cache ls` shows a key: the first 12 characters of a generated key, a caller's key whole."""
    return key[:12] if _HEX_KEY.fullmatch(key) else key


def describe(row: Row) -> str:
    """One candidate, as an AmbiguousNameError lists it."""
    from provender._sizes import format_size

    return f"{row['name']} ({row['kind']}, {format_size(row['size'])})"


class Rows(Protocol):
    """What `resolve` reads: the cache index (`provender._cache._index.Index`)."""

    def get(self, key: str) -> Row | None: ...
    def by_name(self, name: str) -> list[Row]: ...
    def all(self) -> list[Row]: ...


def resolve(index: Rows, query: str) -> Row | None:
    """The index row ``query`` designates, or None; raises AmbiguousNameError if it designates several."""
    row = index.get(query)
    if row is not None:
        return row
    named = index.by_name(query)
    if named:
        stored = [r for r in named if r["kind"] != "hub"]
        pick = stored or named
        if len(pick) > 1:
            raise AmbiguousNameError(query, _candidates(pick))
        return pick[0]
    if not _PREFIX.fullmatch(query):
        return None
    matches = [r for r in index.all() if _HEX_KEY.fullmatch(r["key"]) and r["key"].startswith(query)]
    if len(matches) > 1:
        raise AmbiguousNameError(query, _candidates(matches), what="key prefix")
    return matches[0] if matches else None


def _candidates(rows: list[Row]) -> list[tuple[str, str]]:
    return [(r["key"], describe(r)) for r in sorted(rows, key=lambda r: (r["name"], r["key"]))]
