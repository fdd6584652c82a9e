"""Tools from MCP servers over stdio, through the official `mcp` package.

    with MCPServer("python my_server.py") as server:
        Agent(model, tools=server.tools).run("...")

The client session lives on an event loop in a background thread for as long as the
server is open; each tool call is sent to it and waited for.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from provender_agent._tools import Tool
from provender_agent.errors import MCPError, ToolArgumentsError

MCP_HINT = 'pip install "provender-agent[mcp]"'
STDERR_TAIL_LINES = 8

# Runs the server as a child and writes its exit status to a file when it ends: the mcp
# package spawns and reaps the process itself and does not expose its exit status.
# The child is in the same process group, so the mcp package's tree kill reaches it.
_SHIM = """\
import subprocess, sys
try:
    code = subprocess.call(sys.argv[2:])
except OSError as exc:
    sys.stderr.write(f"cannot start {sys.argv[2]!r}: {exc.strerror}\\n")
    code = 127
with open(sys.argv[1], "w") as f:
    f.write(str(code))
sys.exit(code if code >= 0 else 128 - code)
"""


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
        self._workdir: tempfile.TemporaryDirectory[str] | None = None

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
        self._workdir = tempfile.TemporaryDirectory(prefix="provender-mcp-")
        self._thread = threading.Thread(target=self._serve, name="provender-mcp", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.startup_timeout):
            self.close()
            raise MCPError(f"MCP server {self.name!r} did not start within {self.startup_timeout:g} s")
        if self._error is not None:
            message = self.describe_failure(self._error, "failed to start")
            self.close()
            raise MCPError(message) from None
        return self.tools

    @property
    def name(self) -> str:
        """The server's command line, as it names the server in messages."""
        return shlex.join(self.argv)

    def _status_file(self) -> Path:
        assert self._workdir is not None
        return Path(self._workdir.name) / "status"

    def _stderr_file(self) -> Path:
        assert self._workdir is not None
        return Path(self._workdir.name) / "stderr"

    def exit_status(self, wait: float = 0.0) -> int | None:
        """The server process's exit status (negative: killed by that signal); None while it runs."""
        if self._workdir is None:
            return None
        deadline = time.monotonic() + wait
        while True:
            try:
                return int(self._status_file().read_text())
            except (OSError, ValueError):
                if time.monotonic() >= deadline:
                    return None
                time.sleep(0.02)

    def stderr_tail(self, lines: int = STDERR_TAIL_LINES) -> list[str]:
        """The last `lines` non-blank lines the server wrote to stderr."""
        if self._workdir is None:
            return []
        try:
            with open(self._stderr_file(), "rb") as f:
                f.seek(max(0, os.fstat(f.fileno()).st_size - 16384))
                text = f.read().decode("utf-8", errors="replace")
        except OSError:
            return []
        return [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]

    def describe_failure(self, exc: BaseException | None, what: str) -> str:
        """A message naming the server, how it ended (exit status) and the tail of its stderr."""
        status = self.exit_status(wait=2.0)
        if status is None:
            how = what + (f": {_leaf(exc)}" if exc is not None else "")
        elif status < 0:
            try:
                sig = signal.Signals(-status).name
            except ValueError:
                sig = f"signal {-status}"
            how = f"{what}: it was killed by {sig}"
        else:
            how = f"{what}: it exited with status {status}"
        tail = self.stderr_tail()
        message = f"MCP server {self.name!r} {how}"
        if tail:
            message += "; the end of its stderr:\n" + "\n".join(f"    {line}" for line in tail)
        elif status is not None:
            message += " (it wrote nothing to stderr)"
        return message

    def _serve(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        from mcp import ClientSession, StdioServerParameters, stdio_client

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            args = ["-c", _SHIM, str(self._status_file()), *self.argv]
            params = StdioServerParameters(command=sys.executable, args=args, env=self.env)
            errlog = open(self._stderr_file(), "w", encoding="utf-8")  # noqa: SIM115  (closed below)
            try:
                await self._session_loop(stdio_client(params, errlog=errlog), ClientSession)
            finally:
                errlog.close()
        except BaseException as exc:  # reported by start(), or logged by close()
            self._error = exc
            self._ready.set()

    async def _session_loop(self, transport: Any, client_session: Any) -> None:
        async with transport as (read, write), client_session(read, write) as session:
            await session.initialize()
            listed = await session.list_tools()
            self._session = session
            self.tools = [self._tool(t) for t in listed.tools]
            self._ready.set()
            assert self._stop is not None
            await self._stop.wait()

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
        try:
            result = future.result()
        except Exception as exc:  # the server died or broke the protocol: say which, and how
            raise MCPError(self.describe_failure(exc, f"failed during {name}")) from exc
        texts = [getattr(c, "text", "") for c in result.content]
        text = "\n".join(t for t in texts if t)
        if getattr(result, "is_error", False) or getattr(result, "isError", False):
            raise MCPError(text or f"{name} failed")
        structured = getattr(result, "structured_content", None) or getattr(result, "structuredContent", None)
        if isinstance(structured, dict) and set(structured) == {"result"}:
            return structured["result"]
        return structured if structured is not None else text

    def close(self) -> None:
        """Stop the server and the session's thread. Idempotent."""
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self._stop.set)
            except RuntimeError:  # the loop already ended (the server crashed)
                pass
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None


def _leaf(exc: BaseException | None) -> str:
    """The innermost cause of `exc`, unwrapping exception groups (anyio's task groups)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if exc is None:
        return "unknown error"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
