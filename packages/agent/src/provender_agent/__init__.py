"""provender-agent: a tool-calling agent over any provender provider that chats.

from provender_agent import Agent, tool

@tool
def add(a: int, b: int) -> int:
    '''Add two integers.'''
    return a + b

Agent("mlx:org/model", tools=[add]).run("What is 2 + 3?")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "Agent",
    "AgentResult",
    "Event",
    "MCPError",
    "MCPServer",
    "Memory",
    "Session",
    "Step",
    "Tool",
    "ToolArgumentsError",
    "ToolCall",
    "ToolError",
    "ToolRun",
    "__version__",
    "parse_reply",
    "tool",
]

_LAZY = {
    "Agent": "_agent",
    "AgentResult": "_agent",
    "Event": "_agent",
    "Step": "_agent",
    "ToolRun": "_agent",
    "Tool": "_tools",
    "ToolError": "errors",
    "ToolArgumentsError": "errors",
    "tool": "_tools",
    "ToolCall": "_parsing",
    "parse_reply": "_parsing",
    "Session": "_session",
    "Memory": "_memory",
    "MCPServer": "_mcp",
    "MCPError": "errors",
}

if TYPE_CHECKING:
    from provender_agent._agent import Agent, AgentResult, Event, Step, ToolRun
    from provender_agent._mcp import MCPServer
    from provender_agent._memory import Memory
    from provender_agent._parsing import ToolCall, parse_reply
    from provender_agent._session import Session
    from provender_agent._tools import Tool, tool
    from provender_agent.errors import MCPError, ToolArgumentsError, ToolError


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"provender_agent.{_LAZY[name]}"), name)
    raise AttributeError(name)
