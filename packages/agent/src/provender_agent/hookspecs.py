"""The hook provender-agent adds to provender's (through ``provender_addhooks``).

A plugin offers tools to agents by implementing ``provender_register_tools``; it needs
no import from this package, only ``@provender.hookimpl`` on a function of that name.
"""

from __future__ import annotations

from typing import Any, Protocol

from provender.hookspecs import hookspec


class RegisterTool(Protocol):
    def __call__(self, tool: Any, *, name: str | None = None) -> None: ...


@hookspec
def provender_register_tools(register: RegisterTool) -> None:
    """Offer tools to the agent library (``provender-agent``).

    Called when an agent collects tools from plugins. Call ``register(tool)`` with a
    plain typed Python function (its docstring and type hints become the schema) or
    an object the agent library accepts as a tool. Returns nothing.
    """
