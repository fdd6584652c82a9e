"""The web page's JSON routes (``/api/web/...``): the cache, one entry's details, and the actions
that change the cache, each through the same `CacheManager` calls and refusals as the CLI.

Reading routes need what every route needs (the walls, the API key when set). Routes that change
state also need the page's token (`WebToken`) in the ``X-Provender-Token`` header: a page of
another site cannot read it (the walls refuse its requests, and a cross-origin page cannot read
ours), and a DNS-rebinding page never gets a page from this server to read it from (its ``Host``
is refused). Cache errors are answered in the server's error shape: a pinned entry's removal is a
409 whose message is the CLI's own ("cannot remove 'org/m': it is pinned ...").
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from provender_serve.errors import APIError

if TYPE_CHECKING:
    from provender import CacheEntry, CacheManager
    from provender_serve._app import Server

logger = logging.getLogger(__name__)
TOKEN_HEADER = "x-provender-token"
MAX_FILES = 500  # files listed in one entry's details


class WebToken:
    """A random token made once per server; state-changing web routes require it."""

    def __init__(self) -> None:
        self.value = secrets.token_urlsafe(32)

    def check(self, request: Request) -> None:
        sent = request.headers.get(TOKEN_HEADER, "")
        if not hmac.compare_digest(sent.encode("latin-1", "replace"), self.value.encode("ascii")):
            raise APIError(
                403,
                "this request changes the server's state and needs the web page's token "
                f"({TOKEN_HEADER.title()} header): send it from the page at /",
                "token_required",
            )


def cache_error(exc: Exception) -> APIError:
    """A cache error as an HTTP answer (404 no such entry, 409 refused, 400 ambiguous)."""
    from provender.errors import AmbiguousNameError, EntryInUseError, EntryNotFoundError, ProvenderError

    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, EntryNotFoundError):
        return APIError(404, str(exc), "entry_not_found", "name")
    if isinstance(exc, EntryInUseError):
        return APIError(409, str(exc), "entry_in_use", "name")
    if isinstance(exc, AmbiguousNameError):
        return APIError(400, str(exc), "ambiguous_name", "name")
    if isinstance(exc, ProvenderError):
        return APIError(500, str(exc), "cache_error")
    raise exc


class Claims:
    """Which providers claim each entry, remembered per entry as long as the entry is the same
    (key, size, creation time, revision): asking every plugin about 1,000 entries takes seconds,
    and an entry's files do not change under the same key without its size or time changing."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[tuple[Any, ...], list[str]]] = {}
        self._lock = threading.Lock()
        self._prefer: list[str] | None = None  # providers.prefer, read once (as the server reads its settings)

    @staticmethod
    def _fingerprint(entry: CacheEntry) -> tuple[Any, ...]:
        return (entry.size, entry.created, entry.kind, entry.metadata.get("revision"), entry.metadata.get("filename"))

    def __call__(self, entries: list[CacheEntry], *, every: bool = False) -> dict[str, list[str]]:
        """provider names per entry key, the serving one first (as `provender cache ls` orders them);
        `every`: `entries` is the whole cache, and entries not in it are forgotten."""
        from provender import get_plugin_manager
        from provender._resolve import prefer_order
        from provender._settings import load_settings

        manager = get_plugin_manager()
        if not manager.has_implementations("provender_claim_model"):
            return {}
        if self._prefer is None:
            self._prefer = list(load_settings().providers.prefer)  # ~10 ms a time: not per request
        prefer = self._prefer
        out: dict[str, list[str]] = {}
        for entry in entries:
            mark = self._fingerprint(entry)
            with self._lock:
                known = self._known.get(entry.key)
            if known is None or known[0] != mark:
                known = (mark, prefer_order(manager.claim(entry), prefer))
                with self._lock:
                    self._known[entry.key] = known
            out[entry.key] = list(known[1])
        if every:
            with self._lock:
                for key in set(self._known) - set(out):
                    del self._known[key]
        return out


_claims = Claims()


def claims_of(entries: list[CacheEntry], *, every: bool = False) -> dict[str, list[str]]:
    """The providers that claim each of `entries`, from the server's one `Claims` cache
    (the web page's and ``/v1/models``'): the serving one first."""
    return _claims(entries, every=every)


def warm_claims() -> threading.Thread:
    """Ask the plugins about every cached entry now, on a thread of its own, so that the page's
    first load finds the answers (`Claims`); a cache that cannot be read is left to the requests."""

    def run() -> None:
        from provender import CacheManager

        try:
            claims_of(CacheManager().entries(), every=True)
        except Exception as exc:  # the page's own request reports it
            logger.debug("could not list the cache ahead of the web page: %s", exc)

    thread = threading.Thread(target=run, name="provender-web-warm", daemon=True)
    thread.start()
    return thread


def _row(entry: CacheEntry, providers: list[str]) -> dict[str, Any]:
    """One entry as the list draws it: `provender cache ls --json`'s key, name, kind, size,
    providers and pinned, and ``last_used`` in seconds since the epoch (the details have the rest)."""
    return {
        "key": entry.key,
        "name": entry.name,
        "kind": entry.kind,
        "size": entry.size,
        "last_used": entry.last_used,
        "providers": providers,
        "provider": next(iter(providers), None),
        "pinned": entry.pinned,
    }


def cache_view(cm: CacheManager, allowed: list[str] | None = None) -> dict[str, Any]:
    """The cache as the page draws it: its stats, its limit, one row per entry (most recent
    first) and the models this server may serve (server.models; empty: any it can claim)."""
    entries = cm.entries(sort="used", prompts=True)  # syncs the index with the disk, once
    # saved prompt caches are listed as their own kind ("prompt"), never claimed as models
    claims = claims_of([e for e in entries if e.kind != "prompt"], every=True)
    counters = cm.index.stats()  # `CacheManager.stats()` without a second sync
    lookups = counters["hits"] + counters["misses"]
    stats = {
        **counters,
        "hit_rate": counters["hits"] / lookups if lookups else None,
        "entries": len(entries),
        "size": sum(e.size for e in entries),
        "max_size": cm.max_size,
        "pinned": sum(e.pinned for e in entries),
        "cache_dir": str(cm.cache_dir),
    }
    return {
        "stats": stats,
        "max_size": cm.max_size,
        "allowed": list(allowed or []),
        "entries": [_row(e, claims.get(e.key, [])) for e in entries],
    }


def _files(root: Path) -> tuple[list[dict[str, Any]], int]:
    """(up to MAX_FILES files under `root` with their sizes, how many files there are)."""
    if root.is_file():
        return [{"path": root.name, "size": root.stat().st_size}], 1
    out: list[dict[str, Any]] = []
    count = 0
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            if name.startswith(".provender-"):  # the cache's own bookkeeping (an entry's manifest)
                continue
            count += 1
            if len(out) < MAX_FILES:
                path = Path(folder, name)
                try:
                    size = path.stat().st_size  # follows a Hub snapshot's links to their blobs
                except OSError:
                    size = None
                out.append({"path": str(path.relative_to(root)), "size": size})
    return out, count


def details(cm: CacheManager, name: str, loaded: list[dict[str, Any]]) -> dict[str, Any]:
    """One entry: its `cache ls --json` row, files, revision, GGUF files, whether a process holds it,
    and the server's loaded models that are it."""
    from provender._cache._gguf import entry_gguf_files

    entry = cm.get(name)
    providers = claims_of([entry]).get(entry.key, [])
    files, count = _files(entry.model_path)
    from provender import parse_model_name

    return {
        **entry.to_dict(providers=providers),
        "provider": next(iter(providers), None),
        "revision": entry.metadata.get("revision") or entry.metadata.get("commit_hash"),
        "repo_type": entry.repo_type,
        "source": entry.metadata.get("source"),
        "gguf_files": entry_gguf_files(entry),
        "files": files,
        "file_count": count,
        "in_use": cm.in_use(entry.key),
        "loaded": [row["model"] for row in loaded if parse_model_name(row["model"])[1] == entry.name],
    }


def plan_view(cm: CacheManager) -> dict[str, Any]:
    """What `provender cache prune --dry-run` shows: what would go, what is kept and why."""
    plan = cm.plan_eviction()
    return {
        "limit": plan.limit,
        "total": plan.total,
        "freed": plan.freed,
        "after": plan.after,
        "fits": plan.fits,
        "evict": [{"key": e.key, "name": e.name, "size": e.size} for e in plan.evict],
        "kept": [{"key": e.key, "name": e.name, "size": e.size, "reason": why} for e, why in plan.kept],
    }


class WebAPI:
    """The routes' handlers, bound to one server (its registry) and its token."""

    def __init__(self, server: Server, token: WebToken) -> None:
        self.server = server
        self.token = token
        self._cm: CacheManager | None = None  # one for the server's life, as its settings are (~20 ms each)

    def _manager(self) -> CacheManager:
        if self._cm is None:
            from provender import CacheManager

            self._cm = CacheManager()
        return self._cm

    async def _body(self, request: Request) -> dict[str, Any]:
        body = await self.server._json(request)
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object", "invalid_json")
        return body

    async def _name(self, request: Request) -> str:
        name = (await self._body(request)).get("name")
        if not isinstance(name, str) or not name.strip():
            message = "'name' must name a cache entry (a name, key or unique key prefix)"
            raise APIError(400, message, "invalid_value", "name")
        return name

    async def _cache(self, work: Any) -> Response:
        from provender_serve._threads import run_in_thread

        def call() -> Any:
            try:
                return work(self._manager())
            except Exception as exc:
                raise cache_error(exc) from None

        return JSONResponse(await run_in_thread(call))

    # -- reading -----------------------------------------------------------------------

    async def cache(self, request: Request) -> Response:
        allowed = self.server.options.allowed
        return await self._cache(lambda cm: cache_view(cm, allowed))

    async def entry(self, request: Request) -> Response:
        name = request.query_params.get("name", "")
        if not name:
            raise APIError(400, "'name' (a query parameter) must name a cache entry", "invalid_value", "name")
        loaded = self.server.registry.snapshot()
        return await self._cache(lambda cm: details(cm, name, loaded))

    async def plan(self, request: Request) -> Response:
        return await self._cache(plan_view)

    # -- changing (token required) -----------------------------------------------------

    async def pin(self, request: Request) -> Response:
        self.token.check(request)
        name = await self._name(request)
        return await self._cache(lambda cm: {"pinned": cm.pin(name).name})

    async def unpin(self, request: Request) -> Response:
        self.token.check(request)
        name = await self._name(request)
        return await self._cache(lambda cm: {"unpinned": cm.unpin(name).name})

    async def remove(self, request: Request) -> Response:
        self.token.check(request)
        name = await self._name(request)

        def remove(cm: CacheManager) -> dict[str, Any]:
            entry = cm.remove(name)  # refused while pinned or held, as `provender cache rm`
            return {"removed": entry.name, "size": entry.size}

        return await self._cache(remove)

    async def prune(self, request: Request) -> Response:
        """Carry out the plan the page showed: refused (409) if the plan is no longer that one."""
        self.token.check(request)
        shown = (await self._body(request)).get("evict")
        if not isinstance(shown, list) or not all(isinstance(k, str) for k in shown):
            raise APIError(400, "'evict' must list the keys of the plan shown (GET /api/web/prune)", "invalid_value")

        def prune(cm: CacheManager) -> dict[str, Any]:
            now = [e.key for e in cm.plan_eviction().evict]
            if sorted(now) != sorted(shown):
                raise APIError(409, "the cache changed since the plan was shown: look at the new plan", "plan_changed")
            done = cm.prune()
            evicted = [{"key": e.key, "name": e.name, "size": e.size} for e in done.evict]
            return {"evicted": evicted, "freed": done.freed}

        return await self._cache(prune)

    async def unload(self, request: Request) -> Response:
        self.token.check(request)
        return await self.server.unload(request)
