"""The complete provider of docs/plugins.md keeps what it claims: constrained output and logprobs
(provender.testing.StructuredContract) on the tiny random llama, through its own token loop."""

from __future__ import annotations

import pytest

from provender import Provider

pytest.importorskip("llguidance")

import test_structured
from test_docs_provider import HF


class TestDocsProviderStructured(test_structured.TestTransformersStructured):
    seeds = (1,)

    @pytest.fixture
    def provider(self, cached_tiny: str) -> Provider:
        provider: Provider = HF.HFProvider(cached_tiny)
        return provider
