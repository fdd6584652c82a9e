"""Tools: Python functions with a JSON schema built from their type hints and docstring.

``@tool`` (or ``Tool.from_function``) turns a typed function into a tool the model can
call; pydantic builds the schema and validates the arguments the model sends. Tools
also come from plugins (``provender_register_tools``) and from MCP servers (``_mcp``).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from provender_agent.errors import ToolArgumentsError, ToolError


@dataclass
class Tool:
    """A callable the agent offers the model: name, description, JSON schema, and the function.

    ``needs_approval``: the agent asks its approval callback before each call (for tools
    that change things). ``timeout``: seconds a call may take (None: the agent's default).
    """

    name: str
    description: str
    parameters: dict[str, Any]
    function: Callable[..., Any]
    needs_approval: bool = False
    timeout: float | None = None
    validator: type[BaseModel] | None = field(default=None, repr=False)

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        needs_approval: bool = False,
        timeout: float | None = None,
    ) -> Tool:
        if not callable(fn):
            raise ToolError(f"{fn!r} is not callable")
        tool_name = name or fn.__name__
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}", tool_name):
            raise ToolError(f"invalid tool name {tool_name!r}")
        doc = inspect.getdoc(fn) or ""
        summary, params_doc = _parse_docstring(doc)
        try:
            hints = get_type_hints(fn)
        except Exception as exc:
            raise ToolError(f"cannot read the type hints of {tool_name}: {exc}") from None
        fields: dict[str, Any] = {}
        for pname, param in inspect.signature(fn).parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            annotation = hints.get(pname, Any)
            default = ... if param.default is param.empty else param.default
            from pydantic import Field

            fields[pname] = (annotation, Field(default, description=params_doc.get(pname)))
        model = create_model(f"{tool_name}_arguments", __config__=ConfigDict(extra="forbid"), **fields)
        schema = model.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        return cls(
            name=tool_name,
            description=description or summary or tool_name,
            parameters=schema,
            function=fn,
            needs_approval=needs_approval,
            timeout=timeout,
            validator=model,
        )

    def schema(self) -> dict[str, Any]:
        """The OpenAI-style tool definition chat templates render."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def validate(self, arguments: Any) -> dict[str, Any]:
        """Check the model's arguments against the schema; returns them, coerced."""
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                raise ToolArgumentsError(f"arguments of {self.name} are not valid JSON: {exc.msg}") from None
        if not isinstance(arguments, dict):
            raise ToolArgumentsError(f"arguments of {self.name} must be an object, got {type(arguments).__name__}")
        if self.validator is None:
            return arguments
        try:
            parsed = self.validator.model_validate(arguments)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()
            )
            raise ToolArgumentsError(f"invalid arguments for {self.name}: {problems}") from None
        return {k: getattr(parsed, k) for k in parsed.model_fields_set | set(arguments)}

    async def acall(self, arguments: dict[str, Any]) -> Any:
        """Run the tool (a coroutine function is awaited, a plain one runs in a worker thread)."""
        if inspect.iscoroutinefunction(self.function):
            result: Awaitable[Any] = self.function(**arguments)
            return await result
        return await asyncio.to_thread(self.function, **arguments)


def tool(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    needs_approval: bool = False,
    timeout: float | None = None,
) -> Any:
    """Decorator: ``@tool`` or ``@tool(needs_approval=True, timeout=10)`` makes a `Tool`."""

    def wrap(f: Callable[..., Any]) -> Tool:
        return Tool.from_function(f, name=name, description=description, needs_approval=needs_approval, timeout=timeout)

    return wrap(fn) if fn is not None else wrap


def as_tool(obj: Any) -> Tool:
    """A `Tool` from a Tool or a typed function."""
    return obj if isinstance(obj, Tool) else Tool.from_function(obj)


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Summary and per-parameter descriptions from Google, NumPy or Sphinx style docstrings."""
    lines = doc.strip().splitlines()
    summary_lines = []
    for line in lines:
        if (
            not line.strip()
            or re.match(r"^(Args|Arguments|Parameters|Returns|Raises):?\s*$", line.strip())
            or line.strip().startswith(":param")
        ):
            break
        summary_lines.append(line.strip())
    params: dict[str, str] = {}
    for match in re.finditer(r"^\s*:param\s+(?:\w+\s+)?(\w+):\s*(.+)$", doc, re.M):
        params[match.group(1)] = match.group(2).strip()
    section = re.search(r"^(?:Args|Arguments|Parameters):?\s*\n(.*?)(?:\n\s*\n|\Z)", doc, re.M | re.S)
    if section:
        for match in re.finditer(r"^\s+(\w+)(?:\s*\([^)]*\))?\s*:\s*(.+)$", section.group(1), re.M):
            params.setdefault(match.group(1), match.group(2).strip())
    return " ".join(summary_lines), params
