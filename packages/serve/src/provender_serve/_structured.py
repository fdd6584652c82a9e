"""OpenAI's ``response_format`` and ``tool_choice`` as a `provender.generation.Constraint`.

- ``response_format`` ``{"type": "json_schema", "json_schema": {"schema": ...}}`` (``strict``
  true or not: the reply is held to the schema either way) and ``{"type": "json_object"}``
  (any JSON object); ``{"type": "text"}`` constrains nothing;
- ``tool_choice`` ``"required"`` or ``{"type": "function", "function": {"name": ...}}``: the
  reply is one call ``{"name": ..., "arguments": {...}}`` of an offered tool (of that tool),
  its arguments held to the tool's ``parameters`` schema
  (`provender.generation.tool_call_constraint`), which the server's tool-call parsing
  (the agent's Llama 3 JSON parser) reads back as OpenAI ``tool_calls``;
  ``"none"``: no tools are offered; ``"auto"`` (or unset): the model chooses, unconstrained.

The provider applies the constraint; one that cannot says so (400 naming the option).
"""

from __future__ import annotations

from typing import Any

from provender_serve._schemas import ChatRequest
from provender_serve.errors import APIError


def constraint(param: str, schema: Any = None, tools: list[dict[str, Any]] | None = None) -> Any:
    """A `provender.generation.Constraint`: one call of `tools` as ``tool_choice`` asks (`tools`
    given), JSON fitting `schema`, or (neither) any JSON object. A 400 naming `param` for a
    schema or tool choice it refuses, or when this provender has no structured output."""
    from provender.errors import InvalidOptionError

    try:
        from provender.generation import Constraint, tool_call_constraint
    except ImportError:  # a provender from before structured output
        raise APIError(400, f"{param}: this server's provender has no structured output", "unsupported") from None
    try:
        if tools is not None:
            return tool_call_constraint(tools, schema)
        return Constraint.json_object() if schema is None else Constraint.json_schema(schema)
    except InvalidOptionError as exc:
        raise APIError(400, f"{param}: {exc}", "invalid_value", param) from None


def chat_constraint(req: ChatRequest, tools: list[dict[str, Any]] | None) -> dict[str, Any]:
    """``{"constraint": Constraint}`` for what `req` asks of the reply's shape; ``{}`` for free text."""
    choice = req.tool_choice
    forced = choice == "required" or isinstance(choice, dict)
    fmt = req.response_format
    shaped = fmt is not None and fmt.type != "text"
    if forced and not tools:
        raise APIError(
            400, f"tool_choice: {choice!r} needs tools, and the request offers none", "invalid_value", "tool_choice"
        )
    if forced and shaped:
        raise APIError(
            400,
            "response_format: a json reply and tool_choice 'required' or a named function cannot both shape the reply",
            "invalid_value",
            "response_format",
        )
    if forced:
        return {"constraint": constraint("tool_choice", choice, tools)}
    if fmt is None or fmt.type == "text":
        if fmt is not None and fmt.json_schema is not None:
            raise APIError(
                400, "response_format.json_schema: only with type 'json_schema'", "invalid_value", "response_format"
            )
        return {}
    if fmt.type == "json_object":
        if fmt.json_schema is not None:
            raise APIError(
                400, "response_format.json_schema: only with type 'json_schema'", "invalid_value", "response_format"
            )
        return {"constraint": constraint("response_format", None)}
    if fmt.json_schema is None:
        raise APIError(
            400,
            "response_format.json_schema: required with type 'json_schema'",
            "missing_field",
            "response_format.json_schema",
        )
    # OpenAI's schema is optional: without one, any JSON object
    return {"constraint": constraint("response_format.json_schema.schema", fmt.json_schema.schema_)}
