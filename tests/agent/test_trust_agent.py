"""Issue 9 for the agent: a crashing MCP server is named with its exit status and stderr
(item 10), and `chat` reports bad settings and bad model names with the documented exit
codes (items 4 and 9). Real processes, a real MCP server, the real plugin manager."""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path

import pytest

from helpers import run_cli
from provender_agent import Agent, MCPServer
from provender_agent.errors import MCPError

pytest.importorskip("mcp", reason="the MCP tests need the mcp package (provender-agent[mcp])")
CRASH = Path(__file__).parent / "mcp_crash_server.py"
SCRIPTED = "scripted" in {ep.name for ep in metadata.entry_points(group="provender")}
QUIET = {"PROVENDER_QUIET_PLUGIN_ERRORS": "1"}


def test_server_that_crashes_at_start_is_named_with_status_and_stderr() -> None:
    with pytest.raises(MCPError) as caught:
        MCPServer([sys.executable, str(CRASH), "start"]).start()
    message = str(caught.value)
    assert f"MCP server '{sys.executable} {CRASH} start'" in message
    assert "exited with status 3" in message
    assert "error: MY_API_TOKEN is not set" in message
    assert "TaskGroup" not in message and "sub-exception" not in message


def test_server_command_that_does_not_exist() -> None:
    with pytest.raises(MCPError) as caught:
        MCPServer("no-such-mcp-server-xyz --flag").start()
    message = str(caught.value)
    assert "'no-such-mcp-server-xyz --flag' failed to start: it exited with status 127" in message
    assert "cannot start 'no-such-mcp-server-xyz': No such file or directory" in message


def test_server_that_crashes_during_a_call() -> None:
    with MCPServer([sys.executable, str(CRASH)]) as server:
        [explode] = server.tools
        with pytest.raises(MCPError) as caught:
            explode.function(x=1)
    message = str(caught.value)
    assert "failed during explode" in message and "exited with status 7" in message
    assert "explode(1): out of cheese" in message


@pytest.mark.skipif(not SCRIPTED, reason="install tests/plugins/provender-scripted (tox does)")
def test_agent_reports_the_crash_to_the_model_and_chat_names_it(tmp_path: Path) -> None:
    script = tmp_path / "script.json"
    script.write_text(
        json.dumps({"replies": ['<tool_call>{"name": "explode", "arguments": {"x": 2}}</tool_call>', "ok"]})
    )
    with MCPServer([sys.executable, str(CRASH)]) as server:
        result = Agent(f"scripted:{script}", tools=server.tools).run("go")
    [run] = result.tool_runs
    assert "exited with status 7" in str(run.error) and "out of cheese" in str(run.error)
    out = run_cli(
        "chat", "-m", f"scripted:{script}", "--mcp", f"{sys.executable} {CRASH} start", "--once", "hi", env=QUIET
    )
    assert out.returncode == 1, out
    assert "exited with status 3" in out.stderr and "MY_API_TOKEN" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("model", "env", "code", "needle"),
    [
        ("me/my-model", {"PROVENDER_MEMORY__KEEP_ALIVE": "abc"}, 2, "memory.keep_alive"),
        ("", {}, 2, "invalid model name ''"),
        ("./no-such-model", {}, 2, "no such file or directory"),
        ("org/not-cached", {}, 1, "not in the cache"),
    ],
)
def test_chat_exit_codes(tmp_path: Path, model: str, env: dict[str, str], code: int, needle: str) -> None:
    full = {**QUIET, "PROVENDER_CACHE__DIR": str(tmp_path / "c"), **env}
    out = run_cli("chat", "-m", model, "--once", "hi", "--no-plugin-tools", env=full)
    assert out.returncode == code, out
    errors = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and needle in errors[0] and "Traceback" not in out.stderr


def test_session_list_dates_are_iso_and_an_unreadable_session_is_shown(tmp_path: Path) -> None:
    import datetime

    from provender_agent import Session

    Session.open("good", root=tmp_path).save([{"role": "user", "content": "hi"}])
    (tmp_path / "torn.json").write_text('{"messages": [')
    rows = {r["id"]: r for r in Session.list(root=tmp_path)}
    assert rows["good"]["messages"] == 1 and datetime.datetime.fromisoformat(rows["good"]["updated"]).tzinfo
    assert rows["torn"]["messages"] is None and "cannot be read" in rows["torn"]["error"]  # listed, not hidden
