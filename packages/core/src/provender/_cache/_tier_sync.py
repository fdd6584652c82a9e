"""Between the remote tier and the local cache: pulling entries down (pushing up: `_tier_push`).

Down (`pull_hub`, `pull_imported`): every blob is streamed from the tier into staging under
``tmp/`` and checked against its sha256 (and a Hub file's git sha1) as it arrives; only when
every file of the snapshot has arrived intact does anything enter the cache. A Hub repo lands
in huggingface_hub's own layout (``blobs/<etag>``, ``snapshots/<commit>/<path>`` as relative
links, ``refs/<revision>``), so `hf` and ``scan_cache_dir`` read it as their own download; an
imported entry lands in ``objects/<key>/`` with its manifest, as `import_model` stores it.
A corrupt or missing blob raises `CorruptBlobError` (a `RemoteTierError`): the caller falls
back to the Hub, and nothing of the failed pull is left in the cache.

Up (`push_entry`, `write_through`) is `provender._cache._tier_push`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

from provender._cache import _hub
from provender._cache._entry import CacheEntry, Progress
from provender._cache._eviction import ORIGIN
from provender._cache._fsops import fs_errors
from provender._cache._layout import check_dir, link_error
from provender._cache._names import check_name, hub_key, imported_key
from provender._cache._remote import RemoteTier, ref_name
from provender._cache._repair import scan_files, write_manifest
from provender._cache._tier_content import file_size, safe_path
from provender.errors import (
    CacheError,
    CorruptBlobError,
    DiskFullError,
    EntryExistsError,
    TierContentError,
)

if TYPE_CHECKING:
    from provender._cache._index import Index
    from provender._cache._intake import Intake
    from provender._cache._store import Store

logger = logging.getLogger(__name__)

_HEX40 = re.compile(r"[0-9a-f]{40}")
HEX64 = re.compile(r"[0-9a-f]{64}")
WORKERS = 4  # blobs moved at once between the tier and this cache
T = TypeVar("T")
R = TypeVar("R")


def count(index: Index, **amounts: int) -> None:
    """Add to the persistent stats (remote_hits, remote_misses, bytes_from_remote, remote_errors)."""

    def add(con: Any) -> None:
        for name, amount in amounts.items():
            if amount:
                index.add_stat(con, name, amount)

    try:
        index.write(add, soft=True)
    except CacheError as exc:  # counting must never fail a pull
        logger.debug("could not count %s: %s", amounts, exc)


def patterns_of(allow: list[str] | str | None, ignore: list[str] | str | None) -> dict[str, Any] | None:
    """The patterns of a partial download, normalised (None: the whole repo)."""

    def norm(p: list[str] | str | None) -> list[str] | None:
        return None if p is None else sorted([p] if isinstance(p, str) else list(p))

    if allow is None and ignore is None:
        return None
    return {"allow": norm(allow), "ignore": norm(ignore)}


def _filter(files: list[dict[str, Any]], patterns: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not patterns:
        return files
    from huggingface_hub.utils import filter_repo_objects  # type: ignore[attr-defined]

    return list(
        filter_repo_objects(
            files, allow_patterns=patterns.get("allow"), ignore_patterns=patterns.get("ignore"), key=lambda f: f["path"]
        )
    )


def _checked_files(tier: RemoteTier, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The manifest's file list, every field checked (the tier is shared: its content is not trusted)."""
    out = []
    try:
        for f in manifest["files"]:
            size, sha, etag = file_size(f["size"]), f["sha256"], f.get("etag")
            if not HEX64.fullmatch(str(sha)):
                raise ValueError(f"bad sha256 for {str(f.get('path'))[:80]!r}")
            if etag is not None and not (_HEX40.fullmatch(str(etag)) or HEX64.fullmatch(str(etag))):
                raise ValueError(f"bad etag {repr(etag)[:80]}")
            out.append({"path": safe_path(f["path"]), "size": size, "sha256": sha, "etag": etag})
        paths = {f["path"] for f in out}
        if len(paths) != len(out):
            raise ValueError("a path listed twice")
        folders = {p.rsplit("/", i)[0] for p in paths for i in range(1, p.count("/") + 1)}
        if paths & folders:
            raise ValueError(f"{sorted(paths & folders)[0]!r} listed as a file and as a folder")
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise TierContentError(
            tier.url, f"manifest of {str(manifest.get('name'))[:80]!r} is not valid ({exc}); ignored"
        ) from None
    return out


def _download(tier: RemoteTier, f: dict[str, Any], dest: Path, tick: Callable[[int], object] | None = None) -> int:
    """Stream one blob into `dest` (a new file), checking its size and sha256 (and git sha1) as it arrives."""
    sha, etag = f["sha256"], f.get("etag")
    digest = hashlib.sha256()
    git = hashlib.sha1(f"blob {f['size']}\0".encode()) if etag and _HEX40.fullmatch(etag) else None
    n = 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    with os.fdopen(fd, "wb") as out:
        try:
            with tier.open_blob(sha) as src:
                for chunk in tier.read_blob_chunks(src):
                    n += len(chunk)
                    if n > f["size"]:
                        raise CorruptBlobError(tier.url, sha, f"is larger than the {f['size']} bytes its manifest says")
                    digest.update(chunk)
                    if git is not None:
                        git.update(chunk)
                    out.write(chunk)
                    if tick is not None:
                        tick(len(chunk))
        except FileNotFoundError:
            raise CorruptBlobError(tier.url, sha, "is missing from the tier") from None
    if n != f["size"]:
        raise CorruptBlobError(tier.url, sha, f"has {n} bytes, its manifest says {f['size']}")
    if digest.hexdigest() != sha:
        raise CorruptBlobError(tier.url, sha, f"does not match its sha256 (got {digest.hexdigest()[:12]}...)")
    if (git is not None and git.hexdigest() != etag) or (etag and HEX64.fullmatch(etag) and etag != sha):
        raise CorruptBlobError(tier.url, sha, f"does not match its Hub etag {str(etag)[:12]}...")
    return n


def run_all(fn: Callable[[T], R], items: list[T], stop: threading.Event | None = None) -> list[R]:
    """``fn(item)`` for each item, `WORKERS` at once; every one is waited for, then the first error raised.

    The workers are daemon threads, and the caller's wait is interruptible: Ctrl-C (or any error
    of one item) sets `stop`, no item starts after that, and the caller gets the error at once
    instead of after every transfer in flight (a thread in the middle of one request ends with it,
    or with the process). `fn` may look at `stop` between chunks to end its item early."""
    stop = stop or threading.Event()
    results: list[Any] = [None] * len(items)
    errors: list[BaseException | None] = [None] * len(items)
    todo = iter(range(len(items)))
    take = threading.Lock()

    def worker() -> None:
        while not stop.is_set():
            with take:
                i = next(todo, None)
            if i is None:
                return
            try:
                results[i] = fn(items[i])
            except BaseException as exc:  # handed to the caller below, never lost in the thread
                errors[i] = exc
                stop.set()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(WORKERS, len(items)))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    except BaseException:  # Ctrl-C while waiting: the workers stop at their next chunk or item
        stop.set()
        raise
    failed = [e for e in errors if e is not None]
    first = next((e for e in failed if not isinstance(e, _Stopped)), failed[0] if failed else None)
    if first is not None:
        raise first
    return results


def _download_all(tier: RemoteTier, jobs: list[tuple[dict[str, Any], Path]], progress: Progress, label: str) -> int:
    """`_download` each (file, destination), a few at once (`run_all`: an interrupt stops them all).
    `progress` a callable: told (bytes so far, bytes in all) at the start and after each chunk, no bar."""
    if not jobs:
        return 0
    from huggingface_hub.utils import tqdm  # type: ignore[attr-defined]  # honours disable_progress_bars()

    total = int(sum(f["size"] for f, _dest in jobs))
    stop = threading.Event()  # one failed, or the caller was interrupted: the others stop at their next chunk
    report = progress if callable(progress) else None
    done, counting = [0], threading.Lock()

    def tick(n: int) -> None:
        if stop.is_set():
            raise _Stopped
        bar.update(n)
        if report is not None:
            with counting:  # the workers' chunks, told in order
                done[0] += n
                report(done[0], total)

    if report is not None:
        report(0, total)
    shown = progress is True
    bar = tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=not shown)  # type: ignore[no-untyped-call]
    with bar:
        run_all(lambda job: _download(tier, job[0], job[1], tick), jobs, stop)
    return total


class _Stopped(Exception):
    """Another transfer of the same operation failed, or the caller was interrupted: this one stops."""


# -- down: tier -> local cache -------------------------------------------------------------


def find_manifest(
    tier: RemoteTier, key: str, revision: str | None, patterns: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The tier's snapshot for a request: the revision's full snapshot (its files filtered by the
    patterns), else a partial one pulled with the same patterns."""
    rev = revision or "main"
    manifest = tier.read_manifest(key, ref_name(rev))
    if manifest is not None and patterns and not _filter(_checked_files(tier, manifest), patterns):
        manifest = None
    if manifest is None and patterns:
        manifest = tier.read_manifest(key, ref_name(rev, patterns))
    return manifest


def tier_files(tier: RemoteTier, repo_id: str, repo_type: str, revision: str | None) -> list[str]:
    """The files the tier holds of a Hub repo's revision: its whole snapshot's, else those of every partial
    one (``org/repo-GGUF:Q8_0`` pulled by another node); empty if it holds none. Enough to choose a GGUF."""
    key, rev = hub_key(repo_id, repo_type), revision or "main"
    whole = tier.read_manifest(key, ref_name(rev))
    refs = [ref_name(rev)] if whole is not None else [r for r in tier.refs(key) if r.startswith(ref_name(rev) + "@")]
    found: set[str] = set()
    for ref in refs:
        manifest = whole if whole is not None else tier.read_manifest(key, ref)
        if manifest is not None and manifest.get("kind") == "hub" and manifest.get("repo_id") == repo_id:
            found.update(f["path"] for f in _checked_files(tier, manifest))
    return sorted(found)


def check_fits(max_size: int, tier: RemoteTier, name: str, total: int) -> None:
    """A tier's copy larger than the cache limit is refused as tier content: the pull asks the Hub, which
    refuses what is truly too large (EntryTooLargeError) and serves what the tier's manifest misstated."""
    if total > max_size:
        from provender._sizes import format_size

        raise TierContentError(
            tier.url,
            f"its copy of {name} says {format_size(total)}, larger than the cache limit cache.max_size="
            f"{format_size(max_size)}; ignored",
        )


def check_room(cache_dir: Path, needed: int) -> None:
    """Refuse before a byte is moved what the cache's disk has no room for (DiskFullError), as a Hub download does."""
    if needed > shutil.disk_usage(cache_dir).free:
        raise DiskFullError(cache_dir, needed)


def check_repo_layout(store: Store, repo_dir: Path) -> None:
    """Before writing into a Hub repo folder (huggingface_hub or the tier): no link where it keeps its
    folders and files (hub/.locks, the repo folder, blobs, snapshots, refs, any blob or ref). Refused."""
    store.walls.check("hub")
    for path in (store.hub_dir / ".locks", store.hub_dir / ".locks" / repo_dir.name, repo_dir):
        if os.path.lexists(path):
            check_dir(path)
    if os.path.isdir(repo_dir):
        for path in _hub.planted_links(repo_dir):
            raise link_error(path, "folder or file")


def _atomic_symlink(target: str, link: Path) -> None:
    if os.path.islink(link) and os.readlink(link) == target:
        return
    tmp = link.parent / f".{uuid.uuid4().hex}.tmp"  # not the link's name: that may be 255 bytes long
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.parent / f".{uuid.uuid4().hex}.tmp"
    tmp.write_text(text)
    os.replace(tmp, path)


def pull_hub(
    intake: Intake,
    tier: RemoteTier,
    repo_id: str,
    repo_type: str,
    revision: str | None,
    patterns: dict[str, Any] | None,
    metadata: dict[str, Any],
    progress: Progress = False,
) -> tuple[CacheEntry, int] | None:
    """Bring a Hub repo's snapshot from the tier into huggingface_hub's layout; None if the tier lacks it.

    Returns the entry and the bytes read from the tier. Raises RemoteTierError (CorruptBlobError)
    when the tier fails or holds corrupt content: nothing of it has entered the cache then.
    """
    from provender._cache._locks import LeaseLock

    store = intake.store
    key = hub_key(repo_id, repo_type)
    manifest = find_manifest(tier, key, revision, patterns)
    if manifest is None:
        return None
    commit = manifest.get("commit")
    if (
        manifest.get("kind") != "hub"
        or manifest.get("repo_id") != repo_id
        or manifest.get("repo_type", "model") != repo_type
        or not isinstance(commit, str)
        or not _HEX40.fullmatch(commit)  # a Hub commit; never a name that could leave snapshots/
    ):
        raise TierContentError(tier.url, f"the tier's manifest for {repo_id} does not describe it; ignored")
    files = _filter(_checked_files(tier, manifest), patterns)
    if not files:
        return None
    name = _hub.display_name(repo_id, repo_type)
    total = sum(f["size"] for f in files)
    check_fits(store.max_size, tier, name, total)
    folder = _hub.folder_name(repo_id, repo_type)
    repo_dir = store.hub_dir / folder
    check_repo_layout(store, repo_dir)
    store.walls.check("pending", "locks", "hub", "tmp")
    pending = LeaseLock(store.pending_path(key))  # the same marker as a Hub download: not an entry until done
    lease = LeaseLock(store.lease_path(key), is_singleton=False)
    with fs_errors(store.cache_dir):
        pending.acquire_write()
    lease.acquire_read()
    try:
        blobs = repo_dir / "blobs"
        with store.staging() as stage, fs_errors(store.cache_dir, total):
            stage.mkdir()
            staged: dict[str, Path] = {}
            jobs = []
            for f in files:
                etag = f["etag"] or f["sha256"]
                if etag in staged or ((blobs / etag).is_file() and (blobs / etag).stat().st_size == f["size"]):
                    continue  # this cache has the blob already (another revision, a partial pull)
                staged[etag] = stage / etag
                jobs.append((f, staged[etag]))
            check_room(store.cache_dir, sum(f["size"] for f, _dest in jobs))
            got = _download_all(tier, jobs, progress, f"{name} (remote tier)")
            # every file arrived intact: now, and only now, into the Hub layout (blobs, links, ref)
            snapshot = repo_dir / "snapshots" / commit
            for d in (blobs, snapshot, repo_dir / "refs"):
                d.mkdir(parents=True, exist_ok=True)
            for etag, path in staged.items():
                os.replace(path, blobs / etag)
            for f in files:
                link = snapshot / f["path"]
                link.parent.mkdir(parents=True, exist_ok=True)
                _atomic_symlink(os.path.relpath(blobs / (f["etag"] or f["sha256"]), link.parent), link)
            rev = revision or "main"
            if rev != commit and ".." not in PurePosixPath(rev).parts and not rev.startswith("/"):
                ref = repo_dir / "refs" / rev
                ref.parent.mkdir(parents=True, exist_ok=True)
                _atomic_text(ref, commit)
        evicted = intake.commit_hub(key, folder, repo_type, repo_id, metadata, pending)
    finally:
        pending.release()
        lease.release()
        lease.close()
    intake.evictor.notify(evicted)
    logger.info("%s: %d files (%d bytes) from the remote tier %s", name, len(files), got, tier.url)
    return intake.catalog.get(key), got


def pull_imported(
    intake: Intake, tier: RemoteTier, name: str, progress: Progress = False
) -> tuple[CacheEntry, int] | None:
    """Bring an imported entry (``cache import ... --name``) from the tier into objects/; None if it lacks it."""
    check_name(name)
    store = intake.store
    key = imported_key(name)
    manifest = tier.read_manifest(key, "latest")
    if manifest is None:
        return None
    if manifest.get("kind") != "local" or manifest.get("name") != name:
        raise TierContentError(tier.url, f"the tier's manifest for {name} does not describe it; ignored")
    files = _checked_files(tier, manifest)
    total = sum(f["size"] for f in files)
    check_fits(store.max_size, tier, name, total)
    filename = manifest.get("filename")
    if filename is not None and (not isinstance(filename, str) or [f["path"] for f in files] != [filename]):
        raise TierContentError(tier.url, f"the tier's manifest for {name} is not valid; ignored")
    found = manifest.get("metadata")
    metadata: dict[str, Any] = found if isinstance(found, dict) else {}
    metadata = {k: v for k, v in metadata.items() if k != ORIGIN}  # another machine's: the tier has a copy
    evicted: list[CacheEntry] = []
    now = time.time()
    with store.staging() as stage, fs_errors(store.cache_dir, total):
        stage.mkdir()
        recorded: dict[str, dict[str, Any]] = {}
        for f in files:
            (stage / f["path"]).parent.mkdir(parents=True, exist_ok=True)
        check_room(store.cache_dir, total)
        got = _download_all(tier, [(f, stage / f["path"]) for f in files], progress, f"{name} (remote tier)")
        sha_of = {f["path"]: f["sha256"] for f in files}  # a dict: an entry may have 100,000 files
        for rel, info in scan_files(stage).items():
            recorded[rel] = {**info, "sha256": sha_of[rel]}
        local = {
            "key": key,
            "name": name,
            "kind": "local",
            "created": now,
            "files": recorded,
            "filename": filename,
            "metadata": {**metadata, "source": "import"},
        }
        write_manifest(stage, local)
        try:
            _row, evicted = intake.commit_local(stage, local, name, False, now, False)
        except EntryExistsError:  # another process of this machine brought it meanwhile
            pass
    intake.evictor.notify(evicted)
    return intake.catalog.get(key), got
