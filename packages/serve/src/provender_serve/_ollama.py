"""Ollama's native API, generation: ``POST /api/chat`` and ``POST /api/generate``.

Requests and answers are Ollama's (docs/api.md in ollama/ollama): streamed as NDJSON (one JSON
object a line) unless ``"stream": false``; the last object has ``done: true``, ``done_reason``
(the runtime's ``stop`` or ``length``), ``prompt_eval_count``, ``eval_count`` and durations in
nanoseconds. ``options`` maps onto provender's generation options (`OllamaOptions`), ``format``
(``"json"`` or a JSON schema) onto a `provender.generation.Constraint`, ``tools`` onto the OpenAI
routes' tools (calls come back in Ollama's shape, arguments as an object), ``keep_alive`` (``0``:
unload after the reply) onto the server's keep-alive. Errors are ``{"error": "..."}``.

Every request goes through the same admission as the other dialects (`provender_serve._app`:
allow-list, key, queue, walls, server.pull, /metrics). The other Ollama routes (models, embeddings)
are in `provender_serve._ollama_models`; those that change the cache (delete, copy, pull) in
`provender_serve._ollama_cache`.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from provender_serve import _dialect as d
from provender_serve import _openai as oai
from provender_serve._batching import batched
from provender_serve._generate import Reply, chunks
from provender_serve._models import api_error
from provender_serve._schemas import parse, parse_keep_alive
from provender_serve._structured import constraint
from provender_serve._threads import READY, closing
from provender_serve.errors import APIError

if TYPE_CHECKING:
    from provender_serve._app import Server
    from provender_serve._models import Slot

NDJSON = "application/x-ndjson"
#: options that size or place the runtime, not the reply: accepted, no effect
NO_EFFECT = [
    "numa",
    "num_ctx",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "low_vram",
    "f16_kv",
    "logits_all",
    "vocab_only",
    "use_mmap",
    "use_mlock",
    "embedding_only",
    "num_thread",
    "num_keep",
    "penalize_newline",
    "mirostat_tau",
    "mirostat_eta",
]
#: options that would change the reply and that provender has no equivalent of: only their "off" value
NEUTRAL = {
    "tfs_z": 1.0,
    "typical_p": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "mirostat": 0,
    "repeat_last_n": 64,
}


class _Loose(BaseModel):
    """Ollama's request objects: unknown fields are refused (400 naming them), as on provender's other routes."""

    model_config = ConfigDict(extra="forbid")


class OllamaOptions(_Loose):
    """Ollama's ``options``: the sampling ones map onto provender's (``num_predict`` ->
    ``max_tokens``; -1 and -2, "no limit", leave the server's), the ``NO_EFFECT`` ones are
    accepted, and those in ``NEUTRAL`` are a 400 unless at the value that turns them off."""

    model_config = ConfigDict(extra="forbid")
    num_predict: int | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    seed: int | None = None
    stop: list[str] | str | None = None
    repeat_penalty: float | None = Field(None, gt=0)
    numa: bool | None = None
    num_ctx: int | None = None
    num_batch: int | None = None
    num_gpu: int | None = None
    main_gpu: int | None = None
    low_vram: bool | None = None
    f16_kv: bool | None = None
    logits_all: bool | None = None
    vocab_only: bool | None = None
    use_mmap: bool | None = None
    use_mlock: bool | None = None
    embedding_only: bool | None = None
    num_thread: int | None = None
    num_keep: int | None = None
    penalize_newline: bool | None = None
    mirostat_tau: float | None = None
    mirostat_eta: float | None = None
    tfs_z: float | None = None
    typical_p: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    mirostat: int | None = None
    repeat_last_n: int | None = None

    def generation(self, max_tokens_limit: int) -> dict[str, Any]:
        """The provider options these ask for; a 400 naming one that cannot be honoured."""
        for name, off in NEUTRAL.items():
            value = getattr(self, name)
            if (
                value is not None
                and value != off
                and not (name == "repeat_last_n" and self.repeat_penalty in (None, 1))
            ):
                raise APIError(
                    400, f"options.{name}: provender has no {name}; only {off} (off) is accepted", "unsupported"
                )
        out: dict[str, Any] = {}
        if self.num_predict is not None:
            if self.num_predict == 0 or self.num_predict < -2:
                raise APIError(400, "options.num_predict: must be >= 1, or -1 / -2 for no limit", "invalid_value")
            if self.num_predict > max_tokens_limit:
                raise APIError(
                    400,
                    f"options.num_predict: {self.num_predict} is more than this server allows ({max_tokens_limit})",
                    "invalid_value",
                )
            if self.num_predict > 0:
                out["max_tokens"] = self.num_predict
        stop = [self.stop] if isinstance(self.stop, str) else [s for s in self.stop or [] if s]
        if stop:
            out["stop"] = stop
        values = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k or None,  # 0: off, as in Ollama
            "min_p": self.min_p or None,
            "seed": self.seed,
            "repeat_penalty": None if self.repeat_penalty == 1 else self.repeat_penalty,
        }
        out.update({k: v for k, v in values.items() if v is not None})
        return out


class ToolFunction(_Loose):
    name: str = Field(min_length=1)
    arguments: dict[str, Any] | str = Field(default_factory=dict)
    index: int | None = None


class ToolCall(_Loose):
    function: ToolFunction
    id: str | None = None
    type: str | None = None


class ChatMessage(_Loose):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = ""
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    thinking: str | None = None  # an earlier reply's; not sent to the model

    def to_provider(self, index: int) -> dict[str, Any]:
        if self.images:
            raise APIError(400, f"messages.{index}.images: this server takes text only", "unsupported")
        out: dict[str, Any] = {"role": self.role, "content": self.content or ""}
        if self.tool_calls:
            out["tool_calls"] = [
                {
                    "id": c.id or f"call_{index}_{i}",
                    "type": "function",
                    "function": {
                        "name": c.function.name,
                        "arguments": c.function.arguments
                        if isinstance(c.function.arguments, str)
                        else json.dumps(c.function.arguments),
                    },
                }
                for i, c in enumerate(self.tool_calls)
            ]
        if self.role == "tool" and self.tool_name:
            out["name"] = self.tool_name
        return out


class _Request(_Loose):
    model: str = Field(min_length=1, max_length=1024)
    stream: bool = True
    options: OllamaOptions | None = None
    format: Literal["", "json"] | dict[str, Any] | None = None
    keep_alive: float | str | None = None
    think: bool | Literal["low", "medium", "high"] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None

    def base_options(self, limit: int, tools: list[dict[str, Any]] | None) -> dict[str, Any]:
        if self.think:
            raise APIError(400, f'"{self.model}" does not support thinking', "unsupported", "think")
        out = (self.options or OllamaOptions()).generation(limit)
        if self.logprobs:
            out["logprobs"] = True
            if self.top_logprobs:
                out["top_logprobs"] = self.top_logprobs
        if self.format:
            if tools:
                raise APIError(400, "format: a JSON reply and tools cannot both shape the reply", "invalid_value")
            out["constraint"] = constraint("format", None if self.format == "json" else self.format)
        return out


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None


class GenerateRequest(_Request):
    prompt: str | None = None
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool | None = None
    images: list[str] | None = None


@dataclass
class Gen:
    """One Ollama generation: what to send the provider and how to answer."""

    route: Literal["chat", "generate"]
    model: str
    messages: list[dict[str, Any]] | None
    prompt: str | None
    tools: list[dict[str, Any]] | None
    options: dict[str, Any]
    keep_alive: float | None
    started: int  # time.perf_counter_ns() when the request came

    def text_key(self) -> str:
        return "message" if self.route == "chat" else "response"


def now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def error_response(error: APIError) -> JSONResponse:
    """`error` in Ollama's shape, ``{"error": "..."}``."""
    headers = {"Retry-After": "1"} if error.status == 503 else None
    return JSONResponse({"error": error.message}, status_code=error.status, headers=headers)


def line(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode() + b"\n"


def ollama_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-shaped tool calls in Ollama's shape (arguments as an object)."""
    out = []
    for i, call in enumerate(calls):
        _, name, args = d.arguments(call)
        out.append({"function": {"index": i, "name": name, "arguments": d.json_arguments(args)}})
    return out


def part(gen: Gen, text: str, calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """One answer object before the counts: ``message`` (chat) or ``response`` (generate)."""
    body: dict[str, Any] = {"model": gen.model, "created_at": now_iso()}
    if gen.route == "chat":
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = ollama_calls(calls)
        body["message"] = message
    else:
        body["response"] = text
    body["done"] = False
    return body


class Run:
    """One generation on a held model: its chunks, timed as Ollama reports them."""

    def __init__(self, server: Server, slot: Slot, gen: Gen) -> None:
        self.server, self.slot, self.gen = server, slot, gen
        self.reply = Reply(gen.options.get("max_tokens"))
        self.loaded = time.perf_counter_ns()
        self.first: int | None = None

    def source(self) -> Iterator[Any]:
        gen = self.gen
        stream = chunks(self.slot, prompt=gen.prompt, messages=gen.messages, tools=gen.tools, options=gen.options)
        metrics = getattr(self.server, "metrics", None)
        asked: Any = gen.messages if gen.messages is not None else gen.prompt
        return metrics.metered(self.slot, stream, asked) if metrics is not None else stream

    def add(self, chunk: Any) -> str:
        if self.first is None:
            self.first = time.perf_counter_ns()
        self.reply.add(chunk)
        return str(chunk.text or "")

    def final(self, streamed: bool) -> dict[str, Any]:
        """The last object: the reply (not `streamed`) or an empty one, why it ended, counts, durations."""
        gen, provider = self.gen, self.slot.provider
        text = self.reply.text
        content, calls = oai.parse_tool_calls(text, gen.tools) if gen.tools else (text, [])
        finish = self.reply.finish_reason(provider, calls)
        body = part(gen, "" if streamed and not gen.tools else content, calls)
        asked = gen.messages if gen.messages is not None else gen.prompt or ""
        end = time.perf_counter_ns()
        first = self.first or end
        body.update(
            done=True,
            done_reason="length" if finish == "length" else "stop",
            total_duration=end - gen.started,
            load_duration=max(0, self.loaded - gen.started),
            prompt_eval_count=self.reply.prompt_tokens(provider, asked),
            prompt_eval_duration=max(0, first - self.loaded),
            eval_count=self.reply.tokens(provider),
            eval_duration=max(0, end - first),
        )
        return body


def load_only(gen: Gen) -> dict[str, Any]:
    """Ollama's answer to a request with no prompt: the model loaded (or, keep_alive 0, unloaded)."""
    body = part(gen, "")
    reason = "unload" if gen.keep_alive == 0 else "load"
    body.update(done=True, done_reason=reason)
    return body


class Ollama:
    """The Ollama endpoints of one `Server`."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def endpoint(self, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            try:
                d.check_key(self.server, request, x_api_key=False)
                return await handler(request)
            except Exception as exc:
                return error_response(api_error(exc))

        return wrapped

    async def body(self, request: Request, model: type[BaseModel]) -> Any:
        return parse(model, await self.server._json(request))  # type: ignore[arg-type]

    async def chat(self, request: Request) -> Response:
        started = time.perf_counter_ns()
        req: ChatRequest = await self.body(request, ChatRequest)
        tools = [t for t in req.tools or [] if isinstance(t, dict)] or None
        limit = self.server.options.max_tokens_limit
        options = req.base_options(limit, tools)
        messages = [m.to_provider(i) for i, m in enumerate(req.messages)]
        keep = parse_keep_alive(req.keep_alive)
        gen = Gen("chat", req.model, messages or None, None, tools, options, keep, started)
        return await self.answer(request, gen, req.stream)

    async def generate(self, request: Request) -> Response:
        started = time.perf_counter_ns()
        req: GenerateRequest = await self.body(request, GenerateRequest)
        if req.images:
            raise APIError(400, "images: this server takes text only", "unsupported")
        if req.suffix:
            raise APIError(400, "suffix: fill-in-the-middle is not supported by this server", "unsupported")
        if req.template:
            raise APIError(400, "template: this server uses the model's own chat template", "unsupported")
        if req.context:
            raise APIError(400, "context: this server keeps no token context; send the conversation to /api/chat")
        options = req.base_options(self.server.options.max_tokens_limit, None)
        keep = parse_keep_alive(req.keep_alive)
        prompt = req.prompt or ""
        if req.raw:
            gen = Gen("generate", req.model, None, prompt or None, None, options, keep, started)
        else:
            turns = [{"role": "system", "content": req.system}] if req.system else []
            turns.append({"role": "user", "content": prompt})
            gen = Gen("generate", req.model, turns if prompt else None, None, None, options, keep, started)
        return await self.answer(request, gen, req.stream)

    async def answer(self, request: Request, gen: Gen, stream: bool) -> Response:
        from provender_serve._ollama_models import ollama_name
        from provender_serve._threads import on_model, stream_from_model

        name = ollama_name(gen.model)  # the colon rule
        await self.server._check_pull(request, name)
        registry = self.server.registry

        def alone(slot: Slot) -> bool:
            return not batched(slot, gen.options)

        if gen.messages is None and gen.prompt is None:  # no prompt: load (or unload) the model only

            def load(slot: Slot) -> dict[str, Any]:
                with registry.hold(slot, keep_alive=gen.keep_alive, kind="generation"):
                    return load_only(gen)

            return JSONResponse(await on_model(registry, name, load))
        if stream:
            response = await stream_from_model(registry, name, lambda s, c: self.lines(s, gen, c), alone)
            response = d.reshaped(response, error_response)
            if response.status_code == 200:
                response.headers["content-type"] = NDJSON
            return response

        def work(slot: Slot) -> dict[str, Any]:
            with registry.hold(slot, keep_alive=gen.keep_alive, exclusive=alone(slot)):
                run = Run(self.server, slot, gen)
                with closing(run.source()) as source:
                    for chunk in source:
                        run.add(chunk)
                return run.final(streamed=False)

        return JSONResponse(await on_model(registry, name, work, alone))

    def lines(self, slot: Slot, gen: Gen, cancel: threading.Event) -> Iterator[bytes]:
        """A `stream_from_model` producer: NDJSON lines, the text as it comes (with tools, the
        reply is parsed whole and comes in one line), then the counts; errors in-band as Ollama's."""
        with self.server.registry.hold(slot, keep_alive=gen.keep_alive, exclusive=not batched(slot, gen.options)):
            run = Run(self.server, slot, gen)
            with closing(run.source()) as source:
                first = list(itertools.islice(source, 1))  # what fails before the first chunk is an HTTP error
                yield READY
                try:
                    for chunk in itertools.chain(first, source):
                        if cancel.is_set():
                            return
                        text = run.add(chunk)
                        if text and not gen.tools:
                            yield line(part(gen, text))
                    yield line(run.final(streamed=True))
                except Exception as exc:
                    yield line({"error": api_error(exc).message})


def routes(server: Server) -> list[Route]:
    from provender_serve import _ollama_models

    api = Ollama(server)
    e = api.endpoint
    return [
        Route("/api/chat", e(api.chat), methods=["POST"]),
        Route("/api/generate", e(api.generate), methods=["POST"]),
        *_ollama_models.routes(server, e, api),
    ]
