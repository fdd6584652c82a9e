"""EchoProvider: generation without a model, to show the Provider contract on `PooledProvider`."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provender import LoadedModel, ModelNotFoundError, PooledProvider
from provender._detect import read_json

if TYPE_CHECKING:
    from provender import CacheManager, Lease

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
    (``seed`` makes it repeatable).
    """

    name = "echo"

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

    def _words(self, prompt: str, options: dict[str, Any]) -> list[str]:
        self.check_options(options)
        with self.using("generation") as item:
            words = [MODES[item.model](w) for w in self.check_text(prompt, "prompt").split()]
            if item.model == "reverse":
                words.reverse()
        if options.get("temperature"):
            random.Random(options.get("seed")).shuffle(words)
        text = " ".join(words[: options.get("max_tokens") or None])
        stops = options.get("stop") or []
        for stop in [stops] if isinstance(stops, str) else stops:
            text = text.split(stop)[0]
        return text.split(" ") if text else []

    def generate(self, prompt: str, **options: Any) -> str:
        return " ".join(self._words(prompt, options))

    def stream(self, prompt: str, **options: Any) -> Iterator[str]:
        for i, word in enumerate(self._words(prompt, options)):
            yield word if i == 0 else " " + word

    def chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, **options: Any) -> str:
        messages = self.conversation(messages, tools, None)
        return self.generate(
            str(next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")), **options
        )
