"""The same structured-output and logprobs requests through a real `provender serve` on llama.cpp and
transformers (random-weight models built on the spot), where those runtimes are installed: the
request means the same on every runtime. Run in their envs:
``.tox/llamacpp/bin/python -m pytest tests/serve/test_structured_runtimes.py`` (and .tox/transformers).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

openai = pytest.importorskip("openai")
pytest.importorskip("llguidance", reason="structured output needs the llguidance engine")

USER = [{"role": "user", "content": "a pet, as JSON"}]
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 9}},
            "required": ["a"],
            "additionalProperties": False,
        },
    },
}


class Pet(BaseModel):
    kind: Literal["cat", "dog"]
    age: int = Field(ge=0, le=9)
    ok: bool


def _build(runtime: str, root: Path) -> str:
    if runtime == "llamacpp":
        pytest.importorskip("llama_cpp", reason="the llama.cpp runtime (tox -e llamacpp)")
        from provender_llamacpp.testing import build_tiny_llama

        return f"llamacpp:{build_tiny_llama(root / 'tiny.gguf')}"
    pytest.importorskip("torch", reason="the transformers runtime (tox -e transformers)")
    pytest.importorskip("provender_transformers", reason="the transformers runtime (tox -e transformers)")
    from provender_transformers.testing import build_tiny_llama as build_hf

    return f"transformers:{build_hf(root / 'tiny')}"


@pytest.mark.parametrize("runtime", ["llamacpp", "transformers"])
def test_schema_tool_choice_and_logprobs_on_the_other_runtimes(start_server: Any, tmp_path: Path, runtime: str) -> None:
    model = _build(runtime, tmp_path)
    client = start_server().client()
    for i in range(2):
        try:
            answer = client.chat.completions.parse(
                model=model, messages=[{"role": "user", "content": f"pet {i}"}], response_format=Pet, max_tokens=300
            )
        except openai.LengthFinishReasonError:
            continue
        assert answer.choices[0].finish_reason == "stop" and isinstance(answer.choices[0].message.parsed, Pet)
    cut = client.chat.completions.create(
        model=model,
        messages=USER,
        max_tokens=3,
        response_format={"type": "json_schema", "json_schema": {"name": "pet", "schema": Pet.model_json_schema()}},
    )
    assert cut.choices[0].finish_reason == "length"

    called = client.chat.completions.create(
        model=model, messages=USER, tools=[ADD], tool_choice="required", max_tokens=200
    )
    if called.choices[0].finish_reason != "length":
        [call] = called.choices[0].message.tool_calls or []
        assert call.function.name == "add" and 0 <= json.loads(call.function.arguments)["a"] <= 9

    from provender import get_provider

    want = get_provider(model).complete(messages=USER, max_tokens=5, temperature=0, logprobs=True, top_logprobs=2)
    got = client.chat.completions.create(
        model=model, messages=USER, max_tokens=5, temperature=0, logprobs=True, top_logprobs=2
    )
    assert want.logprobs is not None and got.choices[0].logprobs is not None
    pairs = zip(got.choices[0].logprobs.content, want.logprobs, strict=True)
    assert all(g.token == w.token and abs(g.logprob - w.logprob) <= 1e-5 for g, w in pairs)
    legacy = client.completions.create(model=model, prompt="one", max_tokens=4, temperature=0, logprobs=2)
    assert legacy.choices[0].logprobs is not None and len(legacy.choices[0].logprobs.tokens) == 4
