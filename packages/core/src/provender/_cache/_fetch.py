"""Hub downloads into the shared cache, done by huggingface_hub itself."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provender._cache import _hub
from provender._cache._fsops import fs_errors
from provender._cache._layout import check_dir, link_error
from provender._cache._locks import LeaseLock
from provender._cache._names import check_name
from provender._cache._store import write_row
from provender._cache._sync import download_state, hub_row, reconcile
from provender.errors import DiskFullError, EntryTooLargeError, HubError, ModelNotFoundError

if TYPE_CHECKING:
    from provender._cache._entry import CacheEntry
    from provender._cache._manager import CacheManager

logger = logging.getLogger(__name__)


def fetch_repo(cm: CacheManager, repo_id: str, *, progress: bool, **options: Any) -> CacheEntry:
    """`CacheManager.fetch`: `options` are its keyword arguments (revision, repo_type, patterns, endpoint)."""
    from huggingface_hub.utils import (  # type: ignore[attr-defined]
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    if ":" in repo_id:  # org/repo-GGUF:Q4_K_M: that GGUF quantisation only (and its split parts)
        from provender._cache._gguf import quant_request

        repo_id, options["allow_patterns"] = quant_request(
            cm,
            repo_id,
            revision=options.get("revision"),
            repo_type=options.get("repo_type", "model"),
            allow_patterns=options.get("allow_patterns"),
            endpoint=options.get("endpoint"),
        )
    if progress:
        return _fetch(cm, repo_id, **options)
    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        return _fetch(cm, repo_id, **options)
    finally:
        if not was_disabled:
            enable_progress_bars()


def _fetch(
    cm: CacheManager,
    repo_id: str,
    *,
    revision: str | None = None,
    repo_type: str = "model",
    allow_patterns: list[str] | str | None = None,
    ignore_patterns: list[str] | str | None = None,
    endpoint: str | None = None,
) -> CacheEntry:
    check_name(repo_id)
    if repo_type not in _hub.REPO_TYPES:
        raise HubError(f"repo_type must be one of {', '.join(_hub.REPO_TYPES)}, not {repo_type!r}")
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    key = cm.hub_key(repo_id, repo_type)
    name = _hub.display_name(repo_id, repo_type)
    kwargs = {
        "repo_id": repo_id,
        "repo_type": repo_type,
        "revision": revision,
        "cache_dir": str(cm.hub_dir),
        "allow_patterns": allow_patterns,
        "ignore_patterns": ignore_patterns,
        "endpoint": endpoint,
    }

    repo_dir = cm.hub_dir / _hub.folder_name(repo_id, repo_type)
    check_repo_layout(cm, repo_dir)  # huggingface_hub would write through a planted link: refuse first
    if cm._index.degraded is not None:  # a full disk: refuse before anything is downloaded
        raise cm._index.degraded
    # Refuse before downloading what could never fit (needs the Hub; skipped offline).
    if not constants.HF_HUB_OFFLINE:
        try:
            plan = snapshot_download(**kwargs, dry_run=True)  # type: ignore[call-overload]
        except (RepositoryNotFoundError, GatedRepoError) as exc:
            raise ModelNotFoundError(
                name, f"the Hub has no such {repo_type} repo, or it needs a token ({type(exc).__name__})"
            ) from None
        except RevisionNotFoundError:
            raise ModelNotFoundError(name, f"the Hub has no revision {revision!r}") from None
        except Exception as exc:  # offline, Hub down: the real call below falls back to the cache
            logger.info("could not plan the download of %s: %s", name, exc)
        else:
            total = sum(f.file_size or 0 for f in plan)
            needed = sum(f.file_size or 0 for f in plan if f.will_download)
            free = shutil.disk_usage(cm.hub_dir).free
            if total > cm.max_size or needed > free:
                remove_empty_repo(cm, repo_dir)  # the planning call may leave empty folders behind
                if total > cm.max_size:
                    raise EntryTooLargeError(name, total, cm.max_size)
                raise DiskFullError(cm.hub_dir, needed)

    cm._walls.check("pending", "locks", "hub")
    pending = LeaseLock(cm._pending_dir / f"{key}.lock")  # marks a download in progress (a flock, as filelock's)
    lease = LeaseLock(cm._lease_path(key), is_singleton=False)  # eviction must not take what we update
    with fs_errors(cm.cache_dir):
        pending.acquire_write()
    lease.acquire_read()
    try:
        try:
            with fs_errors(cm.hub_dir):
                snapshot_download(**kwargs)  # type: ignore[call-overload]
        except LocalEntryNotFoundError:
            raise ModelNotFoundError(
                name, "not in the cache, and the Hub cannot be reached (offline: HF_HUB_OFFLINE is set, or no network)"
            ) from None
        except (RepositoryNotFoundError, GatedRepoError):
            raise ModelNotFoundError(name, f"the Hub has no such {repo_type} repo, or it needs a token") from None
        except RevisionNotFoundError:
            raise ModelNotFoundError(name, f"the Hub has no revision {revision!r}") from None
        except HfHubHTTPError as exc:
            raise HubError(f"downloading {name} failed: {exc}") from None
        folder = _hub.folder_name(repo_id, repo_type)
        row = hub_row(
            cm, folder, repo_type, repo_id, last_used=time.time(), metadata={"revision": revision} if revision else None
        )
        old = cm._index.get(key)
        if old is not None:
            row["created"] = old["created"]
        with cm._lock:
            write_row(cm, row)
            pending.release()
            (cm._pending_dir / f"{key}.lock").unlink(missing_ok=True)
            reconcile(cm)
            evicted = cm._evict(cm.max_size, protect={key})
    finally:
        pending.release()  # a no-op if released already
        lease.release()
        lease.close()
    cm._notify_evicted(evicted)
    return cm.get(key)


def check_repo_layout(cm: CacheManager, repo_dir: Path) -> None:
    """Before huggingface_hub writes into a repo folder: no link where it keeps its folders and files
    (hub/.locks, the repo folder, blobs, snapshots, refs, any blob or ref). Refused, never followed."""
    cm._walls.check("hub")
    for path in (cm.hub_dir / ".locks", cm.hub_dir / ".locks" / repo_dir.name, repo_dir):
        if os.path.lexists(path):
            check_dir(path)
    if os.path.isdir(repo_dir):
        for path in _hub.planted_links(repo_dir):
            raise link_error(path, "folder or file")


def remove_empty_repo(cm: CacheManager, repo_dir: Path) -> None:
    """Take away the empty folders a refused plan left; never a file, so never a repo another process
    downloaded meanwhile (rmdir fails on anything not empty), and nothing while a download runs."""
    with cm._lock:
        if download_state(cm, cm.hub_key(*_parse(repo_dir))) == "running":
            return
        for root, _dirs, _files in sorted(os.walk(repo_dir), key=lambda t: -len(t[0])):
            with contextlib.suppress(OSError):
                os.rmdir(root)


def _parse(repo_dir: Path) -> tuple[str, str]:
    parsed = _hub.parse_folder_name(repo_dir.name)
    assert parsed is not None
    repo_type, repo_id = parsed
    return repo_id, repo_type
