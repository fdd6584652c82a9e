"""provender-agent's exceptions (``from provender_agent.errors import ToolError``; each is also
importable from ``provender_agent``). All derive from `provender.ProvenderError`::

    ProvenderError
    ├── ToolError            a tool could not be defined or registered
    ├── ToolArgumentsError   (also ValueError) a model called a tool with arguments that do not fit
    └── MCPError             an MCP server could not be started or answered with an error
"""

from __future__ import annotations

from provender.errors import ProvenderError

__all__ = ["MCPError", "ToolArgumentsError", "ToolError"]


class ToolError(ProvenderError):
    """A tool could not be defined or registered."""


class ToolArgumentsError(ProvenderError, ValueError):
    """The model called a tool with arguments that do not fit its schema."""


class MCPError(ProvenderError):
    """An MCP server could not be started or answered with an error."""
