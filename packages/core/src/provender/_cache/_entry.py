"""What the cache reports: entries, stats and verify issues (the cache's public data types).

Nothing here reaches above the cache: the plugin layer's hook specs and the CLI use
these types, never the other way round.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, TypeAlias, TypedDict

EntryKind = Literal["hub", "local", "path", "prompt"]
"""A Hub repo in huggingface_hub's layout, an entry provender stored (import, cache_model), a
model directory named by path (``-m ./dir``: described as an entry for the claim hook, not cached),
or a saved prompt cache (``objects/<key>/`` like a stored entry: a runtime's KV state for exact
tokens of one model; see `provender._cache._prompts`)."""


def _iso(ts: float | None) -> str | None:
    return None if ts is None else _dt.datetime.fromtimestamp(ts, tz=_dt.UTC).isoformat()


def model_path_of(root: Path, kind: str, metadata: dict[str, Any]) -> Path:
    """Where an entry's model files are: a Hub repo's snapshot, or the stored file or directory."""
    if kind == "hub":
        from provender._cache._hub import snapshot_path

        return snapshot_path(root, metadata.get("revision")) or root
    filename = metadata.get("filename")
    return root / filename if filename else root


@dataclass(frozen=True)
class CacheEntry:
    """One entry of the shared cache: a Hub repo (``kind="hub"``) or an entry provender stored (``"local"``).

    ``path`` is the entry's root on disk; ``model_path`` is where its model files are
    (a Hub repo's current snapshot, an imported directory, or a single cached file).
    """

    key: str
    name: str
    kind: EntryKind
    path: Path
    size: int
    created: float
    last_used: float | None = None
    hits: int = 0
    pinned: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def model_path(self) -> Path:
        # worked out once per entry object: every claim hook asks for it (a Hub repo's ref is read)
        return model_path_of(self.path, self.kind, self.metadata)

    @property
    def repo_type(self) -> str:
        return str(self.metadata.get("repo_type", "model"))

    def to_dict(self, providers: list[str] | None = None) -> dict[str, Any]:
        """The JSON row of `provender cache ls --json`."""
        return {
            "key": self.key,
            "name": self.name,
            "kind": self.kind,
            "size": self.size,
            "last_used": _iso(self.last_used),
            "created": _iso(self.created),
            "hits": self.hits,
            "providers": providers if providers is not None else [],
            "path": str(self.path),
            "model_path": str(self.model_path),
            "pinned": self.pinned,
        }


@dataclass(frozen=True)
class CacheStats:
    """Persistent counters plus the current totals (`provender cache stats`)."""

    hits: int
    misses: int
    evictions: int
    bytes_evicted: int
    entries: int
    size: int
    max_size: int
    pinned: int
    cache_dir: Path
    remote_hits: int = 0  # misses served by the remote tier (remote.url)
    remote_misses: int = 0  # misses the remote tier did not have either
    bytes_from_remote: int = 0
    remote_errors: int = 0  # the tier unreachable, too slow or corrupt (the Hub served instead)

    @property
    def hit_rate(self) -> float | None:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hit_rate,
            "evictions": self.evictions,
            "bytes_evicted": self.bytes_evicted,
            "entries": self.entries,
            "size": self.size,
            "max_size": self.max_size,
            "pinned": self.pinned,
            "cache_dir": str(self.cache_dir),
            "remote_hits": self.remote_hits,
            "remote_misses": self.remote_misses,
            "bytes_from_remote": self.bytes_from_remote,
            "remote_errors": self.remote_errors,
        }


@dataclass(frozen=True)
class VerifyIssue:
    """One problem `verify` found; ``fixed`` says whether `--fix` dealt with it."""

    key: str
    name: str
    path: Path
    problem: str
    fixed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "path": str(self.path),
            "problem": self.problem,
            "fixed": self.fixed,
        }


#: `PullOptions.progress`: bars or none, or a callable told (bytes so far, bytes in all)
Progress: TypeAlias = bool | Callable[[int, int], object]


class PullOptions(TypedDict, total=False):
    """The keyword options of `CacheManager.pull` and `CacheManager.fetch` (each optional).

    ``revision``: a branch, tag or commit (default ``main``). ``repo_type``: ``model`` (default),
    ``dataset`` or ``space``. ``allow_patterns`` / ``ignore_patterns``: glob patterns (or one) of
    the files to get, as huggingface_hub takes them (a partial download). ``progress``: show
    progress bars (default True); a callable instead is told ``(bytes so far, bytes in all)`` as
    the bytes arrive, with no bar: the remote tier's at the start and after each chunk, the Hub's
    at the start (what is cached already) and as each file's bytes are written (`_fetch.hub_progress`).
    ``endpoint``: a Hub mirror (default ``HF_ENDPOINT``).
    """

    revision: str | None
    repo_type: str
    allow_patterns: list[str] | str | None
    ignore_patterns: list[str] | str | None
    progress: Progress
    endpoint: str | None


PullSource = Literal["cache", "remote", "hub"]


@dataclass(frozen=True)
class PullResult:
    """What `CacheManager.pull` did: the entry, and where its bytes came from.

    ``source``: ``cache`` (nothing downloaded), ``remote`` (the remote tier), ``hub`` (the Hub,
    or a mirror). ``pushed``: the download was written through to the remote tier. ``warnings``:
    what went wrong on the way without failing the pull (the tier unreachable or corrupt...).
    """

    entry: CacheEntry
    source: PullSource
    bytes_from_remote: int = 0
    bytes_from_hub: int = 0
    pushed: bool = False
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.entry.key,
            "name": self.entry.name,
            "source": self.source,
            "bytes_from_remote": self.bytes_from_remote,
            "bytes_from_hub": self.bytes_from_hub,
            "pushed": self.pushed,
            "warnings": list(self.warnings),
            "path": str(self.entry.model_path),
        }


@dataclass(frozen=True)
class PushResult:
    """What `CacheManager.push` did: files of the entry, how many blobs were uploaded and how many were there."""

    entry: CacheEntry
    url: str
    files: int
    uploaded: int
    bytes_uploaded: int
    already_there: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.entry.key,
            "name": self.entry.name,
            "url": self.url,
            "files": self.files,
            "uploaded": self.uploaded,
            "bytes_uploaded": self.bytes_uploaded,
            "already_there": self.already_there,
        }
