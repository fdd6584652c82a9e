"""`Agent`: a tool-calling loop over any provider that chats."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from provender import ProvenderError, Provider, get_provider
from provender_agent._parsing import ToolCall, parse_reply
from provender_agent._tools import Tool, as_tool
from provender_agent.errors import ToolArgumentsError

logger = logging.getLogger(__name__)

Approver = Callable[[ToolCall, Tool], bool]
Outcome = Literal["answered", "max_steps"]
ToolChoice = Literal["auto", "none", "required"] | dict[str, Any]


@dataclass
class ToolRun:
    """One tool call of a step: what the model asked, and what came of it."""

    call: ToolCall
    result: Any = None
    error: str | None = None
    seconds: float = 0.0
    approved: bool | None = None  # None: the tool needs no approval

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.call.id,
            "name": self.call.name,
            "arguments": self.call.arguments,
            "result": self.result,
            "error": self.error,
            "seconds": round(self.seconds, 6),
            "approved": self.approved,
        }


@dataclass
class Step:
    """One model turn: its raw text and the tool calls it made."""

    text: str
    tool_runs: list[ToolRun] = field(default_factory=list)
    parse_errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class AgentResult:
    """The outcome of `Agent.run`: ``outcome`` is ``answered`` or ``max_steps`` (never silent)."""

    text: str
    outcome: Outcome
    steps: list[Step]

    @property
    def tool_runs(self) -> list[ToolRun]:
        return [run for step in self.steps for run in step.tool_runs]

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "outcome": self.outcome,
            "steps": [
                {
                    "text": s.text,
                    "seconds": round(s.seconds, 6),
                    "parse_errors": s.parse_errors,
                    "tool_runs": [r.to_dict() for r in s.tool_runs],
                }
                for s in self.steps
            ],
        }


@dataclass
class Event:
    """What `Agent.stream` yields: ``text`` chunks, ``tool_call``, ``tool_result``, ``final``."""

    kind: Literal["text", "tool_call", "tool_result", "final"]
    text: str = ""
    call: ToolCall | None = None
    run: ToolRun | None = None
    result: AgentResult | None = None


class Agent:
    """Runs `model` (a name or a `provender.Provider`) with `tools` until it answers.

    Each step renders the conversation with the model's own chat template and tool
    schema (``provider.chat(messages, tools=...)``), finds tool calls in its reply
    (Hermes/Qwen, Llama 3 JSON, Mistral and pythonic formats), validates their arguments
    against each tool's schema, runs them (several per turn), and feeds results and
    errors back. It stops at a reply without tool calls (``outcome="answered"``) or after
    `max_steps` model turns (``outcome="max_steps"``).

    Tools marked ``needs_approval`` run only if ``approve(call, tool)`` returns True; with
    no approver they are refused. Each call has a timeout (``tool_timeout`` seconds, or the
    tool's own). Tools registered by plugins (``provender_register_tools``) are added when
    ``plugin_tools`` is True. With a `session`, the conversation is saved after every step
    and can be resumed later by id; with a `memory`, relevant earlier notes are recalled.

    When the provider applies constraints (``"constraint"`` in its ``supported_options``) and
    `constrain` is not False, each reply is held to a valid call of a declared tool (its
    arguments fitting the tool's schema) or a plain answer, so even a small model cannot write
    a malformed call (`provender_agent._constrained`). `tool_choice`: ``"auto"`` (the model
    chooses), ``"required"`` or ``{"type": "function", "function": {"name": ...}}`` (the first
    turn must call a tool, that tool; later turns are ``"auto"``, or the run could never
    answer), ``"none"`` (no tools are offered). `constrain=True` on a provider without
    constraints is an error; forcing a tool needs constraints.
    """

    def __init__(
        self,
        model: str | Provider,
        tools: Iterable[Any] = (),
        *,
        system: str | None = None,
        max_steps: int = 8,
        approve: Approver | None = None,
        tool_timeout: float = 60.0,
        plugin_tools: bool = False,
        session: Any = None,
        memory: Any = None,
        options: dict[str, Any] | None = None,
        tool_choice: ToolChoice = "auto",
        constrain: bool | None = None,
    ) -> None:
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ProvenderError(f"max_steps must be an integer >= 1, not {max_steps!r}")
        self.provider = model if isinstance(model, Provider) else get_provider(model)
        supports = "constraint" in getattr(self.provider, "supported_options", ())
        if constrain and not supports:
            raise ProvenderError(f"constrain=True, but provider {self.provider.name!r} does not apply constraints")
        self.constrain = supports if constrain is None else constrain
        if tool_choice not in ("auto", "none", "required") and not isinstance(tool_choice, dict):
            raise ProvenderError(f'tool_choice is "auto", "none", "required" or a named function, not {tool_choice!r}')
        if tool_choice not in ("auto", "none") and not self.constrain:
            raise ProvenderError(f"tool_choice={tool_choice!r} needs a provider that applies constraints")
        self.tool_choice = tool_choice
        self.tools: dict[str, Tool] = {}
        for t in [*tools, *(_plugin_tools() if plugin_tools else [])]:
            tool_ = as_tool(t)
            if tool_.name in self.tools:
                raise ProvenderError(f"two tools are named {tool_.name!r}")
            self.tools[tool_.name] = tool_
        self.system = system
        self.max_steps = max_steps
        self.approve = approve
        self.tool_timeout = tool_timeout
        self.options = dict(options or {})
        self.memory = memory
        from provender_agent._session import Session

        self.session: Session | None = Session.open(session) if isinstance(session, str) else session
        self.messages: list[dict[str, Any]] = list(self.session.messages) if self.session else []
        if system and not (self.messages and self.messages[0].get("role") == "system"):
            self.messages.insert(0, {"role": "system", "content": system})

    # -- public forms ------------------------------------------------------------------

    def run(self, prompt: str) -> AgentResult:
        """Run to a final answer (or `max_steps`); returns the text and every step."""
        result: AgentResult | None = None
        for event in self.stream(prompt):
            if event.kind == "final":
                result = event.result
        assert result is not None
        return result

    def stream(self, prompt: str) -> Iterator[Event]:
        """The run as events: text chunks as the model writes, each tool call and result, the final result."""
        if not isinstance(prompt, str) or not prompt.strip():
            raise ProvenderError("the prompt must be a non-empty string")
        self.messages.append({"role": "user", "content": self._with_memory(prompt)})
        steps: list[Step] = []
        schemas = ([t.schema() for t in self.tools.values()] or None) if self.tool_choice != "none" else None
        for turn in range(self.max_steps):
            started = time.perf_counter()
            chunks = []
            for chunk in self._chat(schemas, self.tool_choice if turn == 0 else "auto"):
                chunks.append(chunk)
                yield Event("text", text=chunk)
            text = "".join(chunks)
            parsed = parse_reply(text, schemas)
            step = Step(text=text, parse_errors=parsed.errors)
            steps.append(step)
            assistant: dict[str, Any] = {"role": "assistant", "content": text}
            if parsed.calls:
                assistant["tool_calls"] = [c.to_message() for c in parsed.calls]
            self.messages.append(assistant)
            if not parsed.calls and not parsed.errors:
                step.seconds = time.perf_counter() - started
                result = AgentResult(text=parsed.content, outcome="answered", steps=steps)
                self._finish(prompt, result)
                yield Event("final", text=result.text, result=result)
                return
            for error in parsed.errors:  # a malformed call goes back to the model, not to the user
                self.messages.append(
                    {
                        "role": "tool",
                        "name": "error",
                        "content": f"Error: {error}. Reply with a valid tool call or an answer.",
                    }
                )
            for call in parsed.calls:
                yield Event("tool_call", call=call)
                run = self._run_tool(call)
                step.tool_runs.append(run)
                self.messages.append(
                    {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": _tool_content(run)}
                )
                yield Event("tool_result", call=call, run=run)
            step.seconds = time.perf_counter() - started
            self._save()
        result = AgentResult(text=steps[-1].text if steps else "", outcome="max_steps", steps=steps)
        self._finish(prompt, result)
        yield Event("final", text=result.text, result=result)

    async def arun(self, prompt: str) -> AgentResult:
        """`run` in a worker thread, so an event loop keeps running."""
        return await asyncio.to_thread(self.run, prompt)

    async def astream(self, prompt: str) -> AsyncIterator[Event]:
        """`stream` from a worker thread, event by event."""
        from provender import iterate_in_thread

        async for event in iterate_in_thread(lambda: self.stream(prompt), name="agent"):
            yield event

    # -- internals ---------------------------------------------------------------------

    def _chat(self, schemas: list[dict[str, Any]] | None, tool_choice: ToolChoice) -> Iterator[str]:
        options = self.options
        if schemas and self.constrain and "constraint" not in options:
            from provender_agent._constrained import agent_constraint

            options = {**options, "constraint": agent_constraint(schemas, tool_choice)}
        yield from self.provider.stream_chat(self.messages, tools=schemas, **options)

    def _run_tool(self, call: ToolCall) -> ToolRun:
        run = ToolRun(call=call)
        tool_ = self.tools.get(call.name)
        if tool_ is None:
            run.error = f"there is no tool named {call.name!r} (tools: {', '.join(sorted(self.tools)) or 'none'})"
            return run
        try:
            arguments = tool_.validate(call.arguments)
        except ToolArgumentsError as exc:
            run.error = str(exc)
            return run
        if tool_.needs_approval:
            run.approved = bool(self.approve(call, tool_)) if self.approve is not None else False
            if not run.approved:
                run.error = f"the user did not approve running {call.name}"
                return run
        timeout = tool_.timeout if tool_.timeout is not None else self.tool_timeout
        started = time.perf_counter()
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"tool-{call.name}")
        future = pool.submit(asyncio.run, tool_.acall(arguments))
        try:
            run.result = _jsonable(future.result(timeout=timeout))
        except concurrent.futures.TimeoutError:
            run.error = f"{call.name} did not finish within {timeout:g} s"
        except Exception as exc:  # a tool that raises is reported to the model, never crashes the run
            run.error = f"{call.name} raised {type(exc).__name__}: {exc}"
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # a timed-out call is abandoned, not awaited
            run.seconds = time.perf_counter() - started
        return run

    def _with_memory(self, prompt: str) -> str:
        if self.memory is None:
            return prompt
        notes = self.memory.recall(prompt)
        if not notes:
            return prompt
        return "Relevant notes from earlier conversations:\n" + "\n".join(f"- {n}" for n in notes) + f"\n\n{prompt}"

    def _finish(self, prompt: str, result: AgentResult) -> None:
        self._save()
        if self.memory is not None and result.outcome == "answered":
            self.memory.remember(f"Q: {prompt}\nA: {result.text}")

    def _save(self) -> None:
        if self.session is not None:
            self.session.save(self.messages)


def _tool_content(run: ToolRun) -> str:
    if run.error is not None:
        return f"Error: {run.error}"
    return run.result if isinstance(run.result, str) else json.dumps(run.result, default=str)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except TypeError:
        return str(value)


def _plugin_tools() -> list[Any]:
    """Tools plugins offer through `provender_register_tools`."""
    from provender import get_plugin_manager

    found: list[Any] = []

    def register(tool_obj: Any, *, name: str | None = None) -> None:
        found.append(Tool.from_function(tool_obj, name=name) if name and not isinstance(tool_obj, Tool) else tool_obj)

    from provender_agent import hookspecs

    manager = get_plugin_manager()
    manager.add_hookspecs(hookspecs)  # also when the agent's own plugin is disabled
    manager.call_each("provender_register_tools", register=register)
    return found
