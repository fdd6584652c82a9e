"""EchoProvider: generation without a model, to show the Provider contract."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from provender import Lease, ModelNotFoundError, Provider, check_generation_options

MODES: dict[str, Callable[[str], str]] = {
    "plain": lambda w: w,
    "upper": str.upper,
    "lower": str.lower,
    "reverse": lambda w: w,  # word order is reversed below, not the words
}


class EchoProvider(Provider):
    """Echoes the prompt word by word, transformed by the model's mode.

    The model is a mode name (``upper``) or a directory whose ``echo.json`` names one.
    ``max_tokens`` counts words; ``temperature > 0`` shuffles them (``seed`` makes it repeatable).
    """

    name = "echo"

    def __init__(self, model: str) -> None:
        super().__init__(model)
        self._lease: Lease | None = None
        mode = model
        config = Path(model).expanduser() / "echo.json"
        if "/" in model and not config.is_file():
            # A cached model: hold it while this provider lives, so no process evicts it under us
            # (acquiring also marks it used and counts a cache hit).
            from provender import CacheManager, EntryNotFoundError

            try:
                self._lease = CacheManager().acquire(model)
                config = self._lease.entry.model_path / "echo.json"
            except EntryNotFoundError:
                pass
        if config.is_file():
            mode = json.loads(config.read_text()).get("mode", "plain")
        if mode not in MODES:
            self.close()
            raise ModelNotFoundError(model, f"echo models are {', '.join(sorted(MODES))}")
        self.mode = mode

    def _words(self, prompt: str, options: dict[str, Any]) -> list[str]:
        check_generation_options(options, provider=self.name, extra=("system_prompt",))
        words = [MODES[self.mode](w) for w in prompt.split()]
        if self.mode == "reverse":
            words.reverse()
        if options.get("temperature"):
            random.Random(options.get("seed")).shuffle(words)
        if options.get("max_tokens"):
            words = words[: options["max_tokens"]]
        text = " ".join(words)
        stops = options.get("stop") or []
        for stop in [stops] if isinstance(stops, str) else stops:
            text = text.split(stop)[0]
        return text.split(" ") if text else []

    def generate(self, prompt: str, **options: Any) -> str:
        return " ".join(self._words(prompt, options))

    def stream(self, prompt: str, **options: Any) -> Iterator[str]:
        words = self._words(prompt, options)
        for i, word in enumerate(words):
            yield word if i == 0 else " " + word

    def close(self) -> None:
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    def chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, **options: Any) -> str:
        last = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
        return self.generate(str(last), **options)
