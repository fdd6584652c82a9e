"""The ASGI application: OpenAI's endpoints over a `ModelRegistry`, on Starlette.

Every provider call runs on its model's own thread (the event loop only moves bytes), so
requests for different models run in parallel and one model serves one request at a
time, in order. A streamed answer is produced on that thread and handed to the loop
chunk by chunk; when the client goes away the thread stops at the next chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from provender_serve import _openai as oai
from provender_serve._batching import batched
from provender_serve._embed_batch import EmbedBatches
from provender_serve._events import chat_events, completion_events
from provender_serve._generate import Reply, chunks
from provender_serve._metrics import CONTENT_TYPE, Counted, Metrics, route_paths
from provender_serve._models import ModelRegistry, Slot, api_error
from provender_serve._schemas import (
    DEFAULT_MAX_TOKENS_LIMIT,
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    UnloadRequest,
    check_text,
    parse,
    parse_keep_alive,
)
from provender_serve._structured import chat_constraint
from provender_serve._threads import READY, closing, error_response, on_model, run_in_thread, stream_from_model
from provender_serve._walls import Pull, Walls, may_pull, needs_download, pull_refused
from provender_serve._web import web_routes
from provender_serve.errors import APIError

#: /api/ paths of provender's own (the rest of /api/ is Ollama's and answers in Ollama's error shape)
PROVENDER_API = ("/api/provender/", "/api/web/", "/api/unload")

logger = logging.getLogger(__name__)


class Service(Protocol):
    """Work a server runs beside its requests, from its start to its end."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class ServerOptions:
    """How a server behaves; `provender serve` fills it from the settings and its options."""

    api_key: str = ""
    allowed: list[str] = field(default_factory=list)
    max_models: int = 2
    keep_alive: float = 300.0
    queue_size: int = 16
    max_body: int = 8 * 2**20
    max_tokens_limit: int = DEFAULT_MAX_TOKENS_LIMIT
    #: origins (``scheme://host[:port]``, ``*`` wildcards) allowed besides the server's own (server.origins)
    origins: list[str] = field(default_factory=list)
    #: Host names (``name`` or ``name:port``; ``*``: any) allowed besides the server's addresses
    allowed_hosts: list[str] = field(default_factory=list)
    #: which requests may download a model they name (server.pull)
    pull: Pull = "without-origin"
    #: whether a request may name a model by a local path (server.local_paths, "auto" resolved)
    local_paths: bool = True


class Server:
    """The endpoints, bound to one registry and one set of options."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.registry = ModelRegistry(
            allowed=options.allowed,
            local_paths=options.local_paths,
            max_models=options.max_models,
            keep_alive=options.keep_alive,
            queue_size=options.queue_size,
        )
        self.metrics = Metrics(self.registry)  # /metrics: this server's own Prometheus registry
        self.embed_batches = EmbedBatches(self.registry)  # concurrent embedding requests, batched
        #: started when the app starts serving, stopped when it ends (the web page's stats sampler)
        self.services: list[Service] = []
        try:  # the weights in the core's model pool follow the server's limits
            from provender import model_pool

            model_pool().configure(max_models=options.max_models, keep_alive=options.keep_alive)
        except (ImportError, AttributeError) as exc:
            logger.debug("no core model pool to configure: %s", exc)

    # -- plumbing ----------------------------------------------------------------------

    def endpoint(
        self, handler: Callable[[Request], Awaitable[Response]], *, auth: bool = True
    ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            try:
                if auth:
                    self._check_auth(request)
                return await handler(request)
            except Exception as exc:
                return error_response(api_error(exc))

        return wrapped

    def _check_auth(self, request: Request) -> None:
        key = self.options.api_key
        if not key:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        # headers arrive as bytes (Starlette decodes them as latin-1): compare the client's bytes
        # with the key's UTF-8, so a non-ASCII key works from clients that send UTF-8
        sent = token.strip().encode("latin-1", "replace")
        if scheme.lower() != "bearer" or not hmac.compare_digest(sent, key.encode("utf-8", "surrogatepass")):
            raise APIError(401, "a valid API key is required: send 'Authorization: Bearer <key>'", "invalid_api_key")

    async def _json(self, request: Request) -> Any:
        limit = self.options.max_body
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise APIError(413, f"the request body is larger than this server accepts ({limit} bytes)", "too_large")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > limit:
                raise APIError(413, f"the request body is larger than this server accepts ({limit} bytes)", "too_large")

        def constant(name: str) -> Any:
            raise ValueError(f"{name} is not a JSON number")

        try:
            value = json.loads(bytes(data), parse_constant=constant)
        except (ValueError, RecursionError) as exc:
            raise APIError(400, f"the request body is not valid JSON: {exc}", "invalid_json") from None
        check_text(value)
        if isinstance(value, dict) and isinstance(value.get("model"), str):
            request.state.model = value["model"]  # this request's model label in /metrics (_metrics.Counted)
        return value

    async def _check_pull(self, request: Request, model: str) -> None:
        """Refuse (403) a request that would download `model` when server.pull does not let it."""
        origin = request.headers.get("origin")
        if may_pull(self.options.pull, origin) or model in self.registry.names():
            return
        if await run_in_thread(lambda: needs_download(model)):
            raise pull_refused(self.options.pull, origin, model)

    # -- endpoints ---------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        from provender import __version__

        return JSONResponse(
            {
                "status": "ok",
                "service": "provender",
                "version": __version__,
                "pid": os.getpid(),
                "models_loaded": len(self.registry.names()),
            }
        )

    async def chat(self, request: Request) -> Response:
        req: ChatRequest = parse(ChatRequest, await self._json(request), max_tokens_limit=self.options.max_tokens_limit)
        keep_alive = parse_keep_alive(req.keep_alive)
        messages = [m.to_provider() for m in req.messages]
        tools = req.tool_dicts()
        options = {**req.options(), **chat_constraint(req, tools)}
        await self._check_pull(request, req.model)
        cid = oai.new_id("chatcmpl")
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return await stream_from_model(
                self.registry,
                req.model,
                lambda slot, cancel: self._sse(
                    slot,
                    keep_alive,
                    options,
                    {"messages": messages, "tools": tools},
                    lambda first, rest: chat_events(
                        cid,
                        slot.name,
                        slot.provider,
                        first,
                        rest,
                        max_tokens=options.get("max_tokens"),
                        messages=messages,
                        tools=tools,
                        include_usage=include_usage,
                        cancel=cancel,
                    ),
                ),
                lambda slot: not batched(slot, options),
            )

        def work(slot: Slot) -> dict[str, Any]:
            with self.registry.hold(slot, keep_alive=keep_alive, exclusive=not batched(slot, options)):
                reply = Reply(options.get("max_tokens"))
                generated = chunks(slot, messages=messages, tools=tools, options=options)
                with closing(self.metrics.metered(slot, generated, messages)) as stream:
                    for chunk in stream:
                        reply.add(chunk)
                counts = reply.usage(slot.provider, messages)
            content, calls = oai.parse_tool_calls(reply.text, tools) if tools else (reply.text, [])
            finish = reply.finish_reason(slot.provider, calls)
            return oai.chat_completion(cid, req.model, content, calls, finish, counts, reply.logprobs)

        return JSONResponse(await on_model(self.registry, req.model, work, lambda slot: not batched(slot, options)))

    def _sse(
        self,
        slot: Slot,
        keep_alive: float | None,
        options: dict[str, Any],
        source: dict[str, Any],
        events: Callable[[list[Any], Iterator[Any]], Iterator[bytes]],
    ) -> Iterator[bytes]:
        """A streamed answer on `slot`'s thread: the chunks of `source` (``prompt=``, or
        ``messages=`` and ``tools=``) as the events `events(first, rest)` makes, then ``[DONE]``."""
        with self.registry.hold(slot, keep_alive=keep_alive, exclusive=not batched(slot, options)):
            generated = chunks(slot, options=options, **source)
            asked = source.get("messages", source.get("prompt"))
            with closing(self.metrics.metered(slot, generated, asked)) as stream:
                # what fails before the first chunk (a schema the engine refuses, an option the
                # provider lacks, a model that cannot load) is an HTTP error, not an in-band one
                first = list(itertools.islice(stream, 1))
                yield READY
                yield from events(first, stream)
            yield oai.sse("[DONE]")

    async def completions(self, request: Request) -> Response:
        limit = self.options.max_tokens_limit
        req: CompletionRequest = parse(CompletionRequest, await self._json(request), max_tokens_limit=limit)
        keep_alive = parse_keep_alive(req.keep_alive)
        await self._check_pull(request, req.model)
        prompt, options = req.text(), req.options()
        if req.system_prompt is not None:
            options["system_prompt"] = req.system_prompt
        cid = oai.new_id("cmpl")
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return await stream_from_model(
                self.registry,
                req.model,
                lambda slot, cancel: self._sse(
                    slot,
                    keep_alive,
                    options,
                    {"prompt": prompt},
                    lambda first, rest: completion_events(
                        cid,
                        slot.name,
                        slot.provider,
                        first,
                        rest,
                        max_tokens=options.get("max_tokens"),
                        prompt=prompt,
                        include_usage=include_usage,
                        cancel=cancel,
                    ),
                ),
                lambda slot: not batched(slot, options),
            )

        def work(slot: Slot) -> dict[str, Any]:
            with self.registry.hold(slot, keep_alive=keep_alive, exclusive=not batched(slot, options)):
                reply = Reply(options.get("max_tokens"))
                generated = chunks(slot, prompt=prompt, options=options)
                with closing(self.metrics.metered(slot, generated, prompt)) as stream:
                    for chunk in stream:
                        reply.add(chunk)
                counts = reply.usage(slot.provider, prompt)
            finish = reply.finish_reason(slot.provider, [])
            logprobs = oai.completion_logprobs(reply.logprobs)
            return oai.completion(cid, req.model, reply.text, finish, counts, logprobs=logprobs)

        return JSONResponse(await on_model(self.registry, req.model, work, lambda slot: not batched(slot, options)))

    async def embeddings(self, request: Request) -> Response:
        req: EmbeddingRequest = parse(EmbeddingRequest, await self._json(request))
        keep_alive = parse_keep_alive(req.keep_alive)
        await self._check_pull(request, req.model)
        vectors, tokens = await self.embed_batches.embed(req.model, req.texts(), keep_alive)
        return JSONResponse(oai.embeddings(req.model, vectors, req.encoding_format, tokens))

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": await run_in_thread(self._model_rows)})

    def _model_rows(self) -> list[dict[str, Any]]:
        from provender import parse_model_name

        rows: dict[str, dict[str, Any]] = {}
        if self.options.allowed:
            for name in self.options.allowed:
                owner = parse_model_name(name)[0] or "provender"
                rows[name] = {"id": name, "object": "model", "created": 0, "owned_by": owner}
        else:
            from provender import CacheManager
            from provender_serve._web_api import claims_of

            entries = CacheManager().entries(sort="name")
            claims = claims_of(entries, every=True)  # the web page's: asked once per entry while it is unchanged
            for entry in entries:
                if claims.get(entry.key):
                    created = int(entry.created or 0)
                    owner = claims[entry.key][0]
                    rows[entry.name] = {"id": entry.name, "object": "model", "created": created, "owned_by": owner}
        for row in self.registry.snapshot():
            rows.setdefault(row["model"], {"id": row["model"], "object": "model", "created": 0})
            rows[row["model"]].update(owned_by=row["provider"], loaded=True)
        return list(rows.values())

    async def metrics_text(self, request: Request) -> Response:
        return Response(await run_in_thread(self.metrics.render), media_type=CONTENT_TYPE)

    async def ps(self, request: Request) -> Response:
        pool: list[dict[str, Any]] = []
        with contextlib.suppress(ImportError, AttributeError):
            from provender import model_pool

            pool = model_pool().snapshot()
        batches = self.embed_batches.stats()
        return JSONResponse({"models": self.registry.snapshot(), "pool": pool, "embed_batches": batches})

    async def unload(self, request: Request) -> Response:
        req: UnloadRequest = parse(UnloadRequest, await self._json(request))
        if req.model is None:
            return JSONResponse({"unloaded": await run_in_thread(self.registry.unload_all)})
        name = req.model
        if not await run_in_thread(lambda: self.registry.unload(name)):
            raise APIError(404, f"model {name!r} is not loaded", "model_not_loaded", "model")
        return JSONResponse({"unloaded": [name]})


def create_app(options: ServerOptions | None = None) -> Starlette:
    """The server as an ASGI application (``uvicorn.run(create_app())`` serves it)."""
    server = Server(options or ServerOptions())
    e = server.endpoint
    routes = [
        Route("/health", e(server.health, auth=False), methods=["GET"]),
        Route("/v1/models", e(server.models), methods=["GET"]),
        Route("/v1/chat/completions", e(server.chat), methods=["POST"]),
        Route("/v1/completions", e(server.completions), methods=["POST"]),
        Route("/v1/embeddings", e(server.embeddings), methods=["POST"]),
        Route("/api/provender/ps", e(server.ps), methods=["GET"]),  # /api/ps: Ollama's rows (_ollama_models)
        Route("/api/unload", e(server.unload), methods=["POST"]),
        Route("/api/provender/unload", e(server.unload), methods=["POST"]),
        *web_routes(server),  # the web page at / (provender_serve._web)
        Route("/metrics", e(server.metrics_text), methods=["GET"]),
    ]
    from provender_serve import _anthropic, _ollama, _rerank, _responses  # they import this module

    routes += [*_anthropic.routes(server), *_responses.routes(server), *_ollama.routes(server)]
    routes += _rerank.routes(server)  # /v2/rerank (Cohere), /v1/rerank (Jina, llama.cpp), /rerank (TEI)

    async def http_error(request: Request, exc: Exception) -> Response:
        """An unknown path or a wrong method, in the error shape of the dialect the path belongs to."""
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        path = request.url.path
        message = f"{request.method} {path}: {exc.detail if isinstance(exc, HTTPException) else exc}"
        error = APIError(status, message, "not_found" if status == 404 else "bad_request")
        if path.startswith("/v1/messages"):
            return _anthropic.error_response(error)
        if path.startswith("/api/") and not path.startswith(PROVENDER_API):
            return _ollama.error_response(error)
        return error_response(error)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> Any:
        guard = getattr(app.state, "guard", None)  # `provender serve`'s connection guard (_protocol.Guard)
        if guard is not None:
            guard.install(asyncio.get_running_loop())
        for service in server.services:
            service.start()
        yield
        for service in server.services:
            service.stop()
        await asyncio.to_thread(server.registry.close)  # unload everything, releasing every lease

    walls = Middleware(Walls, origins=server.options.origins, allowed_hosts=server.options.allowed_hosts)
    counted = Middleware(Counted, metrics=server.metrics, paths=route_paths(routes))
    app = Starlette(
        routes=routes, middleware=[counted, walls], exception_handlers={HTTPException: http_error}, lifespan=lifespan
    )
    app.state.server = server
    return app
