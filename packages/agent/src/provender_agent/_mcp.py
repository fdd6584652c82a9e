"""Tools from MCP servers over stdio, through the official `mcp` package.

    with MCPServer("python my_server.py") as server:
        Agent(model, tools=server.tools).run("...")

The client session lives on an event loop in a background thread for as long as the
server is open; each tool call is sent to it and waited for.
"""

from __future__ import annotations

import asyncio
import shlex
import threading
from typing import Any

from provender import ProvenderError
from provender_agent._tools import Tool, ToolArgumentsError

MCP_HINT = 'pip install "provender-agent[mcp]"'


class MCPError(ProvenderError):
    """An MCP server could not be started or answered with an error."""


class MCPServer:
    """A running MCP server (a subprocess spoken to over stdio) and its tools."""

    def __init__(
        self, command: str | list[str], *, env: dict[str, str] | None = None, startup_timeout: float = 30.0
    ) -> None:
        self.argv = shlex.split(command) if isinstance(command, str) else list(command)
        if not self.argv:
            raise MCPError("an MCP server command cannot be empty")
        self.env = env
        self.startup_timeout = startup_timeout
        self.tools: list[Tool] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: Any = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> MCPServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> list[Tool]:
        try:
            import mcp  # noqa: F401
        except ImportError:
            raise ImportError(f"MCP tools need the mcp package: {MCP_HINT}") from None
        self._thread = threading.Thread(target=self._serve, name="provender-mcp", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.startup_timeout):
            raise MCPError(f"MCP server {shlex.join(self.argv)!r} did not start within {self.startup_timeout:g} s")
        if self._error is not None:
            raise MCPError(f"MCP server {shlex.join(self.argv)!r} failed: {self._error}") from None
        return self.tools

    def _serve(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        from mcp import ClientSession, StdioServerParameters, stdio_client

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            params = StdioServerParameters(command=self.argv[0], args=self.argv[1:], env=self.env)
            async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                listed = await session.list_tools()
                self._session = session
                self.tools = [self._tool(t) for t in listed.tools]
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:  # reported by start(), or logged by close()
            self._error = exc
            self._ready.set()

    def _tool(self, spec: Any) -> Tool:
        name = spec.name
        schema = dict(getattr(spec, "input_schema", None) or getattr(spec, "inputSchema", None) or {})
        required = list(schema.get("required", []))

        def call(**arguments: Any) -> Any:
            missing = [r for r in required if r not in arguments]
            if missing:
                raise ToolArgumentsError(f"{name} needs {', '.join(missing)}")
            return self._call(name, arguments)

        return Tool(name=name, description=spec.description or name, parameters=schema, function=call)

    def _call(self, name: str, arguments: dict[str, Any]) -> Any:
        if self._loop is None or self._session is None:
            raise MCPError("the MCP server is not running")
        future = asyncio.run_coroutine_threadsafe(self._session.call_tool(name, arguments), self._loop)
        result = future.result()
        texts = [getattr(c, "text", "") for c in result.content]
        text = "\n".join(t for t in texts if t)
        if getattr(result, "is_error", False) or getattr(result, "isError", False):
            raise MCPError(text or f"{name} failed")
        structured = getattr(result, "structured_content", None) or getattr(result, "structuredContent", None)
        if isinstance(structured, dict) and set(structured) == {"result"}:
            return structured["result"]
        return structured if structured is not None else text

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread = None
