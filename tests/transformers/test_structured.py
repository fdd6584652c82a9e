"""Constrained decoding and logprobs on a tiny random transformers llama (provender.testing.StructuredContract)."""

from __future__ import annotations

from typing import Any

import pytest

from provender import Provider
from provender.testing import StructuredContract

pytest.importorskip("llguidance")


class TestTransformersStructured(StructuredContract):
    seeds = (1, 2)

    @pytest.fixture
    def provider(self, cached_tiny: str) -> Provider:
        from provender_transformers import TransformersProvider

        return TransformersProvider(cached_tiny)

    def reference_logprobs(self, provider: Provider, prompt: str, token_ids: list[int]) -> Any:
        import torch

        model, tokenizer = provider.load_model()  # type: ignore[attr-defined]
        ids = tokenizer(prompt)["input_ids"]
        with torch.inference_mode():
            logits = model(torch.tensor([ids + token_ids])).logits[0, len(ids) - 1 : len(ids) - 1 + len(token_ids)]
        return torch.log_softmax(logits.float(), dim=-1).numpy()
