"""A real MCP server over stdio, for the agent tests (the `mcp` package's server side)."""

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("provender-test-tools")


@server.tool()
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@server.tool()
def fail(reason: str) -> str:
    """Always fails (with an error the client is meant to see)."""
    raise ToolError(f"failed on purpose: {reason}")


if __name__ == "__main__":
    server.run()
