"""EchoProvider: generation without a model, to show the Provider contract on `PooledProvider`."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provender import LoadedModel, ModelNotFoundError, PooledProvider, Provider
from provender._detect import read_json

if TYPE_CHECKING:
    from provender import CacheManager, Lease
    from provender._pooled import Request
    from provender.generation import Chunk

MODES: dict[str, Callable[[str], str]] = {
    "plain": lambda w: w,
    "upper": str.upper,
    "lower": str.lower,
    "reverse": lambda w: w,  # word order is reversed below, not the words
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
        config = read_json(path / "echo.json", {}) if path.is_dir() else {}
        mode = config.get("mode", "plain") if isinstance(config, dict) and config else self.model
        if mode not in MODES:
            raise ModelNotFoundError(self.model, f"echo models are {', '.join(sorted(MODES))}")
        return LoadedModel(self.model, mode)

    def template(self, item: LoadedModel, messages: list[dict[str, Any]], tools: Any = None) -> str:
        """Echo's "chat template": the last user message."""
        return str(next((m["content"] for m in reversed(messages) if m.get("role") == "user"), ""))

    def decode(self, item: LoadedModel, request: Request) -> Iterator[Chunk]:
        """One word per token; the base has checked the options and cuts at stop strings."""
        options = request.options
        words = [MODES[item.model](w) for w in request.text.split()]
        if item.model == "reverse":
            words.reverse()
        if options.temperature:
            random.Random(options.seed).shuffle(words)
        decoding = self.decoding(request, prompt_tokens=len(words), token_text=lambda i: words[i])
        for i, word in enumerate(words[: decoding.max_tokens]):
            if (chunk := decoding.feed(i, word if i == 0 else " " + word)) is not None:
                yield chunk
            if decoding.stopped:
                return
        yield decoding.finish("length" if len(words) > decoding.max_tokens else "stop")
