"""Constrained decoding and logprobs on a tiny random GGUF llama (provender.testing.StructuredContract):
the logits processor sees each step's logits without ``logits_all``; the reference below is a
second `Llama` with ``logits_all`` that scores prompt + tokens at once."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from provender import Provider
from provender.testing import StructuredContract

pytest.importorskip("llguidance")


@pytest.fixture(autouse=True)
def fresh_constraints() -> None:
    """Each test loads its own `Llama` and closes it; a constraint compiled for a closed one (cached by
    the vocabulary's fingerprint in provender._constrain) still points into its freed vocabulary and
    crashed the next test that reused it (reported to "engine"; remove once _constrain keys it by model)."""
    from provender._constrain import clear_cache

    clear_cache()


class TestLlamaCppStructured(StructuredContract):
    @pytest.fixture
    def provider(self, cached_tiny: str) -> Provider:
        from provender_llamacpp import LlamaCppProvider

        return LlamaCppProvider(cached_tiny, n_ctx=1024)

    def reference_logprobs(self, provider: Provider, prompt: str, token_ids: list[int]) -> Any:
        from llama_cpp import Llama

        from provender_llamacpp.provider import prompt_ids

        llm = provider.load_model()  # type: ignore[attr-defined]
        assert not llm._logits_all  # the provider's own model scores one row per step
        reference = Llama(model_path=llm.model_path, n_ctx=1024, logits_all=True, verbose=False)
        ids = prompt_ids(reference, prompt, False)
        reference.eval(ids + token_ids)
        logits = np.array(reference.scores[len(ids) - 1 : len(ids) - 1 + len(token_ids)], dtype=np.float64)
        reference.close()
        return logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
