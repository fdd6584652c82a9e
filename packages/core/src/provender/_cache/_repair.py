"""Entry manifests: read them strictly, rebuild a damaged one from the files, and log what was done.

A directory under ``objects/`` arrives there by one atomic rename of a complete staging
directory, so its files are complete by construction. A manifest that cannot be read (a
torn write, a bad sector, a stray editor, a copy from another entry) is damaged metadata,
never a reason to delete content: it is kept beside the entry for inspection
(``.provender-entry.json.corrupt-<stamp>``) and a new one is rebuilt from the disk.

Every such repair, and everything else the cache changes or finds on its own, is appended
to ``repairs.jsonl`` under ``cache.dir``; the next `verify` reports it and clears the log.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provender._cache._entry import VerifyIssue
from provender._cache._names import check_key
from provender.errors import InvalidNameError

if TYPE_CHECKING:
    from provender._cache._index import Index, IndexRow
    from provender._cache._locks import GuardedLock

logger = logging.getLogger(__name__)

MANIFEST = ".provender-entry.json"
REPAIR_LOG = "repairs.jsonl"
NOT_A_KEY = "a directory in objects/ whose name is not a cache key: not an entry, left in place"
_OWN_PREFIX = ".provender-entry"  # the manifest, its temporary file and damaged copies set aside
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def load_manifest(entry_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``(manifest, None)`` if the manifest is valid for this directory, else ``(parsed or None, problem)``.

    Valid means: a JSON object naming the directory's own key, with a file list of sizes,
    a name and a creation time of the right types, so that nothing reading it can fail.
    """
    path = entry_dir / MANIFEST
    if path.is_symlink():
        return None, "manifest is a symbolic link"
    try:  # O_NOFOLLOW: a manifest swapped for a link is never read through
        with os.fdopen(os.open(path, os.O_RDONLY | _NOFOLLOW), "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None, "manifest is missing"
    except OSError as exc:
        return None, f"manifest cannot be read ({exc.strerror or exc})"
    if not raw.strip():
        return None, "manifest is empty"
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"manifest is not valid JSON, truncated or overwritten ({exc})"
    if not isinstance(data, dict):
        return None, "manifest is not a JSON object"
    if data.get("key") != entry_dir.name:
        return data, f"manifest names key {str(data.get('key'))[:80]!r}, not its directory's {entry_dir.name!r}"
    files = data.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(rel, str) and isinstance(info, dict) and _is_size(info.get("size")) for rel, info in files.items()
    ):
        return data, "manifest has no valid file list"
    if not isinstance(data.get("name"), str) or not data["name"] or not _is_number(data.get("created")):
        return data, "manifest has no valid name or creation time"
    if not isinstance(data.get("metadata", {}), dict) or not isinstance(data.get("filename"), str | None):
        return data, "manifest has invalid metadata"
    return data, None


def _is_size(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def row_from_manifest(manifest: dict[str, Any], last_used: float | None = None) -> IndexRow:
    """The index row of a provender-stored entry, from its (valid) manifest."""
    key = manifest["key"]
    return {
        "key": key,
        "kind": "prompt" if manifest.get("kind") == "prompt" else "local",  # a saved prompt cache keeps its kind
        "name": manifest["name"],
        "path": f"objects/{key}",
        "size": sum(int(f["size"]) for f in manifest["files"].values()),
        "created": manifest["created"],
        "last_used": last_used,
        "hits": 0,
        "stamp": 0,
        "metadata": {**manifest.get("metadata", {}), "filename": manifest.get("filename")},
    }


def write_manifest(entry_dir: Path, manifest: dict[str, Any]) -> None:
    """Write a manifest durably: a fresh temporary file (never through a link), fsync, then one rename."""
    tmp = entry_dir / f"{MANIFEST}.tmp"
    tmp.unlink(missing_ok=True)  # it could be a hard link into someone's files: never write through it
    data = json.dumps(manifest, indent=1, default=str).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, entry_dir / MANIFEST)


def scan_files(entry_dir: Path) -> dict[str, dict[str, int]]:
    """The regular files of an entry with their sizes, read from the disk (links are not followed)."""
    files: dict[str, dict[str, int]] = {}
    for root, _dirs, names in os.walk(entry_dir):
        for name in names:
            if root == str(entry_dir) and name.startswith(_OWN_PREFIX):
                continue
            path = Path(root, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                files[str(path.relative_to(entry_dir))] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    return dict(sorted(files.items()))


def _set_aside(entry_dir: Path) -> Path | None:
    """Keep the damaged manifest for inspection, under a new name (a hard link: no bytes copied)."""
    path = entry_dir / MANIFEST
    if not os.path.lexists(path):
        return None
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = entry_dir / f"{MANIFEST}.corrupt-{stamp}"
    n = 1
    while os.path.lexists(aside):
        n += 1
        aside = entry_dir / f"{MANIFEST}.corrupt-{stamp}-{n}"
    if path.is_symlink():  # never read through a link: move the link itself
        os.rename(path, aside)
        return aside
    try:  # the damaged manifest stays in place until the new one replaces it: a crash loses neither
        os.link(path, aside, follow_symlinks=False)
    except OSError:
        shutil.copyfile(path, aside, follow_symlinks=False)
    return aside


def rebuild_manifest(
    entry_dir: Path, old: dict[str, Any] | None, row: IndexRow | None, taken_names: set[str]
) -> dict[str, Any]:
    """A manifest for ``entry_dir`` built from its files on disk.

    The key is the directory's name. The name, file name, metadata and creation time come
    from the index row if the index still has the entry, else from what the damaged
    manifest still says (its name only if no other entry uses it), else the name is
    ``recovered-<short key>`` and a single file at the top is taken as the model file.
    """
    key = entry_dir.name
    files = scan_files(entry_dir)
    old = old if isinstance(old, dict) else {}
    name: Any  # from the row (typed) or from a damaged manifest (anything)
    created: Any
    if row is not None:
        metadata = {k: v for k, v in row["metadata"].items() if k != "filename"}
        name, filename, created = row["name"], row["metadata"].get("filename"), row["created"]
    else:
        old_name = old.get("name")
        usable = isinstance(old_name, str) and 0 < len(old_name) <= 200 and old_name.isprintable()
        name = old_name if usable and old_name not in taken_names else f"recovered-{key[:12]}"
        old_metadata = old.get("metadata")
        metadata = old_metadata if isinstance(old_metadata, dict) else {}
        filename = old.get("filename") if isinstance(old.get("filename"), str) else None
        created = old.get("created") if _is_number(old.get("created")) else entry_dir.lstat().st_mtime
    if filename is not None and filename not in files:
        filename = None
    if filename is None and row is None and len(files) == 1 and os.sep not in next(iter(files)):
        filename = next(iter(files))  # one file at the top: what cache_model stores for a single file
    kind = row["kind"] if row is not None else old.get("kind")
    return {
        "key": key,
        "name": name,
        "kind": "prompt" if kind == "prompt" else "local",
        "created": created,
        "files": files,
        "filename": filename,
        "metadata": metadata,
    }


def repair_entry(
    index: Index,
    cache_dir: Path,
    entry_dir: Path,
    old: dict[str, Any] | None,
    problem: str,
    row: IndexRow | None,
    *,
    announce: bool = True,
) -> dict[str, Any]:
    """Rebuild a damaged manifest in place, keep the damaged one aside, log it. Call under the cache lock.

    Nothing of the entry's content is moved or deleted. ``announce``: also warn now (`verify`,
    which reports the repair itself, does not).
    """
    taken = {r["name"] for r in index.all() if r["key"] != entry_dir.name} if row is None else set()
    manifest = rebuild_manifest(entry_dir, old, row, taken)
    aside = _set_aside(entry_dir)
    write_manifest(entry_dir, manifest)
    kept = f"; the damaged one is kept as {aside.name}" if aside is not None else ""
    n = len(manifest["files"])
    done = f"{problem}: rebuilt it from the {n} file{'' if n == 1 else 's'} on disk{kept}"
    logger.log(
        logging.WARNING if announce else logging.INFO, "cache entry %s (%s): %s", manifest["name"], entry_dir, done
    )
    record(cache_dir, key=entry_dir.name, name=manifest["name"], path=entry_dir, problem=done, fixed=True)
    return manifest


def read_or_repair(index: Index, cache_dir: Path, key: str) -> dict[str, Any] | None:
    """The manifest of ``objects/<key>``, rebuilt first if damaged; None if it is not an entry. Call under the lock.

    Never deletes content: only an empty directory is removed, and a directory whose name is
    not a cache key (not made by provender) is left in place and reported.
    """
    entry_dir = cache_dir / "objects" / key
    if not entry_dir.is_dir() or entry_dir.is_symlink():  # removed before the caller took the lock
        return None
    manifest, problem = load_manifest(entry_dir)
    if problem is None and manifest is not None:
        return manifest
    try:
        check_key(key)
    except InvalidNameError:
        record(cache_dir, key="", name=key, path=entry_dir, problem=NOT_A_KEY, fixed=False)
        return None
    if not any(True for _ in os.scandir(entry_dir)):  # nothing to lose
        entry_dir.rmdir()
        record(cache_dir, key=key, name="", path=entry_dir, problem="an empty directory: removed", fixed=True)
        return None
    return repair_entry(index, cache_dir, entry_dir, manifest, problem or "manifest is not valid", index.get(key))


def record(cache_dir: Path, *, key: str, name: str, path: Path, problem: str, fixed: bool) -> None:
    """Log something the cache found or changed on its own, for the next `verify` to report.

    The same finding is logged once until a `verify` reports it. Never raises: failing to
    log must not fail the start-up that repaired something.
    """
    item = {"key": key, "name": name, "path": str(path), "problem": problem, "fixed": fixed}
    log = cache_dir / REPAIR_LOG
    try:
        if any(_same(item, seen) for seen in _read(log)):
            return
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW, 0o644)
        try:
            os.write(fd, (json.dumps({**item, "time": time.time()}) + "\n").encode())
        finally:
            os.close(fd)
    except OSError as exc:
        logger.warning("could not log %r in %s: %s", problem, log, exc)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in ("key", "path", "problem"))


def _read(log: Path) -> list[dict[str, Any]]:
    try:
        fd = os.open(log, os.O_RDONLY | _NOFOLLOW)
    except FileNotFoundError:
        return []
    with os.fdopen(fd, "rb") as f:
        data = f.read()
    items = []
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            item = None
        if isinstance(item, dict):
            items.append(item)
        elif line.strip():
            items.append({"key": "", "name": "", "path": str(log), "problem": f"unreadable log line {line[:60]!r}"})
    return items


def take_findings(cache_dir: Path, lock: GuardedLock) -> list[VerifyIssue]:
    """What the cache found or changed on its own since the last `verify`; clears the log (under `lock`)."""
    log = cache_dir / REPAIR_LOG
    with lock:
        try:
            items = _read(log)
            log.unlink(missing_ok=True)
        except OSError as exc:
            logger.warning("could not read %s: %s", log, exc)
            return []
    return [
        VerifyIssue(
            str(i.get("key", "")),
            str(i.get("name", "")),
            Path(str(i.get("path", ""))),
            str(i.get("problem", "")),
            fixed=bool(i.get("fixed", False)),
        )
        for i in items
    ]
