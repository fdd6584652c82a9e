"""Up, from the local cache to the remote tier: `push_entry` (``cm.push``) and `write_through` (after a Hub
download or an import; a failure is a warning). Both take the tier and the entry; `write_through` also
the index, to count a failure.

The entry's files are hashed (a local blob that does not match its Hub etag is refused, never
uploaded), the blobs the tier lacks are uploaded a few at a time (content-addressed: a blob
shared by two repos or revisions is stored once), then the snapshot's manifest, then its refs,
so a manifest never names a blob the tier lacks (see `provender._cache._remote` for the layout).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provender._cache import _hub
from provender._cache._entry import CacheEntry, PushResult
from provender._cache._eviction import ORIGIN
from provender._cache._remote import RemoteTier, ref_name
from provender._cache._repair import scan_files
from provender._cache._tier_sync import HEX64, count, patterns_of, run_all
from provender.errors import CacheError, RemoteNotConfiguredError

if TYPE_CHECKING:
    from provender._cache._index import Index

logger = logging.getLogger(__name__)


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _hub_files(entry: CacheEntry, revision: str | None) -> tuple[str, list[dict[str, Any]], dict[str, Path]]:
    """(commit, files, local blob of each sha256) of a Hub entry's snapshot."""
    snapshot = _hub.snapshot_path(entry.path, revision)
    if snapshot is None:
        raise CacheError(f"{entry.name}: no snapshot{f' for revision {revision}' if revision else ''} in the cache")
    files: list[dict[str, Any]] = []
    local: dict[str, Path] = {}
    hashed: dict[Path, str] = {}
    for root, _dirs, names in os.walk(snapshot):
        for fname in sorted(names):
            path = Path(root, fname)
            rel = path.relative_to(snapshot).as_posix()
            if path.is_symlink():
                blob = _hub.link_target(entry.path, path)
                if blob is None or not blob.is_file():
                    raise CacheError(f"{entry.name}: {rel} is not a complete file (run `provender cache verify`)")
                etag: str | None = blob.name
            else:
                blob, etag = path, None
            if blob not in hashed:
                hashed[blob] = _sha256_file(blob)
            sha = hashed[blob]
            if etag is not None and HEX64.fullmatch(etag) and etag != sha:
                raise CacheError(f"{entry.name}: {rel} is corrupt in this cache (run `provender cache verify --fix`)")
            files.append({"path": rel, "size": blob.stat().st_size, "sha256": sha, "etag": etag or sha})
            local[sha] = blob
    return snapshot.name, sorted(files, key=lambda f: f["path"]), local


def push_entry(
    tier: RemoteTier | None,
    entry: CacheEntry,
    *,
    progress: bool | Callable[[int], object] = False,
    revision: str | None = None,
    patterns: dict[str, Any] | None = None,
    force: frozenset[str] = frozenset(),
) -> PushResult:
    """Upload `entry` to the tier: missing blobs (and those in `force`, found corrupt there), then
    its manifest, then its refs. Raises RemoteNotConfiguredError without a (writable) tier.

    ``progress``: a callable is told each blob's size once it is uploaded or found there already
    (a progress bar sized to the entry reaches its end); True logs each upload."""
    if tier is None:
        raise RemoteNotConfiguredError()
    tier.check_writable()
    if entry.kind == "hub":
        meta = entry.metadata
        revision = revision or meta.get("revision")
        if patterns is None:
            patterns = patterns_of(meta.get("allow_patterns"), meta.get("ignore_patterns"))
        commit, files, local = _hub_files(entry, revision)
        rev = revision or "main"
        manifest: dict[str, Any] = {
            "key": entry.key,
            "name": entry.name,
            "kind": "hub",
            "repo_id": meta.get("repo_id", entry.name),
            "repo_type": entry.repo_type,
            "commit": commit,
            "revision": rev,
            "patterns": patterns,
            "files": files,
        }
        refs = [ref_name(rev, patterns)] + ([ref_name(commit, patterns)] if commit != rev else [])
    elif entry.kind == "local":
        files, local = [], {}
        for rel in scan_files(entry.path):
            path = entry.path / rel
            sha = _sha256_file(path)
            files.append({"path": Path(rel).as_posix(), "size": path.stat().st_size, "sha256": sha, "etag": None})
            local[sha] = path
        manifest = {
            "key": entry.key,
            "name": entry.name,
            "kind": "local",
            "filename": entry.metadata.get("filename"),
            "metadata": {k: v for k, v in entry.metadata.items() if k not in ("filename", ORIGIN)},  # not a local path
            "files": files,
        }
        refs = ["latest"]
    else:
        raise CacheError(f"{entry.name}: only cache entries can be pushed")
    lock = threading.Lock()

    def one(sha: str, path: Path) -> int:
        """Upload one blob unless the tier has it; returns the bytes uploaded (0: it was there)."""
        size = path.stat().st_size
        sent = 0
        if sha in force or not tier.has_blob(sha, size):
            tier.put_blob(str(path), sha)
            sent = size
            logger.log(logging.INFO if progress else logging.DEBUG, "uploaded %s (%d bytes)", path.name, size)
        if callable(progress):
            with lock:
                progress(size)
        return sent

    sent = run_all(lambda item: one(*item), list(local.items()))  # Ctrl-C stops it at once; no manifest then
    uploaded, nbytes = sum(1 for n in sent if n), sum(sent)
    there = len(sent) - uploaded
    tier.put_manifest(manifest, refs)  # last: a manifest never names a blob the tier lacks
    return PushResult(entry, tier.url, len(files), uploaded, nbytes, there)


def write_through(
    tier: RemoteTier,
    index: Index,
    entry: CacheEntry,
    *,
    revision: str | None = None,
    patterns: dict[str, Any] | None = None,
    force: frozenset[str] = frozenset(),
) -> str | None:
    """`push_entry`, where a failure is a warning (returned, and logged), never an error."""
    try:
        result = push_entry(tier, entry, revision=revision, patterns=patterns, force=force)
    except (CacheError, OSError) as exc:
        count(index, remote_errors=1)
        message = f"could not write {entry.name} through to the remote tier: {exc}"
        logger.warning("%s", message)
        return message
    logger.info(
        "%s written through to %s: %d blobs uploaded, %d there already",
        entry.name,
        result.url,
        result.uploaded,
        result.already_there,
    )
    return None
