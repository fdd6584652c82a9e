"""Ollama's native API, the routes that change the cache: ``/api/delete``, ``/api/copy``, ``/api/pull``.

- ``DELETE /api/delete``: the cache entry, refused (409) while pinned, in use, loaded, or named by
  aliases, as ``cache rm``; the name of an alias removes only the alias;
- ``POST /api/copy`` (``source``, ``destination``): an alias in the cache (`CacheManager.alias`),
  200 with an empty body; 404 when the source is not cached, 400 for a destination that cannot
  be an alias (a path, a key, a provider's prefix), 409 when an entry has that name;
- ``POST /api/pull``: into the cache from the remote tier or the Hub (``server.pull`` applies), its
  progress streamed as Ollama streams it while the bytes arrive: ``{"status": "pulling manifest"}``,
  then ``{"status": "pulling <digest>", "digest", "total", "completed"}`` as each chunk of the
  remote tier lands or each file of the Hub is written, then ``verifying sha256 digest``,
  ``writing manifest``, ``success``. An alias is its cached model (`pull_name`). What fails
  before the first line is an HTTP error in Ollama's shape; what fails later is an
  ``{"error": ...}`` line, as Ollama does. ``stream: false`` answers ``{"status": "success"}`` at the end.

Each goes through the same admission as the other Ollama routes (the key, the server's walls:
`provender_serve._ollama.Ollama.endpoint`).
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from provender_serve._ollama import NDJSON, _Loose, line
from provender_serve.errors import APIError

if TYPE_CHECKING:
    from provender_serve._app import Server
    from provender_serve._ollama import Ollama
    from provender_serve._ollama_models import NameRequest


class CopyRequest(_Loose):
    source: str = Field(min_length=1, max_length=1024)
    destination: str = Field(min_length=1, max_length=1024)


def _cache_error(exc: Exception) -> APIError:
    from provender.errors import EntryExistsError, InvalidModelNameError, InvalidNameError
    from provender_serve._web_api import cache_error

    if isinstance(exc, InvalidNameError | InvalidModelNameError):
        return APIError(400, str(exc), "invalid_name")
    if isinstance(exc, EntryExistsError):
        return APIError(409, str(exc), "exists")
    error = cache_error(exc)
    return APIError(error.status, error.message, error.code)


class CacheRoutes:
    """The routes of this module, bound to one server."""

    def __init__(self, server: Server, api: Ollama) -> None:
        self.server, self.api = server, api

    async def delete(self, request: Request) -> Response:
        from provender_serve._ollama_models import NameRequest, ollama_name
        from provender_serve._threads import run_in_thread

        req: NameRequest = await self.api.body(request, NameRequest)
        name = req.which()

        def remove() -> None:
            from provender import CacheManager, parse_model_name
            from provender.errors import EntryNotFoundError

            cm = CacheManager()
            try:
                bare = parse_model_name(ollama_name(name))[1]
                known = cm.aliases()
                if bare in known and known[bare].name != bare:  # an alias: only the alias goes, loaded or not
                    cm.unalias(bare)
                    return
                if name in self.server.registry.names():
                    raise APIError(
                        409, f"cannot remove '{name}': it is loaded; unload it first (keep_alive 0)", "in_use"
                    )
                try:
                    cm.remove(bare)
                except EntryNotFoundError:
                    cm.unalias(bare)  # an alias whose entry was evicted: the alias alone (else: not found)
            except Exception as exc:
                raise _cache_error(exc) from None

        await run_in_thread(remove)
        return Response(status_code=200)

    async def copy(self, request: Request) -> Response:
        from provender import get_plugin_manager, parse_model_name
        from provender_serve._ollama_models import ollama_name
        from provender_serve._threads import run_in_thread

        req: CopyRequest = await self.api.body(request, CopyRequest)
        prefix, _ = parse_model_name(req.destination)
        if prefix is not None and prefix in get_plugin_manager().providers():
            raise APIError(
                400, f"destination: {req.destination!r} would name the provider {prefix!r}; pick another name"
            )

        def alias() -> None:
            from provender import CacheManager

            try:
                source = parse_model_name(ollama_name(req.source))[1]
                CacheManager().alias(source, req.destination)
            except Exception as exc:
                raise _cache_error(exc) from None

        await run_in_thread(alias)
        return Response(status_code=200)

    async def pull(self, request: Request) -> Response:
        from provender_serve._ollama_models import NameRequest
        from provender_serve._threads import run_in_thread
        from provender_serve._walls import may_pull, pull_refused

        req: NameRequest = await self.api.body(request, NameRequest)
        name = pull_name(req.which())
        origin = request.headers.get("origin")
        if not may_pull(self.server.options.pull, origin):
            raise pull_refused(self.server.options.pull, origin, name)
        if not req.stream:
            await run_in_thread(lambda: _pull(name, False))
            return JSONResponse({"status": "success"})
        events = Pulling(name)
        first = await run_in_thread(events.next)  # a failure before any byte is an HTTP error
        if first[0] == "error":
            raise _pull_error(name, first[1])
        return StreamingResponse(events.lines(first), media_type=NDJSON)

    def unserved(self, e: Any) -> list[Route]:
        """Ollama's routes that build or share models, answered in Ollama's shape (a 404 saying what
        to use instead), not as an unknown path: ``/api/create``, ``/api/push``, ``/api/blobs/DIGEST``."""

        def refuse(message: str) -> Any:
            async def handler(request: Request) -> Response:
                if request.method == "HEAD":  # a blob probe (`ollama create`): not here
                    return Response(status_code=404)
                raise APIError(404, f"{request.url.path}: {message}", "not_supported")

            return e(handler)

        create = "this server builds no models from a Modelfile; /api/copy makes an alias, `cache import` adds one"
        return [
            Route("/api/create", refuse(create), methods=["POST"]),
            Route("/api/blobs/{digest}", refuse(create), methods=["HEAD", "POST"]),
            Route(
                "/api/push",
                refuse("this server pushes to no registry; `provender cache push` fills a remote tier"),
                methods=["POST"],
            ),
        ]


def pull_name(name: str) -> str:
    """What `/api/pull` asks the cache for, by the colon rule (`ollama_name`): an installed provider's
    prefix dropped, then a ``:latest`` tag. What is left may be an alias (its entry: `CacheManager.pull`),
    a Hub repo, an imported entry's name, or a GGUF ``repo:QUANT``; unlike the other routes, a name
    with a colon that is not cached is pulled, not a 404."""
    from provender import get_plugin_manager, parse_model_name

    prefix, rest = parse_model_name(name)
    if prefix is not None and prefix in get_plugin_manager().providers():
        name = rest
    return name.removesuffix(":latest")


def _pull(name: str, progress: Any) -> Any:
    from provender import CacheManager

    return CacheManager().pull(name, progress=progress)


def _pull_error(name: str, exc: BaseException) -> APIError:
    if isinstance(exc, APIError):
        return exc
    from provender.errors import ModelNotFoundError

    if isinstance(exc, ModelNotFoundError):
        return APIError(404, f"pull {name!r}: {exc}", "model_not_found")
    if isinstance(exc, Exception):
        try:
            return _cache_error(exc)
        except Exception:
            pass
    return APIError(500, f"pull {name!r}: {exc}", "pull_failed")


class Pulling:
    """One pull on its own thread, its progress handed over as events:
    ``("progress", completed, total)``, then ``("done", result)`` or ``("error", exception)``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.digest = "sha256:" + hashlib.sha256(name.encode()).hexdigest()  # names the pull (blobs are summed)
        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        threading.Thread(target=self._run, name=f"pull {name}", daemon=True).start()

    def _run(self) -> None:
        try:
            result = _pull(self.name, lambda done, total: self.events.put(("progress", done, total)))
        except BaseException as exc:
            self.events.put(("error", exc))
        else:
            self.events.put(("done", result))

    def next(self) -> tuple[Any, ...]:
        return self.events.get()

    def lines(self, first: tuple[Any, ...]) -> Iterator[bytes]:
        """NDJSON in Ollama's order; the pull goes on (into the cache) if the client goes away."""
        yield line({"status": "pulling manifest"})
        event, size = first, 0
        while True:
            if event[0] == "progress":
                _, done, total = event
                size = total
                yield line(
                    {"status": f"pulling {self.digest}", "digest": self.digest, "total": total, "completed": done}
                )
            elif event[0] == "error":
                yield line({"error": _pull_error(self.name, event[1]).message})
                return
            else:
                entry = event[1].entry
                if not size:  # nothing told (in the cache already, or from the Hub offline): one line of the whole
                    yield line(
                        {
                            "status": f"pulling {self.digest}",
                            "digest": self.digest,
                            "total": entry.size,
                            "completed": entry.size,
                        }
                    )
                yield line({"status": "verifying sha256 digest"})
                yield line({"status": "writing manifest"})
                yield line({"status": "success"})
                return
            event = self.next()
