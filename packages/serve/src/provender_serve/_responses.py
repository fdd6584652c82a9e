"""OpenAI's Responses API, stateless: ``POST /v1/responses``.

``input`` is text or items (messages with ``input_text``/``output_text`` parts, ``function_call``
and ``function_call_output`` items from an earlier turn, which the client sends back itself);
``instructions`` is the system message; ``tools`` are function tools (``tool_choice`` as the chat
route's: ``required`` or a named function constrain the reply to a valid call); ``text.format``
``json_schema``/``json_object`` constrain it as ``response_format`` does. Streamed, the answer is
the Responses event stream (``response.created`` ... ``response.completed``).

Nothing is stored: ``previous_response_id``, ``conversation`` and ``store: true`` are 400s
that say so, and no response can be fetched back. Errors are OpenAI's shape.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, field_validator
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


class TextPart(_Strict):
    type: Literal["input_text", "output_text", "text"]
    text: str
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None


class MessageItem(_Strict):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[TextPart]
    id: str | None = None
    status: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class FunctionCallItem(_Strict):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str
    id: str | None = None
    status: str | None = None


class FunctionOutputItem(_Strict):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str
    id: str | None = None
    status: str | None = None


Item = Annotated[MessageItem | FunctionCallItem | FunctionOutputItem, Field(discriminator="type")]


class FunctionTool(_Strict):
    type: Literal["function"]
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class TextFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class TextOptions(_Strict):
    format: TextFormat | None = None
    verbosity: str | None = None


class ResponsesRequest(_Strict):
    model: str = Field(min_length=1, max_length=1024)
    input: list[Item] | str  # (a list first: its errors name the item that is wrong)
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["auto", "none", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stream: bool = False
    store: bool | None = None
    previous_response_id: str | None = None
    conversation: Any = None
    text: TextOptions | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    truncation: Literal["disabled", "auto"] | None = None
    keep_alive: float | str | None = None  # provender's, as on the chat route

    @field_validator("input", mode="before")
    @classmethod
    def _typed(cls, value: Any) -> Any:
        """A message item may leave out ``"type": "message"`` (OpenAI's easy input messages)."""
        if isinstance(value, list):
            return [
                {"type": "message", **v} if isinstance(v, dict) and "type" not in v and "role" in v else v
                for v in value
            ]
        return value

    def check_stateless(self) -> None:
        for name in ("previous_response_id", "conversation"):
            if getattr(self, name) is not None:
                raise APIError(
                    400,
                    f"{name}: this server keeps no responses (stateless); send the whole conversation as input",
                    "unsupported",
                    name,
                )
        if self.store:
            raise APIError(
                400, "store: this server keeps no responses (stateless); set store to false", "unsupported", "store"
            )

    def messages(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self.instructions:
            out.append({"role": "system", "content": self.instructions})
        if isinstance(self.input, str):
            return [*out, {"role": "user", "content": self.input}]
        for item in self.input:
            if isinstance(item, MessageItem):
                role = "system" if item.role == "developer" else item.role
                out.append({"role": role, "content": item.text()})
            elif isinstance(item, FunctionCallItem):
                call = {
                    "id": item.call_id,
                    "type": "function",
                    "function": {"name": item.name, "arguments": item.arguments},
                }
                if out and out[-1]["role"] == "assistant" and "tool_calls" in out[-1]:
                    out[-1]["tool_calls"].append(call)
                else:
                    out.append({"role": "assistant", "content": "", "tool_calls": [call]})
            else:
                out.append({"role": "tool", "tool_call_id": item.call_id, "content": item.output})
        if not out or all(m["role"] == "system" for m in out):
            raise APIError(400, "input: holds no message to answer", "invalid_value", "input")
        return out

    def tool_dicts(self) -> list[dict[str, Any]] | None:
        if not self.tools or self.tool_choice == "none":
            return None
        return [
            {"type": "function", "function": t.model_dump(exclude_none=True, exclude={"type", "strict"})}
            for t in self.tools
        ]

    def shape(self, tools: list[dict[str, Any]] | None) -> dict[str, Any]:
        """``{"constraint": ...}`` for a forced tool choice or a JSON ``text.format``; else ``{}``."""
        choice = self.tool_choice
        fmt = self.text.format if self.text is not None else None
        if choice == "required" or isinstance(choice, dict):
            if not tools:
                raise APIError(
                    400,
                    f"tool_choice: {choice!r} needs tools, and the request offers none",
                    "invalid_value",
                    "tool_choice",
                )
            if fmt is not None and fmt.type != "text":
                raise APIError(
                    400,
                    "text.format: a JSON reply and a forced tool_choice cannot both shape the reply",
                    "invalid_value",
                    "text.format",
                )
            if isinstance(choice, dict):  # Responses' {"type": "function", "name": ...}
                name = choice.get("name") or (choice.get("function") or {}).get("name")
                if choice.get("type") != "function" or not isinstance(name, str):
                    raise APIError(
                        400, "tool_choice: expected {'type': 'function', 'name': ...}", "invalid_value", "tool_choice"
                    )
                choice = {"type": "function", "function": {"name": name}}
            return {"constraint": constraint("tool_choice", choice, tools)}
        if fmt is None or fmt.type == "text":
            return {}
        return {"constraint": constraint("text.format", fmt.schema_ if fmt.type == "json_schema" else None)}

    def call(self) -> d.Call:
        tools = self.tool_dicts()
        values = {"max_tokens": self.max_output_tokens, "temperature": self.temperature, "top_p": self.top_p}
        options = {k: v for k, v in values.items() if v is not None}
        options.update(self.shape(tools))
        return d.Call(self.messages(), tools, options, [], parse_keep_alive(self.keep_alive))


def output_items(outcome: d.Outcome) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if outcome.content or not outcome.calls:
        part = {"type": "output_text", "text": outcome.content, "annotations": [], "logprobs": []}
        items.append(
            {"type": "message", "id": oai.new_id("msg"), "status": "completed", "role": "assistant", "content": [part]}
        )
    for call in outcome.calls:
        cid, name, args = d.arguments(call)
        items.append(
            {
                "type": "function_call",
                "id": oai.new_id("fc"),
                "call_id": cid,
                "name": name,
                "arguments": args,
                "status": "completed",
            }
        )
    return items


def response(
    rid: str, req: ResponsesRequest, model: str, outcome: d.Outcome | None, output: list[dict[str, Any]]
) -> dict[str, Any]:
    """The ``response`` object (`outcome` None: one in progress, at the start of a stream)."""
    body: dict[str, Any] = {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "error": None,
        "incomplete_details": None,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "model": model,
        "output": output,
        "parallel_tool_calls": req.parallel_tool_calls if req.parallel_tool_calls is not None else True,
        "previous_response_id": None,
        "store": False,
        "temperature": req.temperature,
        "top_p": req.top_p,
        "text": req.text.model_dump(exclude_none=True, by_alias=True) if req.text else {"format": {"type": "text"}},
        "tool_choice": req.tool_choice or "auto",
        "tools": [t.model_dump(exclude_none=True) for t in req.tools or []],
        "truncation": req.truncation or "disabled",
        "metadata": req.metadata or {},
        "usage": None,
    }
    if outcome is not None:
        cut = outcome.finish == "length"
        body["status"] = "incomplete" if cut else "completed"
        body["incomplete_details"] = {"reason": "max_output_tokens"} if cut else None
        body["usage"] = {
            "input_tokens": outcome.prompt_tokens,
            "input_tokens_details": {"cached_tokens": outcome.cached_tokens or 0},
            "output_tokens": outcome.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": outcome.prompt_tokens + outcome.completion_tokens,
        }
    return body


class _Events:
    """Responses' stream events, numbered."""

    def __init__(self) -> None:
        self.number = 0

    def __call__(self, kind: str, **data: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.number, **data}
        self.number += 1
        return f"event: {kind}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


def events(rid: str, req: ResponsesRequest, slot: Slot, source: Iterator[d.Event]) -> Iterator[bytes]:
    """created, in_progress; a message item's text deltas as they come; function_call items (their
    arguments as one delta); completed (or incomplete) with the whole response."""
    ev = _Events()
    yield ev("response.created", response=response(rid, req, slot.name, None, []))
    yield ev("response.in_progress", response=response(rid, req, slot.name, None, []))
    output: list[dict[str, Any]] = []
    message: dict[str, Any] | None = None
    texts: list[str] = []
    try:
        for kind, value in source:
            if kind == "text":
                if message is None:
                    message = {
                        "type": "message",
                        "id": oai.new_id("msg"),
                        "status": "in_progress",
                        "role": "assistant",
                        "content": [],
                    }
                    yield ev("response.output_item.added", output_index=0, item=message)
                    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                    yield ev(
                        "response.content_part.added", item_id=message["id"], output_index=0, content_index=0, part=part
                    )
                texts.append(value)
                yield ev(
                    "response.output_text.delta",
                    item_id=message["id"],
                    output_index=0,
                    content_index=0,
                    delta=value,
                    logprobs=[],
                )
                continue
            outcome: d.Outcome = value
            items = output_items(outcome)
            if message is not None:
                text = "".join(texts)
                part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
                where = {"item_id": message["id"], "output_index": 0, "content_index": 0}
                yield ev("response.output_text.done", **where, text=text, logprobs=[])
                yield ev("response.content_part.done", **where, part=part)
                message = {**message, "status": "completed", "content": [part]}
                yield ev("response.output_item.done", output_index=0, item=message)
                output.append(message)
                items = [item for item in items if item["type"] != "message"]
            for item in items:
                index = len(output)
                if item["type"] == "message":
                    yield ev(
                        "response.output_item.added",
                        output_index=index,
                        item={**item, "status": "in_progress", "content": []},
                    )
                    where = {"item_id": item["id"], "output_index": index, "content_index": 0}
                    part = item["content"][0]
                    yield ev("response.content_part.added", **where, part={**part, "text": ""})
                    if part["text"]:
                        yield ev("response.output_text.delta", **where, delta=part["text"], logprobs=[])
                    yield ev("response.output_text.done", **where, text=part["text"], logprobs=[])
                    yield ev("response.content_part.done", **where, part=part)
                else:
                    yield ev(
                        "response.output_item.added",
                        output_index=index,
                        item={**item, "arguments": "", "status": "in_progress"},
                    )
                    where = {"item_id": item["id"], "output_index": index}
                    yield ev("response.function_call_arguments.delta", **where, delta=item["arguments"])
                    yield ev("response.function_call_arguments.done", **where, arguments=item["arguments"])
                yield ev("response.output_item.done", output_index=index, item=item)
                output.append(item)
            final = response(rid, req, slot.name, outcome, output)
            yield ev("response.incomplete" if final["status"] == "incomplete" else "response.completed", response=final)
    except Exception as exc:  # after the stream began: in-band, as OpenAI sends it
        error = api_error(exc)
        yield ev("error", code=error.code, message=error.message, param=error.param)


class Responses:
    """The Responses endpoint of one `Server`."""

    def __init__(self, server: Server) -> None:
        self.server = server

    async def create(self, request: Request) -> Response:
        from provender_serve._batching import batched
        from provender_serve._threads import on_model, stream_from_model

        body = await self.server._json(request)
        req: ResponsesRequest = parse(ResponsesRequest, body)
        limit = self.server.options.max_tokens_limit
        if req.max_output_tokens is not None and req.max_output_tokens > limit:
            raise APIError(
                400,
                f"max_output_tokens: {req.max_output_tokens} is more than this server allows ({limit})",
                "invalid_value",
                "max_output_tokens",
            )
        req.check_stateless()
        call = req.call()
        await self.server._check_pull(request, req.model)
        rid = oai.new_id("resp").replace("-", "_")
        alone = lambda slot: not batched(slot, call.options)  # noqa: E731
        if req.stream:

            def make(slot: Slot, cancel: threading.Event) -> Iterator[bytes]:
                return d.stream(self.server, slot, call, cancel, lambda s, src: events(rid, req, s, src))

            return await stream_from_model(self.server.registry, req.model, make, alone)

        def work(slot: Slot) -> dict[str, Any]:
            outcome = d.generate(self.server, slot, call)
            return response(rid, req, req.model, outcome, output_items(outcome))

        return JSONResponse(await on_model(self.server.registry, req.model, work, alone))


def routes(server: Server) -> list[Route]:
    api = Responses(server)
    return [Route("/v1/responses", server.endpoint(api.create), methods=["POST"])]
