"""OpenAI-shaped answers: completions, chunks, embeddings, usage and tool calls."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import numpy as np

from provender import Provider, UnsupportedError


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def count_tokens(provider: Provider, text: str) -> int:
    """Tokens in `text` by the model's tokenizer; words when the provider cannot count."""
    if not text:
        return 0
    try:
        return int(provider.count_tokens(text))
    except (UnsupportedError, NotImplementedError, AttributeError):
        return len(text.split())


def completion_tokens(provider: Provider, text: str, pieces: int, max_tokens: int | None) -> int:
    """Tokens generated: the streamed pieces when the provider streams token by token (MLX,
    llama.cpp), else the text counted by its tokenizer; never more than `max_tokens`."""
    count = pieces if pieces > 1 else count_tokens(provider, text)
    return min(count, max_tokens) if max_tokens is not None else count


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def prompt_text(messages: list[dict[str, Any]]) -> str:
    """The text of a conversation, for counting its prompt tokens."""
    parts = []
    for message in messages:
        parts.append(str(message.get("content") or ""))
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            parts.append(f"{function.get('name', '')} {function.get('arguments', '')}")
    return "\n".join(parts)


def parse_tool_calls(text: str, tools: list[dict[str, Any]] | None) -> tuple[str, list[dict[str, Any]]]:
    """(content, OpenAI tool_calls) from a model's raw reply, with the agent's parsers."""
    from provender_agent._parsing import parse_reply

    parsed = parse_reply(text, tools)
    if not parsed.calls:
        return text, []
    return parsed.content, [call.to_message() for call in parsed.calls]


def finish_reason(completion_tokens: int, max_tokens: int | None, tool_calls: list[dict[str, Any]]) -> str:
    if tool_calls:
        return "tool_calls"
    return "length" if max_tokens is not None and completion_tokens >= max_tokens else "stop"


def chat_completion(
    cid: str,
    model: str,
    content: str,
    tool_calls: list[dict[str, Any]],
    finish: str,
    counts: dict[str, int],
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content if content or not tool_calls else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": counts,
    }


def chat_chunk(
    cid: str,
    model: str,
    delta: dict[str, Any] | None,
    finish: str | None = None,
    counts: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``; with `delta` None, the usage-only chunk (no choices)."""
    chunk: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    chunk["choices"] = (
        [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
    )
    if counts is not None:
        chunk["usage"] = counts
    return chunk


def tool_call_deltas(tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
    return {"tool_calls": [{"index": i, **call} for i, call in enumerate(tool_calls)]}


def completion(
    cid: str, model: str, text: str, finish: str | None, counts: dict[str, int] | None, *, chunk: bool = False
) -> dict[str, Any]:
    """A ``text_completion`` (or one chunk of a streamed one)."""
    body: dict[str, Any] = {
        "id": cid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}],
    }
    if counts is not None:
        body["usage"] = counts
    elif not chunk:
        body["usage"] = usage(0, 0)
    return body


def embeddings(model: str, vectors: np.ndarray, encoding: str, prompt_tokens: int) -> dict[str, Any]:
    rows = []
    for i, vector in enumerate(np.asarray(vectors, dtype=np.float32)):
        if encoding == "base64":
            value: Any = base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
        else:
            value = vector.tolist()
        rows.append({"object": "embedding", "index": i, "embedding": value})
    return {
        "object": "list",
        "data": rows,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {payload}\n\n".encode()
