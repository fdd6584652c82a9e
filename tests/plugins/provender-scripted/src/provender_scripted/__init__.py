"""A scripted chat provider (test fixture): ``scripted:/path/script.json``.

The script is ``{"replies": ["...", "..."]}``; the reply to a conversation is the one
at the index of the number of assistant turns it already holds (the last one repeats),
so a resumed conversation continues the script. Every call is appended to
``<script>.calls.jsonl`` (messages and tools), for the tests to check what the agent sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from provender import Provider, hookimpl


class ScriptedProvider(Provider):
    name = "scripted"

    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.script = Path(model)
        self.replies = json.loads(self.script.read_text())["replies"]

    def chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, **options: Any) -> str:
        with open(self.script.with_suffix(".calls.jsonl"), "a") as log:
            log.write(json.dumps({"messages": messages, "tools": tools, "options": options}, default=str) + "\n")
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        return str(self.replies[min(turn, len(self.replies) - 1)])

    def stream_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, **options: Any
    ) -> Iterator[str]:
        text = self.chat(messages, tools, **options)
        for i in range(0, len(text), 7):  # a few chunks, as a real stream would
            yield text[i : i + 7]


@hookimpl
def provender_register_providers(register):  # type: ignore[no-untyped-def]
    register("scripted", ScriptedProvider)


@hookimpl
def provender_register_tools(register):  # type: ignore[no-untyped-def]
    def shout(text: str) -> str:
        """Upper-case a text (a tool offered by a plugin)."""
        return text.upper()

    register(shout)
