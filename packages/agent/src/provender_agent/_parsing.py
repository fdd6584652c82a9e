"""Finding tool calls in a model's text, in the formats today's open models' chat templates use.

- Hermes / Qwen: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``, repeatable
  (mlx-lm's ``json_tools``);
- Mistral: ``[TOOL_CALLS][{"name": ..., "arguments": {...}}]`` or ``[TOOL_CALLS]name[ARGS]{...}``
  (mlx-lm's ``mistral``);
- pythonic (Llama 3.2/4, LFM): ``[get_weather(city="Paris"), add(a=1, b=2)]``, bare or inside
  ``<|tool_call_start|>...<|tool_call_end|>`` (mlx-lm's ``pythonic``);
- Llama 3.1 JSON: ``{"name": ..., "parameters": {...}}``, the whole reply or after
  ``<|python_tag|>``, ``;``-separated (parsed here).

mlx-lm's parsers are reused as they are; only the Llama 3 JSON format, which mlx-lm
leaves to its server, is parsed here. A reply that clearly tries to call a tool but
cannot be parsed is reported back (``errors``), never silently taken as an answer.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ToolCall:
    name: str
    arguments: Any  # dict when parsed; the raw value when it was not an object
    id: str = field(default_factory=lambda: f"call_{uuid.uuid4().hex[:12]}")

    def to_message(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": json.dumps(self.arguments, default=str)},
        }


@dataclass
class ParsedReply:
    content: str  # the text with the tool-call markup removed
    calls: list[ToolCall]
    errors: list[str]
    format: str | None = None


_HERMES = re.compile(r"<tool_call>(.*?)(?:</tool_call>|\Z)", re.S)
_PYTHONIC_MARKED = re.compile(r"<\|tool_call_start\|>(.*?)(?:<\|tool_call_end\|>|\Z)", re.S)
_PYTHONIC_BARE = re.compile(r"^\s*\[\s*[A-Za-z_][\w.]*\(.*\)\s*\]\s*$", re.S)


def parse_reply(text: str, tools: list[dict[str, Any]] | None = None) -> ParsedReply:
    """Tool calls in `text`, in whichever supported format it uses (see the module docs)."""
    if "<tool_call>" in text:
        return _hermes(text, tools)
    if "[TOOL_CALLS]" in text:
        return _mistral(text, tools)
    if "<|tool_call_start|>" in text:
        return _pythonic(text, _PYTHONIC_MARKED.findall(text), _PYTHONIC_MARKED.sub("", text), tools)
    if _PYTHONIC_BARE.match(text):
        return _pythonic(text, [text.strip()], "", tools)
    stripped = text.strip()
    if "<|python_tag|>" in text or (stripped.startswith("{") and '"name"' in stripped):
        return _llama3(text)
    return ParsedReply(content=text.strip(), calls=[], errors=[])


def _to_calls(parsed: Any) -> list[ToolCall]:
    items = parsed if isinstance(parsed, list) else [parsed]
    calls = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ValueError(f"not a tool call: {item!r:.80}")
        arguments = item.get("arguments", item.get("parameters", {}))
        calls.append(
            ToolCall(item["name"], arguments, **({"id": item["id"]} if isinstance(item.get("id"), str) else {}))
        )
    return calls


def _hermes(text: str, tools: list[dict[str, Any]] | None) -> ParsedReply:
    from mlx_lm.tool_parsers import json_tools

    calls, errors = [], []
    for block in _HERMES.findall(text):
        try:
            calls.extend(_to_calls(json_tools.parse_tool_call(block, tools)))  # type: ignore[no-untyped-call]
        except (ValueError, TypeError) as exc:
            errors.append(f"could not parse the tool call {block.strip()[:120]!r}: {exc}")
    return ParsedReply(_HERMES.sub("", text).strip(), calls, errors, "hermes")


def _mistral(text: str, tools: list[dict[str, Any]] | None) -> ParsedReply:
    from mlx_lm.tool_parsers import mistral

    before, _, payload = text.partition("[TOOL_CALLS]")
    try:
        calls = _to_calls(mistral.parse_tool_call(payload.strip(), tools))
        return ParsedReply(before.strip(), calls, [] if calls else ["[TOOL_CALLS] was followed by no call"], "mistral")
    except (ValueError, TypeError) as exc:
        return ParsedReply(
            before.strip(), [], [f"could not parse the tool call {payload.strip()[:120]!r}: {exc}"], "mistral"
        )


def _pythonic(text: str, blocks: list[str], content: str, tools: list[dict[str, Any]] | None) -> ParsedReply:
    from mlx_lm.tool_parsers import pythonic

    calls, errors = [], []
    for block in blocks:
        try:
            calls.extend(_to_calls(pythonic.parse_tool_call(block, tools)))
        except (ValueError, SyntaxError, TypeError) as exc:
            errors.append(f"could not parse the tool call {block.strip()[:120]!r}: {exc}")
    return ParsedReply(content.strip(), calls, errors, "pythonic")


def _llama3(text: str) -> ParsedReply:
    """Llama 3.1's JSON tool calls: ``{"name": ..., "parameters": {...}}``, ``;``-separated."""
    before, tag, payload = text.partition("<|python_tag|>")
    if not tag:
        before, payload = "", text
    decoder = json.JSONDecoder()
    calls, errors = [], []
    pos, payload = 0, payload.strip()
    while pos < len(payload):
        try:
            obj, end = decoder.raw_decode(payload, pos)
        except json.JSONDecodeError as exc:
            errors.append(f"could not parse the tool call {payload[pos : pos + 120]!r}: {exc.msg}")
            break
        # Untagged, only an object with arguments is a call: {"name": "Bob"} may be an answer.
        if tag or (isinstance(obj, dict) and ("parameters" in obj or "arguments" in obj)):
            try:
                calls.extend(_to_calls(obj))
            except ValueError as exc:
                errors.append(str(exc))
        pos = end
        while pos < len(payload) and payload[pos] in " \n\t;":
            pos += 1
    attempted = tag or '"parameters"' in payload or '"arguments"' in payload
    if not calls and not attempted:  # JSON that is not a call: an answer that happens to be JSON
        return ParsedReply(text.strip(), [], [])
    return ParsedReply(before.strip(), calls, errors, "llama3-json")
