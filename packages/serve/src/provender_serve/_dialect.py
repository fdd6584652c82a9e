"""What the Anthropic and Responses dialects share: one generation over the server's request path.

A dialect turns its request into provider messages, tools and options, then calls `generate`
(one answer) or `stream` (its text as it comes) inside the same admission as the OpenAI routes
(`provender_serve._app.on_model` / ``stream_from_model``: allow-list, queue, keep-alive, the
model's batch). Both give an `Outcome`: the reply's text and tool calls (read by the agent's
parsers, as the OpenAI routes read them), why it ended, and its tokens.

Stop strings are cut here, not by the provider, so an answer can say which one ended it
(Anthropic's ``stop_sequence``); the provider stops at the next token when its stream is closed.
"""

from __future__ import annotations

import hmac
import itertools
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from provender_serve import _openai as oai
from provender_serve._batching import batched
from provender_serve._generate import Reply, chunks
from provender_serve._threads import READY, closing
from provender_serve.errors import APIError

if TYPE_CHECKING:
    from provender_serve._app import Server
    from provender_serve._models import Slot


@dataclass
class Call:
    """A generation to run: provider messages, OpenAI-shaped tools, provider options, stop strings."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    options: dict[str, Any]
    stops: list[str] = field(default_factory=list)
    keep_alive: float | None = None


@dataclass
class Outcome:
    """A finished reply: content, OpenAI-shaped tool calls, why it ended ("stop", "length",
    "tool_calls", "stop_sequence" with `stop_sequence` set), and its tokens."""

    content: str
    calls: list[dict[str, Any]]
    finish: str
    stop_sequence: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None = None  # of the prompt's, from a prompt cache (when the runtime says)


class StopCut:
    """Streamed text cut before the first of `stops`; `matched` is the stop string that cut it."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.held = ""
        self.matched: str | None = None

    def feed(self, piece: str) -> str:
        """The text to pass on now (the rest is held back: it could start a stop string)."""
        if not self.stops:
            return piece
        self.held += piece
        hits = [(i, s) for s in self.stops if (i := self.held.find(s)) >= 0]
        if hits:
            index, self.matched = min(hits)
            out, self.held = self.held[:index], ""
            return out
        keep = max((n for s in self.stops for n in range(1, len(s)) if self.held.endswith(s[:n])), default=0)
        out, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep :]
        return out

    def flush(self) -> str:
        out, self.held = self.held, ""
        return out


def pieces(server: Server, slot: Slot, call: Call) -> Iterator[Any]:
    """The reply's chunks from the model (its batch where it joins one), counted by /metrics."""
    stream = chunks(slot, messages=call.messages, tools=call.tools, options=call.options)
    metrics = getattr(server, "metrics", None)
    return metrics.metered(slot, stream, call.messages) if metrics is not None else stream


def _outcome(slot: Slot, call: Call, reply: Reply, cut: StopCut, text: str) -> Outcome:
    content, calls = oai.parse_tool_calls(text, call.tools) if call.tools else (text, [])
    finish = reply.finish_reason(slot.provider, calls)
    if cut.matched is not None and not calls:
        finish = "stop_sequence"
    prompt_tokens = reply.prompt_tokens(slot.provider, call.messages)
    return Outcome(content, calls, finish, cut.matched, prompt_tokens, reply.tokens(slot.provider), reply.cached)


def generate(server: Server, slot: Slot, call: Call) -> Outcome:
    """The whole reply (runs on the model's thread, or the batch's request thread)."""
    exclusive = not batched(slot, call.options)
    with server.registry.hold(slot, keep_alive=call.keep_alive, exclusive=exclusive):
        reply, cut, text = Reply(call.options.get("max_tokens")), StopCut(call.stops), []
        with closing(pieces(server, slot, call)) as stream:
            for chunk in stream:
                reply.add(chunk)
                text.append(cut.feed(chunk.text))
                if cut.matched is not None:
                    break
        text.append(cut.flush())
        return _outcome(slot, call, reply, cut, "".join(text))


Event = tuple[str, Any]  # ("text", str) as it comes, then ("end", Outcome)


def stream(
    server: Server,
    slot: Slot,
    call: Call,
    cancel: threading.Event,
    events: Callable[[Slot, Iterator[Event]], Iterator[bytes]],
) -> Iterator[bytes]:
    """A `stream_from_model` producer: `events(slot, ...)` turns the reply's text deltas (none
    with tools: the reply is parsed whole) and its `Outcome` into the dialect's bytes."""
    exclusive = not batched(slot, call.options)
    with server.registry.hold(slot, keep_alive=call.keep_alive, exclusive=exclusive):
        reply, cut = Reply(call.options.get("max_tokens")), StopCut(call.stops)
        with closing(pieces(server, slot, call)) as source:
            first = list(itertools.islice(source, 1))  # what fails before the first chunk is an HTTP error
            yield READY

            def produce() -> Iterator[Event]:
                text: list[str] = []
                for chunk in itertools.chain(first, source):
                    if cancel.is_set():
                        return
                    reply.add(chunk)
                    piece = cut.feed(chunk.text)
                    text.append(piece)
                    if piece and not call.tools:
                        yield "text", piece
                    if cut.matched is not None:
                        break
                rest = cut.flush()
                text.append(rest)
                if rest and not call.tools:
                    yield "text", rest
                yield "end", _outcome(slot, call, reply, cut, "".join(text))

            yield from events(slot, produce())


def check_key(server: Server, request: Request, *, x_api_key: bool) -> None:
    """The server's key as ``Authorization: Bearer`` or (`x_api_key`, Anthropic's) ``x-api-key``."""
    key = server.options.api_key
    if not key:
        return
    expected = key.encode("utf-8", "surrogatepass")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    sent = [token.strip()] if scheme.lower() == "bearer" else []
    if x_api_key and "x-api-key" in request.headers:
        sent.append(request.headers["x-api-key"].strip())
    if not any(hmac.compare_digest(s.encode("latin-1", "replace"), expected) for s in sent):
        how = "'x-api-key: <key>' or 'Authorization: Bearer <key>'" if x_api_key else "'Authorization: Bearer <key>'"
        raise APIError(401, f"a valid API key is required: send {how}", "invalid_api_key")


def reshaped(response: Response, shape: Callable[[APIError], Response]) -> Response:
    """An OpenAI-shaped error answer (`stream_from_model`'s, before its stream began) in a dialect's shape."""
    if response.status_code < 400 or response.media_type != "application/json":
        return response
    error = json.loads(bytes(response.body)).get("error") or {}
    return shape(APIError(response.status_code, str(error.get("message", "")), error.get("code"), error.get("param")))


def arguments(call: dict[str, Any]) -> tuple[str, str, str]:
    """(id, name, arguments as JSON text) of an OpenAI-shaped tool call."""
    function = call.get("function") or {}
    args = function.get("arguments")
    text = args if isinstance(args, str) else json.dumps(args if args is not None else {})
    return str(call.get("id") or oai.new_id("call")), str(function.get("name", "")), text


def json_arguments(text: str) -> Any:
    """A tool call's arguments as JSON (``{}`` where the model wrote none, the text where it is not JSON)."""
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError:
        return {"_raw": text}
    return value if isinstance(value, dict) else {"_value": value}
