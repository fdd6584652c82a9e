"""`Transfers`: pulls into the shared cache and pushes out of it.

A pull is served from the cache itself, else the remote tier, else the Hub (downloads done by
huggingface_hub itself), with write-through of Hub downloads to the remote tier; a push uploads
an entry to the tier. The component holds what it moves entries between: the `Intake` (the store,
its catalog and evictor) and the `RemoteTier`, or None.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

from provender._cache import _hub
from provender._cache._entry import PullOptions, PullResult, PushResult
from provender._cache._fsops import fs_errors
from provender._cache._locks import LeaseLock
from provender._cache._names import check_name, hub_key, imported_key
from provender._cache._tier_push import push_entry, write_through
from provender._cache._tier_sync import check_repo_layout, count, patterns_of, pull_hub, pull_imported, tier_files
from provender.errors import (
    CorruptBlobError,
    DiskFullError,
    EntryTooLargeError,
    HubError,
    ModelNotFoundError,
    ProvenderError,
    RemoteTierError,
    TierContentError,
)

if TYPE_CHECKING:
    from provender._cache._entry import CacheEntry
    from provender._cache._intake import Intake
    from provender._cache._remote import RemoteTier

logger = logging.getLogger(__name__)


class Transfers:
    """Pull and push: moves entries between the Hub, the remote tier and the cache.

    Holds the `Intake` (the store, its catalog and its evictor: where pulled entries are committed)
    and the remote tier (None: no tier).
    """

    def __init__(self, intake: Intake, tier: RemoteTier | None) -> None:
        self.intake = intake
        self.tier = tier

    def push(self, name_or_key: str, *, progress: bool | Callable[[int], object] = False) -> PushResult:
        """Upload an entry of this cache to the remote tier (blobs the tier holds already are skipped).

        ``progress``: a callable is told the bytes of each blob as it is uploaded or found there.

        Raises RemoteNotConfiguredError without a tier (or on a read-only one), RemoteTierError
        if the tier fails.
        """
        return push_entry(self.tier, self.intake.catalog.get(name_or_key), progress=progress)

    def write_through(self, entry: CacheEntry) -> None:
        """After an import: push `entry` to a writable tier; a failure is a warning, never an error."""
        if self.tier is not None and not self.tier.read_only:
            write_through(self.tier, self.intake.store.index, entry)

    def pull(self, repo_id: str, **options: Unpack[PullOptions]) -> PullResult:
        """Get a repo (or an imported entry) into the cache: from the cache, else the remote tier (verified
        against its sha256; offline too), else the Hub (written through to the tier unless read-only).

        Options, each keyword-only and optional (`PullOptions`): ``revision``, ``repo_type``,
        ``allow_patterns``, ``ignore_patterns``, ``progress`` (default True), ``endpoint``. Says where
        the bytes came from (`PullResult`). A failing tier is a warning, never a failed pull.
        """
        unknown = sorted(options.keys() - PullOptions.__annotations__.keys())
        if unknown:
            raise TypeError(f"pull() got an unexpected keyword argument {unknown[0]!r}")
        revision, repo_type = options.get("revision"), options.get("repo_type", "model")
        progress = options.get("progress", True)
        index = self.intake.store.index
        whole = repo_type == "model" and revision is None
        whole = whole and options.get("allow_patterns") is None and options.get("ignore_patterns") is None
        if whole and (aliased := self._aliased(repo_id)) is not None:  # an alias (Ollama's copy) is its entry
            return PullResult(aliased, "cache")
        plain = whole and ":" not in repo_id
        if plain:  # an imported entry of that name is the model (a sideload overrides the download)
            check_name(repo_id)
            entry = self.intake.catalog.find(imported_key(repo_id))
            if entry is not None:
                return PullResult(entry, "cache")
        if ":" in repo_id:  # org/repo-GGUF:Q4_K_M: that GGUF quantisation only (and its split parts)
            repo_id, options["allow_patterns"] = self._quant_files(repo_id, options)
        check_name(repo_id)
        if repo_type not in _hub.REPO_TYPES:
            raise HubError(f"repo_type must be one of {', '.join(_hub.REPO_TYPES)}, not {repo_type!r}")
        patterns = patterns_of(options.get("allow_patterns"), options.get("ignore_patterns"))
        repo_dir = self.intake.store.hub_dir / _hub.folder_name(repo_id, repo_type)
        tier, warnings, corrupt, failed, asked = self.tier, [], frozenset[str](), False, False
        local = _hub.snapshot_path(repo_dir, revision) is not None and _hub.has_snapshot(repo_dir)
        if local and tier is not None:  # a Hub download killed midway leaves a partial snapshot: the tier completes it
            local = self.intake.catalog.download_state(hub_key(repo_id, repo_type)) != "interrupted"
        if tier is not None and not local:  # a miss: the remote tier before the Hub (offline too)
            asked = True
            try:
                try:
                    got = pull_imported(self.intake, tier, repo_id, progress) if plain else None
                    metadata = _row_metadata(revision, patterns)
                    got = got or pull_hub(self.intake, tier, repo_id, repo_type, revision, patterns, metadata, progress)
                except Exception as exc:
                    raise tier_error(tier, repo_id, exc) from exc
            except RemoteTierError as exc:
                count(index, remote_errors=1)
                corrupt = frozenset({exc.sha256}) if isinstance(exc, CorruptBlobError) else corrupt
                failed = not isinstance(exc, TierContentError)  # down or too slow: not asked again in this pull
                warnings.append(f"{exc}; getting {repo_id} from the Hub instead")
                logger.warning("%s", warnings[-1])
            else:
                if got is not None:
                    count(index, remote_hits=1, bytes_from_remote=got[1])
                    return PullResult(got[0], "remote", bytes_from_remote=got[1])
                count(index, remote_misses=1)
        before = _hub.repo_size(repo_dir)
        try:
            entry = self.fetch_repo(repo_id, **options)
        except ModelNotFoundError as exc:
            if tier is None or not asked:
                raise
            said = str(exc).removeprefix(f"model {exc.model!r} not found: ")
            where = f"the remote tier {tier.url} failed" if warnings else f"not in the remote tier {tier.url}"
            raise ModelNotFoundError(exc.model, f"{where}; {said}") from None
        from_hub = max(0, _hub.repo_size(repo_dir) - before)
        pushed = False
        if tier is not None and not tier.read_only and not failed and (from_hub or corrupt):
            problem = write_through(tier, index, entry, revision=revision, patterns=patterns, force=corrupt)
            pushed = problem is None
            warnings += [problem] if problem else []
        return PullResult(entry, "hub" if from_hub else "cache", 0, from_hub, pushed, tuple(warnings))

    def _aliased(self, name: str) -> CacheEntry | None:
        """The entry `name` names when `name` is an alias (`CacheManager.alias`); None when it is none.
        An alias whose entry was evicted is a ModelNotFoundError: the entry's name is pulled again, not
        guessed (the alias does not say which files a partial entry, a GGUF quantisation, held)."""
        from provender._cache._aliases import Aliases

        alias = Aliases(self.intake.store).get(name)
        if alias is None:
            return None
        entry = self.intake.catalog.find(name)  # a name or key of an entry wins over an alias
        if entry is None:
            raise ModelNotFoundError(
                name,
                f"an alias of {alias.name or alias.key}, which is no longer in the cache: pull that again",
            )
        return entry

    def _quant_files(self, name: str, options: PullOptions) -> tuple[str, list[str] | str | None]:
        """For ``org/repo-GGUF:QUANT``: the repo and the files of that quantisation, chosen from the Hub's
        file list (offline: the cached snapshot's); failing that, from the remote tier's manifests of the repo,
        so that a node offline gets from the tier the quantisation another node pulled."""
        from provender._cache._gguf import quant_request, select_quant, split_tag

        revision, repo_type = options.get("revision"), options.get("repo_type", "model")
        try:
            return quant_request(
                self.intake.store,
                name,
                revision=revision,
                repo_type=repo_type,
                allow_patterns=options.get("allow_patterns"),
                endpoint=options.get("endpoint"),
            )
        except ModelNotFoundError as exc:
            tier = self.tier
            repo_id, quant = split_tag(name)
            if tier is None or quant is None:
                raise
            try:
                files = tier_files(tier, repo_id, repo_type, revision)
            except Exception as error:
                failure = tier_error(tier, repo_id, error)
                if not isinstance(failure, RemoteTierError):
                    raise failure from error
                count(self.intake.store.index, remote_errors=1)
                logger.warning("%s; cannot choose the files of %s from it", failure, name)
                raise exc from None
            if not files:
                said = str(exc).removeprefix(f"model {exc.model!r} not found: ")
                raise ModelNotFoundError(exc.model, f"not in the remote tier {tier.url}; {said}") from None
            return repo_id, select_quant(files, quant, repo=repo_id)

    def fetch(self, repo_id: str, **options: Unpack[PullOptions]) -> CacheEntry:
        """Download a Hub repo into ``<cache.dir>/hub`` with huggingface_hub (resumable, shared with `hf`).

        Honours ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT`` (or ``endpoint``, for a mirror). Files already cached are not
        downloaded again. Marks the entry used and evicts others to fit ``max_size``. With a remote tier,
        a miss is served from it first: this is ``pull(...).entry`` (the same options: `PullOptions`).
        """
        return self.pull(repo_id, **options).entry

    def fetch_repo(self, repo_id: str, **options: Unpack[PullOptions]) -> CacheEntry:
        """The Hub part of a pull (a GGUF quant request already resolved to patterns)."""
        from huggingface_hub.utils import (  # type: ignore[attr-defined]
            are_progress_bars_disabled,
            disable_progress_bars,
            enable_progress_bars,
        )

        if options.get("progress", True) is True:  # huggingface_hub's own bars; a callable is told the bytes
            return self._download(repo_id, **options)
        was_disabled = are_progress_bars_disabled()
        disable_progress_bars()
        try:
            return self._download(repo_id, **options)
        finally:
            if not was_disabled:
                enable_progress_bars()

    def _download(self, repo_id: str, **options: Unpack[PullOptions]) -> CacheEntry:
        """Download with huggingface_hub into hub/ under the download marker and a lease, then index it."""
        store, intake = self.intake.store, self.intake
        revision, repo_type = options.get("revision"), options.get("repo_type", "model")
        allow_patterns, ignore_patterns = options.get("allow_patterns"), options.get("ignore_patterns")
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

        key = hub_key(repo_id, repo_type)
        name = _hub.display_name(repo_id, repo_type)
        kwargs: dict[str, Any] = {
            "repo_id": repo_id,
            "repo_type": repo_type,
            "revision": revision,
            "cache_dir": str(store.hub_dir),
            "allow_patterns": allow_patterns,
            "ignore_patterns": ignore_patterns,
            "endpoint": options.get("endpoint"),
        }

        repo_dir = store.hub_dir / _hub.folder_name(repo_id, repo_type)
        check_repo_layout(store, repo_dir)  # huggingface_hub would write through a planted link: refuse first
        if store.index.degraded is not None:  # a full disk: refuse before anything is downloaded
            raise store.index.degraded
        # Refuse before downloading what could never fit (needs the Hub; skipped offline).
        plan: list[Any] | None = None
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
                plan = None
            else:
                total = sum(f.file_size or 0 for f in plan)
                needed = sum(f.file_size or 0 for f in plan if f.will_download)
                free = shutil.disk_usage(store.hub_dir).free
                if total > store.max_size or needed > free:
                    self.remove_empty_repo(repo_dir)  # the planning call may leave empty folders behind
                    if total > store.max_size:
                        raise EntryTooLargeError(name, total, store.max_size)
                    raise DiskFullError(store.hub_dir, needed)

        progress = options.get("progress", True)
        if callable(progress):  # told the bytes as they are written (no bar)
            kwargs["tqdm_class"] = hub_progress(progress, plan)
        store.walls.check("pending", "locks", "hub")
        pending = LeaseLock(store.pending_path(key))  # marks a download in progress (a flock, as filelock's)
        lease = LeaseLock(store.lease_path(key), is_singleton=False)  # eviction must not take what we update
        with fs_errors(store.cache_dir):
            pending.acquire_write()
        lease.acquire_read()
        try:
            try:
                with fs_errors(store.hub_dir):
                    snapshot_download(**kwargs)  # type: ignore[call-overload]
            except LocalEntryNotFoundError:
                raise ModelNotFoundError(
                    name,
                    "not in the cache, and the Hub cannot be reached (offline: HF_HUB_OFFLINE is set, or no network)",
                ) from None
            except (RepositoryNotFoundError, GatedRepoError):
                raise ModelNotFoundError(name, f"the Hub has no such {repo_type} repo, or it needs a token") from None
            except RevisionNotFoundError:
                raise ModelNotFoundError(name, f"the Hub has no revision {revision!r}") from None
            except HfHubHTTPError as exc:
                raise HubError(f"downloading {name} failed: {exc}") from None
            folder = _hub.folder_name(repo_id, repo_type)
            metadata = _row_metadata(revision, patterns_of(allow_patterns, ignore_patterns))
            evicted = intake.commit_hub(key, folder, repo_type, repo_id, metadata, pending)
        finally:
            pending.release()  # a no-op if released already
            lease.release()
            lease.close()
        intake.evictor.notify(evicted)
        return intake.catalog.get(key)

    def remove_empty_repo(self, repo_dir: Path) -> None:
        """Take away the empty folders a refused plan left; never a file, so never a repo another process
        downloaded meanwhile (rmdir fails on anything not empty), and nothing while a download runs."""
        with self.intake.store.lock:
            if self.intake.catalog.download_state(hub_key(*_parse(repo_dir))) == "running":
                return
            for root, _dirs, _files in sorted(os.walk(repo_dir), key=lambda t: -len(t[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(root)


def hub_progress(report: Callable[[int, int], object], plan: list[Any] | None) -> type:
    """A progress class for `snapshot_download` (its ``tqdm_class``) that tells `report` (bytes so far,
    bytes in all) as each chunk of the Hub's files is written; it draws no bar.

    huggingface_hub sums its files' bytes into one bar (each chunk written, and the part of a file an
    interrupted download left) beside a bar of the bytes sent over the network and one of files
    done: only the first is counted. `plan` (the dry run; None offline) gives the total and the bytes
    cached already, told at once; without it the total is the one huggingface_hub grows as files start.
    """
    import threading

    from huggingface_hub.utils import tqdm  # type: ignore[attr-defined]

    total = sum(f.file_size or 0 for f in plan) if plan is not None else None
    done = [sum(f.file_size or 0 for f in plan if not f.will_download) if plan is not None else 0]
    lock = threading.Lock()

    class Counting(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            # the bytes written: in bytes, and not the network's bar (named ``...transfer``)
            self.written = kwargs.get("unit") == "B" and not str(kwargs.get("name") or "").endswith("transfer")
            super().__init__(*args, **{**kwargs, "disable": True})  # type: ignore[no-untyped-call]

        def update(self, n: float | None = 1) -> bool | None:
            if self.written and n:
                with lock:  # the download threads' chunks, told in order
                    done[0] += int(n)
                    whole = total if total is not None else int(self.total or 0)
                    report(done[0], max(whole, done[0]))
            return super().update(n)  # type: ignore[no-any-return]

    if total is not None:
        report(min(done[0], total), total)
    return Counting


def tier_error(tier: RemoteTier, name: str, exc: Exception) -> Exception:
    """What a failure while reading from the tier is: the cache's own errors (a full disk, a planted link)
    as they are; any other (an OverflowError, an OSError that content of the tier caused) a tier error, so
    that the pull warns once and asks the Hub instead of failing (the traceback is logged at debug level)."""
    if isinstance(exc, ProvenderError):
        return exc
    logger.debug("reading %s from the remote tier %s failed", name, tier.url, exc_info=exc)
    return TierContentError(tier.url, f"its copy of {name} could not be read ({type(exc).__name__}: {exc})"[:400])


def _row_metadata(revision: str | None, patterns: dict[str, Any] | None) -> dict[str, Any]:
    """What a Hub entry's index row remembers of the request (`push` writes the same snapshot)."""
    meta: dict[str, Any] = {"revision": revision} if revision else {}
    if patterns:
        meta.update(allow_patterns=patterns["allow"], ignore_patterns=patterns["ignore"])
    return meta


def _parse(repo_dir: Path) -> tuple[str, str]:
    parsed = _hub.parse_folder_name(repo_dir.name)
    assert parsed is not None
    repo_type, repo_id = parsed
    return repo_id, repo_type
