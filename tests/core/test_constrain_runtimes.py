"""provender._constrain on the runtimes' own types: torch tensors, and a llama_cpp.Llama's vocabulary.

Runs in the envs that have those runtimes (tox -e transformers: torch; tox -e llamacpp: llama.cpp);
skipped elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pytest
from pydantic import BaseModel, Field

from provender._constrain import Matcher, TokenizerInfo, compile_constraint, tokenizer_info
from provender.generation import Constraint


class Address(BaseModel):
    city: str = Field(max_length=10)
    zip: str = Field(pattern=r"^[0-9]{5}$")


class Person(BaseModel):
    name: str = Field(max_length=12)
    age: int = Field(ge=0, le=150)
    tags: list[Annotated[str, Field(max_length=6)]] = Field(max_length=3)
    role: Literal["admin", "user"]
    address: Address


def drive(matcher: Matcher, info: TokenizerInfo, width: int, seed: int, mask: Any) -> list[int]:
    """Argmax over random logits of `width`, masked by ``mask(matcher, logits)``, until done."""
    rng = np.random.default_rng(seed)
    ids: list[int] = []
    for _ in range(600):
        logits = rng.standard_normal(width).astype(np.float32) * 4
        token = mask(matcher, logits)
        if token in info.eos_token_ids:
            break
        matcher.accept(token)
        ids.append(token)
        if matcher.is_finished():
            break
    else:
        raise AssertionError("a schema with bounded strings and arrays ends")
    return ids


def test_mask_torch_matches_mask_numpy(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from provender.testing import train_tokenizer

    train_tokenizer(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    info = tokenizer_info(hf)
    compiled = compile_constraint(Constraint.json_schema(Person), info)
    width = info.vocab_size + 64  # a model's embedding rows padded past the tokenizer

    def by_torch(matcher: Matcher, logits: np.ndarray) -> int:
        row = torch.from_numpy(logits.copy()).reshape(1, -1)
        matcher.mask_torch(row)
        expected = logits.copy()
        matcher.mask_numpy(expected)
        np.testing.assert_array_equal(row.numpy()[0], expected)
        assert torch.isneginf(row[0, info.vocab_size :]).all()
        return int(row.argmax())

    for seed in range(4):
        ids = drive(compiled.matcher(), info, width, seed, by_torch)
        Person.model_validate(json.loads(hf.decode(ids)))


def test_llama_cpp_vocabulary(tmp_path: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    from provender_llamacpp.testing import build_tiny_llama

    llm = llama_cpp.Llama(str(build_tiny_llama(tmp_path / "tiny.gguf")), vocab_only=True, verbose=False)
    info = tokenizer_info(llm)
    assert tokenizer_info(llm) is info
    assert info.vocab_size == llm.n_vocab()
    assert llm.token_eos() in info.eos_token_ids
    compiled = compile_constraint(Constraint.json_schema(Person), info)

    def by_numpy(matcher: Matcher, logits: np.ndarray) -> int:
        matcher.mask_numpy(logits)
        return int(np.argmax(logits))

    for seed in range(4):
        ids = drive(compiled.matcher(), info, info.vocab_size, seed, by_numpy)
        Person.model_validate(json.loads(llm.detokenize(ids).decode()))
    choice = compile_constraint(Constraint.choice(["alpha", "beta gamma"]), info)
    for seed in range(4):
        ids = drive(choice.matcher(), info, info.vocab_size, seed, by_numpy)
        assert llm.detokenize(ids).decode() in ("alpha", "beta gamma")
