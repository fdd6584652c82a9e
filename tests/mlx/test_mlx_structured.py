"""Constrained decoding and logprobs on a tiny random MLX llama (provender.testing.StructuredContract),
through `MLXProvider` and through its `BatchSession` (mlx-lm's BatchGenerator)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from provender import Provider
from provender.testing import SCHEMA, StructuredContract

pytest.importorskip("llguidance")


class TestMLXStructured(StructuredContract):
    @pytest.fixture
    def provider(self, cached_tiny: str) -> Provider:
        from provender_mlx import MLXProvider

        return MLXProvider(cached_tiny)

    def reference_logprobs(self, provider: Provider, prompt: str, token_ids: list[int]) -> Any:
        import mlx.core as mx

        from provender_mlx.provider import encode

        model, tokenizer = provider.load_model()  # type: ignore[attr-defined]
        ids = encode(tokenizer, prompt)
        logits = model(mx.array([ids + token_ids]))[0, len(ids) - 1 : len(ids) - 1 + len(token_ids)]
        return np.array((logits - mx.logsumexp(logits, axis=-1, keepdims=True)).astype(mx.float32))


def test_batch_sessions_constrain_and_report_logprobs_per_request(cached_tiny: str) -> None:
    import jsonschema

    from provender_mlx import MLXProvider

    provider = MLXProvider(cached_tiny)
    prompt = "Hello, world"
    requests = [
        {"schema": SCHEMA, "max_tokens": 160, "logprobs": True},
        {"choice": ["red", "green", "blue"], "max_tokens": 20, "logprobs": True, "top_logprobs": 3},
        {"max_tokens": 6, "logprobs": True},  # unconstrained, beside the constrained ones
        {"schema": SCHEMA, "max_tokens": 4},
    ]
    with provider.batch_session() as session:
        ids = [session.insert(prompt, **r) for r in requests]
        chunks: dict[int, list[Any]] = {i: [] for i in ids}
        while len(session):
            for uid, chunk in session.step_chunks():
                chunks[uid].append(chunk)
    for uid, request in zip(ids, requests, strict=True):
        alone = provider.complete(prompt, **request)
        text = "".join(c.text for c in chunks[uid])
        last = chunks[uid][-1]
        assert (text, last.finish_reason, last.completion_tokens) == (
            alone.text,
            alone.finish_reason,
            alone.completion_tokens,
        )
        logprobs = [lp for c in chunks[uid] for lp in c.logprobs or []]
        if request.get("logprobs"):
            assert len(logprobs) == len(alone.logprobs or []) == alone.completion_tokens
            for a, b in zip(logprobs, alone.logprobs or [], strict=True):
                assert a.token_id == b.token_id and abs(a.logprob - b.logprob) < 1e-4
    assert chunks[ids[3]][-1].finish_reason == "length"
    if chunks[ids[0]][-1].finish_reason == "stop":
        jsonschema.validate(json.loads("".join(c.text for c in chunks[ids[0]])), SCHEMA)
    assert "".join(c.text for c in chunks[ids[1]]) in ("red", "green", "blue")
