"""Constrained and logprobs requests on the MLX batch path: decoded together, each answer (its text,
its finish reason, its logprobs) the same as the request served alone."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("llguidance", reason="structured output needs the llguidance engine (tox installs it)")

SCHEMA = {
    "type": "object",
    "properties": {"kind": {"enum": ["cat", "dog"]}, "age": {"type": "integer", "minimum": 0, "maximum": 9}},
    "required": ["kind", "age"],
    "additionalProperties": False,
}
REQUESTS: list[dict[str, Any]] = [
    {"response_format": {"type": "json_schema", "json_schema": {"name": "pet", "schema": SCHEMA}}},
    {"response_format": {"type": "json_object"}, "max_tokens": 12},
    {"logprobs": True, "top_logprobs": 2, "max_tokens": 9},
    {"response_format": {"type": "json_schema", "json_schema": {"name": "pet", "schema": SCHEMA}}, "logprobs": True},
    {"max_tokens": 7},  # a plain one beside them
]


def _ask(server: Any, model: str, i: int) -> tuple[str | None, str, Any]:
    kwargs = {"max_tokens": 200, **REQUESTS[i]}
    answer = server.client().chat.completions.create(
        model=model, messages=[{"role": "user", "content": f"pet {i}"}], temperature=0, **kwargs
    )
    choice = answer.choices[0]
    logprobs = [(t.token, round(t.logprob, 4)) for t in choice.logprobs.content] if choice.logprobs else None
    return choice.message.content, choice.finish_reason, logprobs


def _row(server: Any, model: str) -> dict[str, Any]:
    return next(r for r in server.ps() if r["model"] == model)


def test_constrained_and_logprobs_requests_batch_like_alone(start_server: Any, cached_tiny: str) -> None:
    server = start_server()
    alone = [_ask(server, cached_tiny, i) for i in range(len(REQUESTS))]
    assert _row(server, cached_tiny)["largest_batch"] == 1
    blocker = server.client().completions.create(model=cached_tiny, prompt="go", max_tokens=20000, stream=True)
    for n, _ in enumerate(blocker):
        if n == 3:
            break
    with ThreadPoolExecutor(len(REQUESTS)) as pool:
        futures = [pool.submit(_ask, server, cached_tiny, i) for i in range(len(REQUESTS))]
        deadline = time.monotonic() + 60
        while _row(server, cached_tiny)["queued"] < len(REQUESTS):
            assert time.monotonic() < deadline, "the requests did not queue"
            time.sleep(0.05)
        blocker.close()
        together = [f.result(timeout=180) for f in futures]
    assert together == alone
    assert _row(server, cached_tiny)["largest_batch"] == len(REQUESTS)  # all decoded together
