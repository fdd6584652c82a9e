"""EchoProvider: generation without a model, to show the Provider contract on `PooledProvider`."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from provender import CacheManager, Lease, LoadedModel, ModelNotFoundError, PooledProvider, Provider
from provender.generation import Chunk, Detokenizer

MODES: dict[str, Callable[[list[str]], list[str]]] = {
    "plain": lambda words: words,
    "upper": lambda words: [w.upper() for w in words],
    "lower": lambda words: [w.lower() for w in words],
    "reverse": lambda words: words[::-1],
}


class EchoProvider(PooledProvider):
    """Echoes the prompt word by word, transformed by the model's mode.

    The model is a mode name (``upper``), or a directory or cached model whose ``echo.json``
    names one; a cached one is leased while its mode is loaded in the pool, so no process
    evicts it meanwhile. ``max_tokens`` counts words; ``temperature > 0`` shuffles them
    (``seed`` makes it repeatable). Its options are the common ones and ``system_prompt``.
    """

    name = "echo"
    supported_options = Provider.supported_options | {"system_prompt"}

    def resolve(self) -> tuple[Path, Lease | None]:
        return (Path(self.model), None) if self.model in MODES else super().resolve()

    def fetch(self, cache: CacheManager) -> None:  # never downloads: a miss is an unknown model
        raise ModelNotFoundError(self.model, f"echo models are {', '.join(sorted(MODES))}, or hold an echo.json")

    def load_files(self, path: Path) -> LoadedModel:
        try:  # a mode name's "path" holds no echo.json
            mode = json.loads((path / "echo.json").read_text()).get("mode", "plain")
        except (OSError, ValueError, AttributeError):
            mode = self.model
        if mode not in MODES:
            raise ModelNotFoundError(self.model, f"echo models are {', '.join(sorted(MODES))}")
        return LoadedModel(self.model, mode)

    def template(self, item: LoadedModel, messages: list[dict[str, Any]], tools: Any = None) -> str:
        """Echo's "chat template": the last user message."""
        return str(next((m["content"] for m in reversed(messages) if m.get("role") == "user"), ""))

    def decode(self, item: LoadedModel, request: Any) -> Iterator[Chunk]:
        """One word per token through the core's token loop (`max_tokens`, stop strings, finish reason)."""
        words = MODES[item.model](request.text.split())
        if request.options.temperature:
            random.Random(request.options.seed).shuffle(words)
        decoding = self.decoding(request, prompt_tokens=len(words), token_text=lambda i: words[i])
        detokenizer = Detokenizer(lambda ids: " ".join(words[i] for i in ids))
        # token i is the i-th word; one past the last is the end-of-sequence token
        return decoding.run(range(len(words) + 1), detokenizer, lambda i: i == len(words))
