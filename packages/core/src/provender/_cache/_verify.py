"""`verify`: re-hash what has a known checksum, report corruption, and with ``fix`` drop it.

Hub repos: an LFS blob is named by the sha256 of its content, a regular git file by
its git blob sha1; snapshot links must point at existing blobs. Entries provender
stores: files must match the manifest's sizes; a file's sha256 is recorded the first
time it is verified (imports are zero-copy, so hashing waits until asked) and
checked on every later verify.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provender._cache._entry import VerifyIssue
from provender._cache._hub import fix_repo, verify_repo
from provender._cache._locks import LeaseLock
from provender._cache._names import within
from provender._cache._repair import (
    MANIFEST,
    load_manifest,
    record,
    repair_entry,
    row_from_manifest,
    take_findings,
    write_manifest,
)

if TYPE_CHECKING:
    from provender._cache._entry import CacheEntry
    from provender._cache._store import Store
    from provender._cache._sync import Catalog

logger = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHA1 = re.compile(r"[0-9a-f]{40}")
Progress = Callable[[int], None]


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def git_blob_sha1(path: Path) -> str:
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_cache(
    catalog: Catalog, remove: Callable[[str], object], *, fix: bool, progress: Progress | None
) -> list[VerifyIssue]:
    """Check every entry of `catalog`; `progress(bytes)` is called as content is read.

    With `fix`, a corrupt stored entry is dropped with `remove(key)` (the cache's own `remove`:
    refused while pinned or in use)."""
    store = catalog.store
    issues: list[VerifyIssue] = []
    for entry in catalog.entries(sort="name"):
        with hold(store, entry) as identity:  # no swap or removal while it is read (and its manifest written)
            if identity is None:
                continue  # removed since the listing
            found = _verify_hub(entry) if entry.kind == "hub" else _verify_local(store, entry)
        if progress is not None:
            progress(entry.size)
        if not found:
            continue
        if fix:
            found = _fix(store, remove, entry, found, identity)
        issues.extend(found)
    if fix:
        with store.lock:
            catalog.reconcile()
    # first what the cache repaired on its own (this run or earlier)
    return take_findings(store.cache_dir, store.lock) + issues


def _verify_hub(entry: CacheEntry) -> list[VerifyIssue]:
    """Blob hashes and snapshot links, with no link followed at any depth (see `_hub.verify_repo`)."""
    return [VerifyIssue(entry.key, entry.name, path, problem) for path, problem in verify_repo(entry.path)]


def _verify_local(store: Store, entry: CacheEntry) -> list[VerifyIssue]:
    manifest, problem = load_manifest(entry.path)
    if problem is not None or manifest is None:
        manifest = _repair_manifest(store, entry)
        if manifest is None:  # removed meanwhile
            return []
    issues = []
    learned = False
    for rel, info in manifest["files"].items():
        path = entry.path / rel
        if not within(entry.path, entry.path / rel):
            issues.append(VerifyIssue(entry.key, entry.name, entry.path, f"manifest names a path outside: {rel!r}"))
            continue
        if path.is_symlink():  # entries hold regular files; a link was planted: never read through it
            issues.append(VerifyIssue(entry.key, entry.name, path, "a file replaced by a symbolic link"))
            continue
        if not path.is_file():
            issues.append(VerifyIssue(entry.key, entry.name, path, "file is missing"))
            continue
        if path.stat().st_size != info["size"]:
            issues.append(
                VerifyIssue(
                    entry.key, entry.name, path, f"size changed ({info['size']} -> {path.stat().st_size} bytes)"
                )
            )
            continue
        digest = file_sha256(path)
        if "sha256" not in info:
            info["sha256"] = digest
            learned = True
        elif digest != info["sha256"]:
            issues.append(VerifyIssue(entry.key, entry.name, path, "content does not match its recorded sha256"))
    if learned and not issues:
        try:  # recording the checksums is a bonus: a full disk must not fail the check itself
            write_manifest(entry.path, manifest)
        except OSError as exc:
            (entry.path / f"{MANIFEST}.tmp").unlink(missing_ok=True)
            logger.warning("could not record the checksums of %s (%s); the next verify will", entry.name, exc)
    return issues


def _repair_manifest(store: Store, entry: CacheEntry) -> dict[str, Any] | None:
    """Damaged metadata: rebuild the manifest from the files (content kept); None if the entry went meanwhile."""
    with store.lock:  # looked at again under the lock: a replacement or a removal may have been under way
        if not entry.path.is_dir():
            return None
        manifest, problem = load_manifest(entry.path)
        if problem is None and manifest is not None:
            return manifest
        row = store.index.get(entry.key)
        problem = problem or "manifest is not valid"
        manifest = repair_entry(store.index, store.cache_dir, entry.path, manifest, problem, row, announce=False)
        store.write_row(row_from_manifest(manifest))
    size = sum(f["size"] for f in manifest["files"].values())
    if size != entry.size:
        problem = f"the files on disk hold {size} bytes, the index recorded {entry.size}: content may be damaged"
        record(store.cache_dir, key=entry.key, name=entry.name, path=entry.path, problem=problem, fixed=False)
    return manifest


def _fix(
    store: Store, remove: Callable[[str], object], entry: CacheEntry, issues: list[VerifyIssue], identity: object
) -> list[VerifyIssue]:
    """Hub: delete corrupt blobs and dangling links (a later pull fetches them again).
    Local: there is no second copy, so the whole corrupt entry is dropped, only if it is still
    the one that was read (a replacement that landed since is left alone)."""
    if entry.kind in ("local", "prompt"):  # a saved prompt cache is dropped whole too (it is recomputed)
        try:
            with store.lock:
                if _identity(entry.path) != identity:
                    logger.warning("not dropping %s: it was replaced since it was verified", entry.name)
                    return issues
                remove(entry.key)
        except Exception as exc:
            logger.warning("could not drop %s: %s", entry.name, exc)
            return issues
        return [VerifyIssue(i.key, i.name, i.path, i.problem, fixed=True) for i in issues]
    with store.lock:  # links and corrupt blobs are unlinked through folders opened without following links
        fix_repo(store.walls, entry.path, {i.path for i in issues})
    return [VerifyIssue(i.key, i.name, i.path, i.problem, fixed=True) for i in issues]


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


@contextmanager
def hold(store: Store, entry: CacheEntry) -> Iterator[tuple[int, int] | None]:
    """Hold `entry` (the read side of its lease, as a reader does) and yield its identity, None if it is gone."""
    lock = LeaseLock(store.lease_path(entry.key), is_singleton=False)
    lock.acquire_read()
    try:
        yield _identity(entry.path) if store.index.get(entry.key) is not None else None
    finally:
        lock.release()
        lock.close()
