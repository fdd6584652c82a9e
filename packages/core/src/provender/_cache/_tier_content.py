"""What a remote tier's manifests may say: each field they hold, checked before it is used.

A tier is shared by a fleet and written by any of its machines, so its content is not trusted:
a size of ``10**400`` (or one past what any filesystem holds), a ``pushed_at`` of ``1e300``, a
path longer than a filesystem takes, a newline in a name (which would forge a row of
``provender remote ls``) are each a `ValueError` here. The callers turn it into a warning: a
listing skips that manifest and lists the rest, a pull falls back to the Hub.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # a cache key (`provender._cache._names.check_key`)
MAX_FILE_SIZE = (1 << 63) - 1  # no filesystem holds a larger file (off_t): a manifest that says more is not valid
MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z, the last instant a datetime can show
MAX_TEXT = 300  # characters of a name, kind or revision in a listing
MAX_PATH = 1024  # bytes of a file's path inside a repo (macOS's PATH_MAX; Linux takes 4096 for the whole path)
MAX_PART = 255  # bytes of one name in a path: the longest a filesystem takes


def text(value: object, what: str) -> str:
    """A name, kind or revision to show: printable and short, else ValueError."""
    shown = str(value)
    if len(shown) > MAX_TEXT or not shown.isprintable():
        raise ValueError(f"its {what} {shown[:60]!r} is not printable text of at most {MAX_TEXT} characters")
    return shown


def file_size(value: object) -> int:
    """A file's size: an integer from 0 to the largest a filesystem holds, else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_FILE_SIZE:
        big = isinstance(value, int) and value.bit_length() > 64
        shown = f"of {value.bit_length()} bits" if isinstance(value, int) and big else repr(value)[:40]
        raise ValueError(f"size {shown} is not a file size")
    return value


def timestamp(value: object) -> float:
    """A ``pushed_at``: seconds since 1970 that a date can show, else ValueError (1e300, NaN, "yesterday")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_TIME:
        raise ValueError(f"pushed_at {repr(value)[:40]} is not a time")
    return float(value)


def safe_path(rel: object) -> str:
    """A file's path inside its folder: relative, no ``..``, no empty part, short enough for a filesystem."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\0" in rel:
        raise ValueError(f"bad path {repr(rel)[:80]}")
    parts = rel.split("/")  # not PurePosixPath: it would quietly drop "." and empty parts
    if (
        any(p in ("", ".", "..") or len(p.encode("utf-8", "surrogatepass")) > MAX_PART for p in parts)
        or len(rel.encode("utf-8", "surrogatepass")) > MAX_PATH
        or parts[0].startswith(".provender-entry")
    ):
        raise ValueError(f"bad path {rel[:80]!r}{'...' if len(rel) > 80 else ''}")
    return rel


def _iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, tz=_dt.UTC).isoformat()


@dataclass(frozen=True)
class RemoteEntry:
    """One entry the tier holds (its newest snapshot): what `provender remote ls` lists."""

    key: str
    name: str
    kind: str
    revision: str | None
    files: int
    size: int
    pushed_at: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON row of `provender remote ls --json` (``pushed_at`` in ISO 8601)."""
        return {
            "key": self.key,
            "name": self.name,
            "kind": self.kind,
            "revision": self.revision,
            "files": self.files,
            "size": self.size,
            "pushed_at": _iso(self.pushed_at),
        }


def rank(entry: RemoteEntry) -> tuple[float, bool, bool]:
    """Which ref of an entry `entries` shows: the newest snapshot; then a whole one before a partial
    one, a branch or tag (``main``) before a commit hash."""
    revision = entry.revision or ""
    return entry.pushed_at, "@" not in revision, not re.fullmatch(r"[0-9a-f]{40}", revision)


def listed_entry(key: str, ref: str, manifest: dict[str, Any]) -> RemoteEntry:
    """The `RemoteEntry` a manifest describes, every field checked (ValueError or TypeError if one is not valid)."""
    if not KEY.fullmatch(key):
        raise ValueError(f"the key {key[:80]!r} is not a cache key")
    files = manifest["files"]
    local = manifest.get("kind") == "local"
    return RemoteEntry(
        key=key,
        name=text(manifest.get("name") or key, "name"),
        kind=text(manifest.get("kind", "hub"), "kind"),
        revision=None if local else text(unquote(ref), "revision"),
        files=len(files),
        size=sum(file_size(f["size"]) for f in files),
        pushed_at=timestamp(manifest.get("pushed_at", 0.0)),
    )
