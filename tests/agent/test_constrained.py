"""The agent's tool calls held to the declared tools by a constraint, on a real random-weight MLX
model that, unconstrained, writes nothing but ``<tool_call>`` (a malformed call every turn)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provender import ProvenderError
from provender_agent import Agent, parse_reply, tool

pytest.importorskip("mlx_lm", reason="the MLX tests need mlx-lm (tox installs it)")
pytest.importorskip("llguidance", reason="constraints need the llguidance engine (tox installs it)")


@tool
def add(a: int, b: bool) -> str:
    """Add one, or not.

    Args:
        a: a number
        b: whether to add
    """
    return str(a + 1 if b else a)


@pytest.fixture(scope="module")
def caller(tmp_path_factory: pytest.TempPathFactory) -> str:
    from provender_mlx.testing import build_tiny_llama

    return f"mlx:{build_tiny_llama(tmp_path_factory.mktemp('models') / 'caller', constant_token='<tool_call>')}"


def test_unconstrained_the_model_writes_malformed_calls(caller: str) -> None:
    result = Agent(caller, tools=[add], max_steps=2, constrain=False, options={"max_tokens": 8}).run("add")
    assert result.outcome == "max_steps" and not result.tool_runs
    assert all(step.parse_errors for step in result.steps)  # what the constraint prevents


def test_constrained_every_call_is_valid(caller: str) -> None:
    agent = Agent(caller, tools=[add], max_steps=3, options={"max_tokens": 300})
    assert agent.constrain  # the MLX provider applies constraints: on by default
    result = agent.run("add")
    assert all(not step.parse_errors for step in result.steps), [s.parse_errors for s in result.steps]
    for step in result.steps:
        for run in step.tool_runs:
            assert run.error is None, run.error  # the arguments fitted the tool's schema
    if result.outcome == "answered":  # an answer is plain text, never a call attempt
        assert not parse_reply(result.text).calls


def test_a_required_tool_is_called_with_valid_arguments(caller: str) -> None:
    named = {"type": "function", "function": {"name": "add"}}
    for choice in ("required", named):
        result = Agent(caller, tools=[add], max_steps=2, tool_choice=choice, options={"max_tokens": 300}).run("go")
        first = result.steps[0]
        assert not first.parse_errors, first.text
        [run] = first.tool_runs
        assert run.call.name == "add" and run.error is None
        assert isinstance(run.call.arguments["a"], int) and isinstance(run.call.arguments["b"], bool)
        assert json.loads(first.text)["name"] == "add"


def test_forcing_needs_a_provider_with_constraints(tmp_path: Path) -> None:
    with pytest.raises(ProvenderError, match="constraint"):
        Agent("echo:upper", tools=[add], tool_choice="required")
    with pytest.raises(ProvenderError, match="constrain=True"):
        Agent("echo:upper", tools=[add], constrain=True)
    assert Agent("echo:upper", tools=[add]).constrain is False  # no constraints there: as before


def test_a_plain_answer_is_never_taken_for_a_call() -> None:
    """What the grammar lets through as an answer: parse_reply finds no call and no attempt in it."""
    import random
    import re

    from provender_agent._constrained import ANSWER_REGEX

    answer = re.compile(ANSWER_REGEX + r"\Z")
    for fine in ["The sum is 5.", "  a[0] is x < y", "a <b>bold</b>", "x [1, 2]", "end<"]:
        assert answer.match(fine), fine
    for call in ["<tool_call>{}", "x <tool_call>", "[TOOL_CALLS][]", "a <|python_tag|>", "[add(a=1)]", '{"name": 1}']:
        assert not answer.match(call), call
    rng = random.Random(0)
    alphabet = list('<[{|tT ab(){}"n:,]>_')
    for _ in range(20000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 14)))
        if answer.match(text):
            parsed = parse_reply(text)
            assert not parsed.calls and not parsed.errors, text
