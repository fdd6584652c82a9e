"""Ollama's native API, everything but generation: embeddings and the models.

- ``POST /api/embed`` (``input`` a string or strings) and the older ``POST /api/embeddings``
  (``prompt``), through provender's `Embedder` on the server's admission path;
- ``GET /api/tags`` (the cache's entries a provider claims, or the allow-list), ``POST /api/show``,
  ``GET /api/ps`` (Ollama's rows, each with provender's own fields beside them: ``provender ps``
  reads the same route), ``GET /api/version``;
- ``DELETE /api/delete``, ``POST /api/copy`` (an alias), ``POST /api/pull`` (progress streamed while
  the bytes arrive): in `provender_serve._ollama_cache`.

Names: see `ollama_name`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from provender_serve._ollama import OllamaOptions, _Loose
from provender_serve._schemas import parse_keep_alive
from provender_serve.errors import APIError

if TYPE_CHECKING:
    from provender_serve._app import Server
    from provender_serve._ollama import Ollama

Handler = Callable[[Request], Awaitable[Response]]
#: the Ollama API version this server's routes follow (what ``/api/version`` answers)
OLLAMA_VERSION = "0.6.3"


class EmbedRequest(_Loose):
    model: str = Field(min_length=1, max_length=1024)
    input: str | list[str] = ""
    truncate: bool | None = None
    options: OllamaOptions | None = None
    keep_alive: float | str | None = None
    dimensions: int | None = None


class EmbeddingsRequest(_Loose):
    model: str = Field(min_length=1, max_length=1024)
    prompt: str = ""
    options: OllamaOptions | None = None
    keep_alive: float | str | None = None


class NameRequest(_Loose):
    model: str | None = Field(None, min_length=1, max_length=1024)
    name: str | None = Field(None, min_length=1, max_length=1024)  # Ollama's older spelling
    verbose: bool | None = None
    insecure: bool | None = None
    stream: bool = True

    def which(self) -> str:
        value = self.model or self.name
        if not value:
            raise APIError(400, "model: required", "missing_field")
        return value


def iso(ts: float | None) -> str:
    return datetime.fromtimestamp(ts or 0, tz=UTC).isoformat()


def digest(name: str, entry: Any = None) -> str:
    """A stable digest for a name (Ollama shows a sha256): the entry's revision where it has one."""
    meta = getattr(entry, "metadata", None) or {}
    revision = meta.get("commit_hash") or meta.get("revision")
    if isinstance(revision, str) and len(revision) >= 12:
        return revision
    return hashlib.sha256(name.encode()).hexdigest()


def details(entry: Any = None, provider: str | None = None) -> dict[str, Any]:
    """Ollama's ``details`` as far as provender knows them (from the entry's metadata)."""
    meta = (getattr(entry, "metadata", None) or {}) if entry is not None else {}
    family = str(meta.get("family") or meta.get("model_type") or provider or "")
    return {
        "parent_model": "",
        "format": "gguf" if provider == "llamacpp" else (provider or ""),
        "family": family,
        "families": [family] if family else None,
        "parameter_size": str(meta.get("parameter_size") or ""),
        "quantization_level": str(meta.get("quantization") or meta.get("quantization_level") or ""),
    }


def embeds(entry: Any, meta: dict[str, Any]) -> bool:
    """Whether a cached model is an embedding model: pulled as one (``task``), or a directory
    sentence-transformers runs (``modules.json``, a pooling config): what ``/api/show`` lists as
    its capability, and what llm-ollama registers it as."""
    if meta.get("task") == "embedding":
        return True
    from provender._detect import sentence_transformers_config

    try:
        return entry is not None and sentence_transformers_config(entry.model_path) is not None
    except (OSError, ValueError):
        return False


def ollama_name(name: str) -> str:
    """The colon rule: the part before the first colon names a provider only when a provider of
    that name is installed (``echo:plain``, ``mlx:org/m``); otherwise the whole name is the model,
    an Ollama ``name:tag`` or a GGUF ``repo:QUANT``, its ``:latest`` tag dropped as Ollama does,
    and a name that still has a colon is the cache entry of that name, served by the provider
    that claims it (a 404 in Ollama's words when there is none)."""
    from provender import get_plugin_manager, parse_model_name

    prefix, _ = parse_model_name(name)
    manager = get_plugin_manager()
    if prefix is not None and prefix in manager.providers():
        return name
    bare = name.removesuffix(":latest")
    if parse_model_name(bare)[0] is None:
        return bare
    from provender import CacheManager

    entry = CacheManager().find(bare)
    claims = [c for c in manager.claim(entry) if c in manager.providers()] if entry is not None else []
    if not claims:
        raise APIError(404, f'model "{name}" not found, try pulling it first', "model_not_found")
    return f"{claims[0]}:{bare}"


def _tags(server: Server) -> list[dict[str, Any]]:
    from provender import CacheManager, get_plugin_manager

    rows: dict[str, dict[str, Any]] = {}
    if server.options.allowed:
        for name in server.options.allowed:
            rows[name] = {"name": name, "model": name, "modified_at": iso(0), "size": 0, "digest": digest(name)}
            rows[name]["details"] = details()
    else:
        manager = get_plugin_manager()
        cm = CacheManager()
        named = [(entry.name, entry) for entry in cm.entries(sort="name")]
        named += sorted(cm.aliases().items())  # a copy is listed as Ollama lists one: its own name, the same digest
        for name, entry in named:
            claims = manager.claim(entry)
            if claims:
                rows[name] = {
                    "name": name,
                    "model": name,
                    "modified_at": iso(entry.created),
                    "size": entry.size,
                    "digest": digest(entry.name, entry),
                    "details": details(entry, claims[0]),
                }
    return list(rows.values())


def _ps(server: Server) -> dict[str, Any]:
    rows = []
    for slot_row in server.registry.snapshot():
        name = slot_row["model"]
        until = slot_row.get("until")
        rows.append(
            {
                **slot_row,  # provender's own fields (provider, kind, since, until, busy, queued...)
                "name": name,
                "model": name,
                "size": 0,
                "size_vram": 0,
                "digest": digest(name),
                "details": details(None, slot_row.get("provider")),
                "expires_at": until or "2318-01-01T00:00:00+00:00",  # busy or forever: no expiry yet
            }
        )
    pool: list[dict[str, Any]] = []
    try:
        from provender import model_pool

        pool = model_pool().snapshot()
    except (ImportError, AttributeError):
        pass
    return {"models": rows, "pool": pool}


class Models:
    """The routes of this module, bound to one server."""

    def __init__(self, server: Server, api: Ollama) -> None:
        self.server, self.api = server, api

    async def embed(self, request: Request) -> Response:
        req: EmbedRequest = await self.api.body(request, EmbedRequest)
        texts = [req.input] if isinstance(req.input, str) else list(req.input)
        if req.dimensions is not None:
            raise APIError(400, "dimensions: this server returns the model's own size", "unsupported")
        vectors, tokens, model, took = await self._embed(request, req.model, texts, req.keep_alive)
        return JSONResponse(
            {
                "model": model,
                "embeddings": vectors,
                "total_duration": took,
                "load_duration": 0,
                "prompt_eval_count": tokens,
            }
        )

    async def embeddings(self, request: Request) -> Response:
        req: EmbeddingsRequest = await self.api.body(request, EmbeddingsRequest)
        vectors, _, _, _ = await self._embed(request, req.model, [req.prompt], req.keep_alive)
        return JSONResponse({"embedding": vectors[0]})

    async def _embed(
        self, request: Request, model: str, texts: list[str], keep_alive: Any
    ) -> tuple[list[list[float]], int, str, int]:
        import time

        started = time.perf_counter_ns()
        keep = parse_keep_alive(keep_alive)
        name = ollama_name(model)
        await self.server._check_pull(request, name)
        vectors, tokens = await self.server.embed_batches.embed(name, texts, keep)
        return [[float(x) for x in v] for v in vectors], tokens, model, time.perf_counter_ns() - started

    async def tags(self, request: Request) -> Response:
        from provender_serve._threads import run_in_thread

        return JSONResponse({"models": await run_in_thread(lambda: _tags(self.server))})

    async def ps(self, request: Request) -> Response:
        return JSONResponse(_ps(self.server))

    async def version(self, request: Request) -> Response:
        from provender import __version__

        return JSONResponse({"version": OLLAMA_VERSION, "provender": __version__})

    async def show(self, request: Request) -> Response:
        from provender_serve._threads import run_in_thread

        req: NameRequest = await self.api.body(request, NameRequest)
        name = ollama_name(req.which())
        return JSONResponse(await run_in_thread(lambda: self._show(name)))

    def _show(self, name: str) -> dict[str, Any]:
        from provender import CacheManager, get_plugin_manager, parse_model_name
        from provender.errors import EntryNotFoundError
        from provender_serve._models import check_name

        check_name(name, self.server.options.allowed, local_paths=self.server.options.local_paths)
        prefix, bare = parse_model_name(name)
        entry = None
        try:
            entry = CacheManager().get(bare)
        except EntryNotFoundError:
            if prefix is None or prefix not in get_plugin_manager().providers():
                raise APIError(404, f"model '{name}' not found", "model_not_found") from None
        claims = get_plugin_manager().claim(entry) if entry is not None else []
        provider = prefix or (claims[0] if claims else None)
        info = details(entry, provider)
        meta = (entry.metadata if entry is not None else {}) or {}
        capabilities = ["embedding"] if embeds(entry, meta) else ["completion", "tools"]
        model_info = {
            "general.architecture": info["family"],
            "general.parameter_count": meta.get("parameter_count") or 0,
            "general.context_length": meta.get("context_length") or 0,
            "provender.provider": provider or "",
        }
        return {
            "modelfile": f"# provender serves {name}\nFROM {bare}\n",
            "parameters": "",
            "template": str(meta.get("chat_template") or ""),
            "details": info,
            "model_info": model_info,
            "capabilities": capabilities,
            "modified_at": iso(entry.created if entry is not None else 0),
        }


def probe_text(request: Request) -> Response | None:
    """Ollama's answer to ``GET /`` and ``HEAD /`` for a client that is not a browser asking for a page."""
    if "text/html" in request.headers.get("accept", ""):
        return None
    return Response("Ollama is running", media_type="text/plain; charset=utf-8")


def routes(server: Server, e: Callable[[Handler], Handler], api: Ollama) -> list[Route]:
    from provender_serve._ollama_cache import CacheRoutes

    m = Models(server, api)
    c = CacheRoutes(server, api)
    return [
        Route("/api/embed", e(m.embed), methods=["POST"]),
        Route("/api/embeddings", e(m.embeddings), methods=["POST"]),
        Route("/api/tags", e(m.tags), methods=["GET"]),
        Route("/api/show", e(m.show), methods=["POST"]),
        Route("/api/ps", e(m.ps), methods=["GET"]),
        Route("/api/version", e(m.version), methods=["GET"]),
        Route("/api/delete", e(c.delete), methods=["DELETE"]),
        Route("/api/copy", e(c.copy), methods=["POST"]),
        Route("/api/pull", e(c.pull), methods=["POST"]),
        *c.unserved(e),
    ]
