"""`provender chat`: an interactive (or one-shot) agent session in the terminal."""

from __future__ import annotations

import importlib
import os
import sys
from contextlib import ExitStack
from typing import Any

import click


def load_tool(spec: str) -> Any:
    """``module:function`` (the module found from the current directory too) -> the function."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise click.BadParameter(f"{spec!r}: use module:function", param_hint="--tool")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise click.BadParameter(f"{spec!r}: {exc}", param_hint="--tool") from None
    return obj


@click.command()
@click.option("-m", "--model", required=True, help="A model that chats: PROVIDER:MODEL or a cached model's name.")
@click.option("--tool", "tool_specs", multiple=True, help="A tool, as module:function (repeatable).")
@click.option(
    "--mcp", "mcp_commands", multiple=True, help='An MCP server to take tools from: "command args" (repeatable).'
)
@click.option(
    "--plugin-tools/--no-plugin-tools", default=True, show_default=True, help="Offer tools that plugins register."
)
@click.option("--once", "once", help="Answer this prompt and exit (for scripts).")
@click.option("--session", "session_id", help="Save the conversation under this id, or resume it.")
@click.option("-s", "--system", help="System prompt.")
@click.option("--max-steps", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--max-tokens", type=click.IntRange(min=1), help="Most tokens per model turn.")
@click.option("--temperature", type=float, help="Sampling temperature (0 = greedy).")
@click.option("-y", "--yes", is_flag=True, help="Approve every tool that asks for approval.")
@click.option("--json", "as_json", is_flag=True, help="With --once: print the whole result as JSON.")
@click.option("--no-server", is_flag=True, help="Run in this process even when `provender serve` is running.")
def chat(
    model: str,
    tool_specs: tuple[str, ...],
    mcp_commands: tuple[str, ...],
    plugin_tools: bool,
    once: str | None,
    session_id: str | None,
    system: str | None,
    max_steps: int,
    max_tokens: int | None,
    temperature: float | None,
    yes: bool,
    as_json: bool,
    no_server: bool,
) -> None:
    """Chat with MODEL, letting it call tools; streamed, tool calls shown as they happen."""
    import json  # here, not at the top: `provender --help` imports this module

    from provender_agent import Agent, MCPServer, Session

    tools = [load_tool(spec) for spec in tool_specs]
    options = {k: v for k, v in {"max_tokens": max_tokens, "temperature": temperature}.items() if v is not None}
    interactive = once is None
    if interactive and not sys.stdin.isatty():
        raise click.UsageError("no terminal to chat on: use --once PROMPT")

    def approve(call: Any, tool: Any) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            return False
        return click.confirm(f"  allow {call.name}({json.dumps(call.arguments)})?", default=False, err=True)

    with ExitStack() as stack:
        for command in mcp_commands:
            tools.extend(stack.enter_context(MCPServer(command)).tools)
        session = Session.open(session_id) if session_id else None
        if session is not None and interactive:
            state = f"resumed ({len(session.messages)} messages)" if session.exists else "new"
            click.echo(f"session {session.id}: {state}", err=True)
        from provender._client import provider_for  # a running `provender serve` keeps the model loaded

        agent = Agent(
            provider_for(model, use_server=not no_server),
            tools,
            system=system,
            max_steps=max_steps,
            approve=approve,
            session=session,
            plugin_tools=plugin_tools,
            options=options,
        )
        if not interactive:
            assert once is not None
            result = _turn(agent, once, show=not as_json)
            if as_json:
                click.echo(json.dumps(result.to_dict(), indent=2, default=str))
            if result.outcome != "answered":
                sys.exit(1)
            return
        click.echo(f"Chatting with {model} ({len(agent.tools)} tools). Empty line or Ctrl-D to quit.", err=True)
        while True:
            try:
                prompt = input("> ")
            except (EOFError, KeyboardInterrupt):
                click.echo(err=True)
                return
            if not prompt.strip():
                return
            _turn(agent, prompt, show=True)


def _turn(agent: Any, prompt: str, *, show: bool) -> Any:
    """One user turn: stream text, show tool calls and results, return the AgentResult."""
    import json  # here: `provender --help` imports this module and has no use for json

    result = None
    for event in agent.stream(prompt):
        if event.kind == "text" and show:
            click.echo(event.text, nl=False)
        elif event.kind == "tool_call" and show:
            click.secho(
                f"\n  -> {event.call.name}({json.dumps(event.call.arguments, default=str)})", fg="cyan", err=True
            )
        elif event.kind == "tool_result" and show:
            run = event.run
            shown = f"error: {run.error}" if run.error else json.dumps(run.result, default=str)[:200]
            click.secho(f"  <- {shown}", fg="red" if run.error else "green", err=True)
        elif event.kind == "final":
            result = event.result
    if show:
        click.echo()
        if result is not None and result.outcome == "max_steps":
            click.secho(f"(stopped after {agent.max_steps} steps without a final answer)", fg="yellow", err=True)
    return result
