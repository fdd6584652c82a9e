"""An MCP server that crashes: at start (`start`), or inside its one tool (`tool`).

Test fixture for the messages of a crashing server: they must name it, its exit status
and the tail of its stderr.
"""

import os
import sys

if sys.argv[1:] == ["start"]:
    sys.stderr.write("loading settings\nerror: MY_API_TOKEN is not set\n")
    sys.exit(3)

from mcp.server.mcpserver import MCPServer

server = MCPServer("provender-test-crash")


@server.tool()
def explode(x: int) -> int:
    """Crashes the server process."""
    sys.stderr.write(f"explode({x}): out of cheese\n")
    sys.stderr.flush()
    os._exit(7)


if __name__ == "__main__":
    server.run()
