"""Anthropic's Messages API: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

Requests are Anthropic's (``max_tokens`` required, ``system`` apart from the turns, content as a
string or blocks: ``text``, ``tool_use`` in assistant turns, ``tool_result`` in user turns);
``tool_choice`` ``auto``/``any``/``tool``/``none`` maps onto the OpenAI routes' (``any`` and
``tool`` constrain the reply to a valid call, as ``required`` and a named function do there).
Answers, streamed events and errors are Anthropic's shapes; ``x-api-key`` carries the key (as
does ``Authorization: Bearer``). ``metadata``, ``cache_control`` and ``anthropic-version`` /
``anthropic-beta`` are accepted and have no effect. Images, documents, thinking and server
tools are refused with a 400 naming the field.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from provender_serve import _dialect as d
from provender_serve import _openai as oai
from provender_serve._models import api_error
from provender_serve._schemas import _Strict, parse, parse_keep_alive
from provender_serve._structured import constraint
from provender_serve.errors import APIError

if TYPE_CHECKING:
    from provender_serve._app import Server
    from provender_serve._models import Slot

#: Anthropic's error type for each status this server answers.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "stop_sequence": "stop_sequence"}


class _Block(_Strict):
    cache_control: dict[str, Any] | None = None  # accepted, no effect


class TextBlock(_Block):
    type: Literal["text"]
    text: str
    citations: list[Any] | None = None


class ToolUseBlock(_Block):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]


class ToolResultBlock(_Block):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: list[TextBlock] | str | None = None
    is_error: bool | None = None

    def text(self) -> str:
        content = self.content
        text = content if isinstance(content, str) else "".join(b.text for b in content or [])
        return f"Error: {text}" if self.is_error else text


Block = Annotated[TextBlock | ToolUseBlock | ToolResultBlock, Field(discriminator="type")]


class MessageIn(_Strict):
    role: Literal["user", "assistant"]
    content: list[Block] | str  # (a list first: its errors name the block that is wrong)


class Tool(_Strict):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    cache_control: dict[str, Any] | None = None


class ToolChoice(_Strict):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class JSONFormat(_Strict):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Strict):
    format: JSONFormat | None = None
    effort: str | None = None  # accepted, no effect


class _Prompt(_Strict):
    model: str = Field(min_length=1, max_length=1024)
    messages: list[MessageIn] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None

    def provider_messages(self) -> list[dict[str, Any]]:
        """The turns as the OpenAI-shaped dicts providers take: ``tool_use`` blocks become an
        assistant's ``tool_calls``, ``tool_result`` blocks ``tool`` messages."""
        out: list[dict[str, Any]] = []
        if self.system:
            system = self.system if isinstance(self.system, str) else "".join(b.text for b in self.system)
            out.append({"role": "system", "content": system})
        for message in self.messages:
            blocks = (
                [TextBlock(type="text", text=message.content)] if isinstance(message.content, str) else message.content
            )
            texts = [b.text for b in blocks if isinstance(b, TextBlock)]
            if message.role == "assistant":
                turn: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
                calls = [
                    {"id": b.id, "type": "function", "function": {"name": b.name, "arguments": json.dumps(b.input)}}
                    for b in blocks
                    if isinstance(b, ToolUseBlock)
                ]
                if calls:
                    turn["tool_calls"] = calls
                out.append(turn)
                continue
            for block in blocks:
                if isinstance(block, ToolUseBlock):
                    raise APIError(400, "messages: a tool_use block belongs in an assistant turn", "invalid_value")
                if isinstance(block, ToolResultBlock):
                    out.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": block.text()})
            if texts or not any(isinstance(b, ToolResultBlock) for b in blocks):
                out.append({"role": "user", "content": "".join(texts)})
        return out

    def tool_dicts(self) -> list[dict[str, Any]] | None:
        if not self.tools or (self.tool_choice is not None and self.tool_choice.type == "none"):
            return None
        return [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    **({"description": t.description} if t.description else {}),
                    "parameters": t.input_schema,
                },
            }
            for t in self.tools
        ]

    def forced(self, tools: list[dict[str, Any]] | None) -> dict[str, Any]:
        """``{"constraint": ...}`` when ``tool_choice`` is ``any`` or ``tool``; else ``{}``."""
        choice = self.tool_choice
        if choice is None or choice.type in ("auto", "none"):
            return {}
        if not tools:
            raise APIError(
                400, f"tool_choice: {choice.type!r} needs tools, and the request offers none", "invalid_value"
            )
        if choice.type == "tool":
            if not choice.name:
                raise APIError(400, "tool_choice.name: required with type 'tool'", "missing_field")
            return {
                "constraint": constraint("tool_choice", {"type": "function", "function": {"name": choice.name}}, tools)
            }
        return {"constraint": constraint("tool_choice", "required", tools)}


class MessagesRequest(_Prompt):
    max_tokens: int = Field(ge=1)
    stop_sequences: Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=16)] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    stream: bool = False
    output_config: OutputConfig | None = None  # format: the reply held to a JSON schema
    metadata: dict[str, Any] | None = None  # accepted, no effect
    cache_control: dict[str, Any] | None = None  # accepted, no effect
    service_tier: str | None = None  # accepted, no effect
    keep_alive: float | str | None = None  # provender's, as on the OpenAI routes

    def call(self) -> d.Call:
        tools = self.tool_dicts()
        values = {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
        }
        options = {k: v for k, v in values.items() if v is not None}
        options.update(self.forced(tools))
        fmt = self.output_config.format if self.output_config is not None else None
        if fmt is not None:
            if options.get("constraint") is not None:
                raise APIError(
                    400, "output_config.format: a JSON reply and a forced tool_choice cannot both shape the reply"
                )
            options["constraint"] = constraint("output_config.format.schema", fmt.schema_)
        stops = list(self.stop_sequences or [])
        return d.Call(self.provider_messages(), tools, options, stops, parse_keep_alive(self.keep_alive))


class CountRequest(_Prompt):
    thinking: None = None
    output_config: OutputConfig | None = None
    cache_control: dict[str, Any] | None = None


def error_response(error: APIError) -> JSONResponse:
    """`error` in Anthropic's shape: ``{"type": "error", "error": {"type", "message"}}``."""
    headers = {"Retry-After": "1"} if error.status == 503 else None
    return JSONResponse(error_body(error), status_code=error.status, headers=headers)


def error_body(error: APIError) -> dict[str, Any]:
    kind = ERROR_TYPES.get(error.status, "api_error" if error.status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def content_blocks(outcome: d.Outcome) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = (
        [{"type": "text", "text": outcome.content}] if outcome.content or not outcome.calls else []
    )
    for call in outcome.calls:
        cid, name, args = d.arguments(call)
        blocks.append({"type": "tool_use", "id": tool_id(cid), "name": name, "input": d.json_arguments(args)})
    return blocks


def tool_id(cid: str) -> str:
    return cid if cid.startswith("toolu_") else f"toolu_{cid.removeprefix('call_').removeprefix('call-')}"


def message(mid: str, model: str, outcome: d.Outcome) -> dict[str, Any]:
    return {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content_blocks(outcome),
        "stop_reason": STOP_REASONS.get(outcome.finish, "end_turn"),
        "stop_sequence": outcome.stop_sequence,
        "usage": usage(outcome),
    }


def usage(outcome: d.Outcome) -> dict[str, int]:
    """Anthropic's usage: ``input_tokens`` are those processed, ``cache_read_input_tokens`` those a
    prompt cache supplied (their sum is the prompt), when the runtime counted them."""
    counts = {"input_tokens": outcome.prompt_tokens, "output_tokens": outcome.completion_tokens}
    if outcome.cached_tokens is not None:
        counts["input_tokens"] = outcome.prompt_tokens - outcome.cached_tokens
        counts["cache_read_input_tokens"] = outcome.cached_tokens
    return counts


def events(slot: Slot, mid: str, call: d.Call, source: Iterator[d.Event]) -> Iterator[bytes]:
    """Anthropic's event stream: message_start, a text block's deltas as they come, tool_use
    blocks (their input as one ``input_json_delta``), message_delta with the stop reason, message_stop."""
    start: dict[str, Any] = {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": slot.name,
        "content": [],
        "stop_reason": None,
    }
    prompt_tokens = oai.count_tokens(slot.provider, oai.prompt_text(call.messages))
    start.update(stop_sequence=None, usage={"input_tokens": prompt_tokens, "output_tokens": 0})
    yield sse("message_start", {"type": "message_start", "message": start})
    index, open_text = 0, False
    try:
        for kind, value in source:
            if kind == "text":
                if not open_text:
                    block = {
                        "type": "content_block_start",
                        "index": index,
                        "content_block": {"type": "text", "text": ""},
                    }
                    yield sse("content_block_start", block)
                    open_text = True
                delta = {"type": "text_delta", "text": value}
                yield sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
                continue
            outcome: d.Outcome = value
            blocks = content_blocks(outcome)
            if open_text:
                yield sse("content_block_stop", {"type": "content_block_stop", "index": index})
                index += 1
                blocks = [b for b in blocks if b["type"] != "text"]
            for block in blocks:
                if block["type"] == "text":
                    yield sse(
                        "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}
                    )
                else:
                    empty = {**block, "input": {}}
                    yield sse(
                        "content_block_start", {"type": "content_block_start", "index": index, "content_block": empty}
                    )
                    delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
                    yield sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
                yield sse("content_block_stop", {"type": "content_block_stop", "index": index})
                index += 1
            reason = {
                "stop_reason": STOP_REASONS.get(outcome.finish, "end_turn"),
                "stop_sequence": outcome.stop_sequence,
            }
            yield sse("message_delta", {"type": "message_delta", "delta": reason, "usage": usage(outcome)})
            yield sse("message_stop", {"type": "message_stop"})
    except Exception as exc:  # after the stream began: in-band, as Anthropic sends it
        yield sse("error", error_body(api_error(exc)))


class Anthropic:
    """The Messages endpoints of one `Server`."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def endpoint(self, handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            try:
                d.check_key(self.server, request, x_api_key=True)
                return await handler(request)
            except Exception as exc:
                return error_response(api_error(exc))

        return wrapped

    async def _parse(self, request: Request, model: type[_Strict]) -> Any:
        body = await self.server._json(request)
        return parse(model, body, max_tokens_limit=self.server.options.max_tokens_limit)

    async def messages(self, request: Request) -> Response:
        from provender_serve._threads import on_model, stream_from_model

        req: MessagesRequest = await self._parse(request, MessagesRequest)
        call = req.call()
        await self.server._check_pull(request, req.model)
        mid = oai.new_id("msg").replace("-", "_")
        registry, alone = self.server.registry, self._alone(call)
        if req.stream:

            def make(slot: Slot, cancel: threading.Event) -> Iterator[bytes]:
                return d.stream(self.server, slot, call, cancel, lambda s, src: events(s, mid, call, src))

            return d.reshaped(await stream_from_model(registry, req.model, make, alone), error_response)

        def work(slot: Slot) -> dict[str, Any]:
            return message(mid, req.model, d.generate(self.server, slot, call))

        return JSONResponse(await on_model(registry, req.model, work, alone))

    @staticmethod
    def _alone(call: d.Call) -> Any:
        from provender_serve._batching import batched

        return lambda slot: not batched(slot, call.options)

    async def count_tokens(self, request: Request) -> Response:
        from provender_serve._threads import on_model

        req: CountRequest = await self._parse(request, CountRequest)
        messages, tools = req.provider_messages(), req.tool_dicts()
        await self.server._check_pull(request, req.model)
        text = oai.prompt_text(messages) + (json.dumps(tools) if tools else "")

        def work(slot: Slot) -> dict[str, Any]:
            with self.server.registry.hold(slot, kind="generation"):
                return {"input_tokens": oai.count_tokens(slot.provider, text)}

        return JSONResponse(await on_model(self.server.registry, req.model, work))


def routes(server: Server) -> list[Route]:
    api = Anthropic(server)
    return [
        Route("/v1/messages", api.endpoint(api.messages), methods=["POST"]),
        Route("/v1/messages/count_tokens", api.endpoint(api.count_tokens), methods=["POST"]),
    ]
