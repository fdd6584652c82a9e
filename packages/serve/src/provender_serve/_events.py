"""A streamed OpenAI answer as server-sent events, from the provider's chunks.

`chat_events` and `completion_events` turn a reply's chunks (``text``, ``logprobs``, and on
the last one the runtime's ``finish_reason``) into ``chat.completion.chunk`` /
``text_completion`` events, each with the logprobs of its own tokens, then the closing
event with the finish reason and usage. An error after the first event is sent in-band (the
HTTP status is already out); the caller sends ``[DONE]``.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from provender import Provider
from provender_serve import _openai as oai
from provender_serve._generate import Reply
from provender_serve._models import api_error

logger = logging.getLogger("provender_serve._app")


def _chunks(first: list[Any], stream: Iterable[Any], cancel: threading.Event, model: str) -> Iterator[Any]:
    for chunk in itertools.chain(first, stream):
        if cancel.is_set():
            logger.info("client went away: stopped generating for %s", model)
            return
        yield chunk


def chat_events(
    cid: str,
    model: str,
    provider: Provider,
    first: list[Any],
    stream: Iterable[Any],
    *,
    max_tokens: int | None,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]] | None,
    include_usage: bool,
    cancel: threading.Event,
) -> Iterator[bytes]:
    """A chat answer's events; with `tools`, the reply is parsed whole, then sent (text, then calls)."""
    reply = Reply(max_tokens)
    try:
        yield oai.sse(oai.chat_chunk(cid, model, {"role": "assistant", "content": ""}))
        for chunk in _chunks(first, stream, cancel, model):
            reply.add(chunk)
            if not tools and (chunk.text or chunk.logprobs):
                yield oai.sse(oai.chat_chunk(cid, model, {"content": chunk.text}, logprobs=chunk.logprobs))
        if cancel.is_set():
            return
        content, calls = oai.parse_tool_calls(reply.text, tools) if tools else (reply.text, [])
        logprobs = reply.logprobs if tools else None  # with tools, all on the first chunk sent
        if tools and content:
            yield oai.sse(oai.chat_chunk(cid, model, {"content": content}, logprobs=logprobs))
            logprobs = None
        if calls:
            yield oai.sse(oai.chat_chunk(cid, model, oai.tool_call_deltas(calls), logprobs=logprobs))
        counts = reply.usage(provider, messages)
        finish = reply.finish_reason(provider, calls)
        yield oai.sse(oai.chat_chunk(cid, model, {}, finish, None if include_usage else counts))
        if include_usage:
            yield oai.sse(oai.chat_chunk(cid, model, None, counts=counts))
    except Exception as exc:
        yield oai.sse(api_error(exc).body())


def completion_events(
    cid: str,
    model: str,
    provider: Provider,
    first: list[Any],
    stream: Iterable[Any],
    *,
    max_tokens: int | None,
    prompt: str,
    include_usage: bool,
    cancel: threading.Event,
) -> Iterator[bytes]:
    """A completion's events, each chunk's logprobs in the legacy shape (offsets into the completion)."""
    reply = Reply(max_tokens)
    try:
        offset = 0
        for chunk in _chunks(first, stream, cancel, model):
            reply.add(chunk)
            if chunk.text or chunk.logprobs:
                logprobs = oai.completion_logprobs(chunk.logprobs, offset)
                yield oai.sse(oai.completion(cid, model, chunk.text, None, None, chunk=True, logprobs=logprobs))
            offset += len(chunk.text)
        if cancel.is_set():
            return
        counts = reply.usage(provider, prompt)
        finish = reply.finish_reason(provider, [])
        yield oai.sse(oai.completion(cid, model, "", finish, None if include_usage else counts, chunk=True))
        if include_usage:
            yield oai.sse({**oai.completion(cid, model, "", None, counts, chunk=True), "choices": []})
    except Exception as exc:
        yield oai.sse(api_error(exc).body())
