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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from provender._cache._entry import VerifyIssue
from provender._cache._names import within
from provender._cache._repair import load_manifest, record, repair_entry, take_findings, write_manifest

if TYPE_CHECKING:
    from provender._cache._entry import CacheEntry
    from provender._cache._manager import CacheManager

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


def verify_cache(cm: CacheManager, *, fix: bool, progress: Progress | None) -> list[VerifyIssue]:
    """Check every entry; `progress(bytes)` is called as content is read."""
    issues: list[VerifyIssue] = []
    for entry in cm.entries(sort="name"):
        found = _verify_hub(entry) if entry.kind == "hub" else _verify_local(cm, entry)
        if progress is not None:
            progress(entry.size)
        if not found:
            continue
        if fix:
            found = _fix(cm, entry, found)
        issues.extend(found)
    if fix:
        with cm._lock:
            cm._reconcile()
    return take_findings(cm) + issues  # first what the cache repaired on its own (this run or earlier)


def _verify_hub(entry: CacheEntry) -> list[VerifyIssue]:
    issues = []
    blobs = entry.path / "blobs"
    for blob in sorted(blobs.iterdir()) if blobs.is_dir() else []:
        if blob.is_symlink():  # huggingface_hub never links blobs: do not follow it anywhere
            issues.append(VerifyIssue(entry.key, entry.name, blob, "a blob that is a symbolic link"))
            continue
        if blob.name.endswith(".incomplete") or not blob.is_file():
            continue
        if _SHA256.fullmatch(blob.name):
            actual, algo = file_sha256(blob), "sha256"
        elif _SHA1.fullmatch(blob.name):
            actual, algo = git_blob_sha1(blob), "git sha1"
        else:
            continue
        if actual != blob.name:
            issues.append(
                VerifyIssue(entry.key, entry.name, blob, f"content does not match its {algo} (got {actual[:12]}...)")
            )
    snapshots = entry.path / "snapshots"
    for root, _dirs, files in os.walk(snapshots):
        for name in files:
            link = Path(root, name)
            if not link.is_symlink():
                continue
            target = Path(os.path.normpath(link.parent / os.readlink(link)))
            if not within(entry.path, target):
                issues.append(VerifyIssue(entry.key, entry.name, link, "snapshot link points outside the cache"))
            elif not target.exists():
                issues.append(VerifyIssue(entry.key, entry.name, link, "snapshot link points at a missing blob"))
    return issues


def _verify_local(cm: CacheManager, entry: CacheEntry) -> list[VerifyIssue]:
    manifest, problem = load_manifest(entry.path)
    if problem is not None or manifest is None:  # damaged metadata: rebuilt from the files, content kept
        with cm._lock:
            row = cm._index.get(entry.key)
            manifest = repair_entry(cm, entry.path, manifest, problem or "manifest is not valid", row)
            cm._write_row(cm._row_from_manifest(manifest))
        size = sum(f["size"] for f in manifest["files"].values())
        if size != entry.size:
            problem = f"the files on disk hold {size} bytes, the index recorded {entry.size}: content may be damaged"
            record(cm.cache_dir, key=entry.key, name=entry.name, path=entry.path, problem=problem, fixed=False)
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
        write_manifest(entry.path, manifest)
    return issues


def _fix(cm: CacheManager, entry: CacheEntry, issues: list[VerifyIssue]) -> list[VerifyIssue]:
    """Hub: delete corrupt blobs and dangling links (a later pull fetches them again).
    Local: there is no second copy, so the whole corrupt entry is dropped."""
    if entry.kind == "local":
        try:
            cm.remove(entry.key)
        except Exception as exc:
            logger.warning("could not drop %s: %s", entry.name, exc)
            return issues
        return [VerifyIssue(i.key, i.name, i.path, i.problem, fixed=True) for i in issues]
    fixed = []
    bad_blobs = {i.path.name for i in issues if i.path.parent.name == "blobs"}
    with cm._lock:
        for root, _dirs, files in os.walk(entry.path / "snapshots"):
            for name in files:
                link = Path(root, name)
                flagged = link in {i.path for i in issues}
                if link.is_symlink() and (flagged or not link.exists() or Path(os.readlink(link)).name in bad_blobs):
                    link.unlink()
        for issue in issues:
            if issue.path.parent.name == "blobs":
                issue.path.unlink(missing_ok=True)  # unlink removes a link itself, never its target
            fixed.append(VerifyIssue(issue.key, issue.name, issue.path, issue.problem, fixed=True))
    return fixed
