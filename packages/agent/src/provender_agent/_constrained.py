"""The constraint that holds an agent's reply to a valid tool call or a plain answer.

A constrained call is the bare JSON object ``{"name": NAME, "arguments": {...}}``
(`provender.generation.tool_call_constraint`): the Llama 3.1 JSON format, which
`provender_agent._parsing.parse_reply` takes from any model (untagged, an object with
``arguments`` is a call), whatever the model's own chat template writes. Its ``arguments``
are held to the tool's ``parameters`` schema, so a model with random weights cannot write a
malformed call or call a tool that was not offered.

`tool_call_grammar(tools)` is for ``tool_choice="auto"``: an llguidance Lark grammar for a
reply that is either such a call or a plain answer that `parse_reply` does not take for an
attempted call (`ANSWER_REGEX`). ``"required"`` and a named tool use ``tool_call_constraint`` alone.
"""

from __future__ import annotations

import json
from typing import Any

#: A plain answer, for `tool_call_grammar`: after any whitespace it starts with neither ``{``,
#: ``[`` nor ``<``, and no ``<`` in it is followed by ``|``, ``t``, ``<`` or ``[``, no ``[`` by
#: ``T``, ``<`` or ``[``; so none of `parse_reply`'s call markers (``<tool_call>``,
#: ``[TOOL_CALLS]``, ``<|python_tag|>``, ``<|tool_call_start|>``, a bare ``[f(x)]``, a leading
#: JSON object) can be in it, while ``a[0]``, ``x < y`` or ``<b>`` can.
ANSWER_REGEX = r"\s*[^\s{\[<](?:[^<\[]|<[^|t<\[]|\[[^T<\[])*[<\[]?"


def tool_call_grammar(tools: list[dict[str, Any]]) -> str:
    """An llguidance Lark grammar: a call of one of `tools` (as ``tool_call_constraint``) or a
    plain answer (`ANSWER_REGEX`). The call's JSON schema is embedded with llguidance's ``%json``."""
    from provender._constrain import JSON_WHITESPACE
    from provender.generation import tool_call_constraint

    # whitespace bounded as in the engine's own JSON schemas, so a rambling model still ends the call
    schema = {**tool_call_constraint(tools, "required").value, "x-guidance": {"whitespace_pattern": JSON_WHITESPACE}}
    text = json.dumps(schema, separators=(",", ":"))
    return f"start: call | answer\ncall: %json {text}\nanswer: /{ANSWER_REGEX}/\n"


def agent_constraint(tools: list[dict[str, Any]], tool_choice: Any) -> Any:
    """The `provender.generation.Constraint` for an agent's turn: ``"auto"`` a call or an answer
    (`tool_call_grammar`), ``"required"`` or ``{"type": "function", "function": {"name": ...}}``
    one call (of that tool)."""
    from provender.generation import Constraint, tool_call_constraint

    if tool_choice == "auto":
        return Constraint.grammar(tool_call_grammar(tools))
    return tool_call_constraint(tools, tool_choice)
