"""OpenAI-shaped answers: completions, chunks, embeddings, usage and tool calls."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from provender import Provider, UnsupportedError

if TYPE_CHECKING:
    import numpy as np


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


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int | None = None) -> dict[str, Any]:
    """OpenAI's usage object; ``prompt_tokens_details.cached_tokens`` (the prompt's tokens a prompt
    cache supplied, as OpenAI reports its own) when the runtime counted them."""
    counts: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if cached_tokens is not None:
        counts["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return counts


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


#: What OpenAI answers for a probability too small for a float (JSON has no -Infinity).
FLOOR = -9999.0


def _logprob(value: float) -> float:
    return max(float(value), FLOOR) if value == value else FLOOR  # NaN too


def _token(token: str, logprob: float, raw: list[int] | None = None) -> dict[str, Any]:
    """One token of a chat ``logprobs`` entry; `raw` its own bytes (a token holding part of a UTF-8
    character has text that cannot show it), else its text's UTF-8."""
    return {
        "token": token,
        "logprob": _logprob(logprob),
        "bytes": list(raw) if raw else list(token.encode("utf-8", "surrogatepass")),
    }


def chat_logprobs(logprobs: list[Any] | None) -> dict[str, Any] | None:
    """A chat choice's ``logprobs`` (``{"content": [{token, logprob, bytes, top_logprobs}], "refusal": None}``)
    from `provender.generation.TokenLogprob` objects; None when none were asked for."""
    if logprobs is None:
        return None
    content = [
        {
            **_token(lp.token, lp.logprob, lp.bytes),
            "top_logprobs": [
                _token(token, value, raw)
                for (token, value), raw in zip(lp.top, lp.top_bytes or [None] * len(lp.top), strict=True)
            ],
        }
        for lp in logprobs
    ]
    return {"content": content, "refusal": None}


def completion_logprobs(logprobs: list[Any] | None, offset: int = 0) -> dict[str, Any] | None:
    """A completion choice's legacy ``logprobs`` (tokens, token_logprobs, top_logprobs, text_offset):
    ``top_logprobs`` maps the chosen token and its alternatives to their logprobs, as OpenAI's;
    ``text_offset`` counts characters of the completion from `offset`."""
    if logprobs is None:
        return None
    tokens, values, tops, offsets = [], [], [], []
    for lp in logprobs:
        tokens.append(lp.token)
        values.append(_logprob(lp.logprob))
        top = {token: _logprob(value) for token, value in lp.top}
        top.setdefault(lp.token, _logprob(lp.logprob))
        tops.append(top)
        offsets.append(offset)
        offset += len(lp.token)
    return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets}


def chat_completion(
    cid: str,
    model: str,
    content: str,
    tool_calls: list[dict[str, Any]],
    finish: str,
    counts: dict[str, int],
    logprobs: list[Any] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content if content or not tool_calls else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": chat_logprobs(logprobs)}],
        "usage": counts,
    }


def chat_chunk(
    cid: str,
    model: str,
    delta: dict[str, Any] | None,
    finish: str | None = None,
    counts: dict[str, int] | None = None,
    logprobs: list[Any] | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``; with `delta` None, the usage-only chunk (no choices)."""
    chunk: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": chat_logprobs(logprobs)}
    chunk["choices"] = [] if delta is None else [choice]
    if counts is not None:
        chunk["usage"] = counts
    return chunk


def tool_call_deltas(tool_calls: list[dict[str, Any]]) -> dict[str, Any]:
    return {"tool_calls": [{"index": i, **call} for i, call in enumerate(tool_calls)]}


def completion(
    cid: str,
    model: str,
    text: str,
    finish: str | None,
    counts: dict[str, int] | None,
    *,
    chunk: bool = False,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ``text_completion`` (or one chunk of a streamed one); `logprobs` as `completion_logprobs`."""
    body: dict[str, Any] = {
        "id": cid,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": logprobs}],
    }
    if counts is not None:
        body["usage"] = counts
    elif not chunk:
        body["usage"] = usage(0, 0)
    return body


def embeddings(model: str, vectors: np.ndarray, encoding: str, prompt_tokens: int) -> dict[str, Any]:
    import numpy as np  # here, not at import: numpy costs a server start ~1.5 s on a loaded machine

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
