"""provender._constrain: constraints compiled against a real BPE tokenizer, driven by random logits.

A random model writes garbage; under a constraint every text that ends must parse and fit. The
"model" here is a random-number generator over the tiny byte-level BPE of provender.testing (and
the same tokenizer read through transformers and mlx_lm), masked by the Matcher each step.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from provender._constrain import (
    ConstraintViolationError,
    Matcher,
    TokenizerInfo,
    compile_constraint,
    tokenizer_info,
)
from provender.errors import InvalidOptionError
from provender.generation import Constraint
from provender.testing import train_bpe, train_tokenizer

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "height": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
        "role": {"enum": ["admin", "user", "guest"]},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 10},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
        "active": {"type": "boolean"},
    },
    "required": ["name", "age", "height", "tags", "role", "address", "active"],
    "additionalProperties": False,
}
REGEX = r"[A-Z]{2}-[0-9]{3,5}(\.[a-z]+)?"
CHOICES = ["yes", "no", "not sure", 'say "maybe"\\ later', "ünïcode\n"]
GRAMMAR = 'start: "(" num ("," num)* ")"\nnum: /[0-9]{1,3}/'


@pytest.fixture(scope="module")
def bpe() -> Any:
    return train_bpe(300)


@pytest.fixture(scope="module")
def info(bpe: Any) -> TokenizerInfo:
    return tokenizer_info(bpe)


def drive(
    matcher: Matcher, info: TokenizerInfo, seed: int, width: int | None = None, steps: int = 400
) -> tuple[list[int], str]:
    """Sample (argmax of random logits, masked) until EOS or the matcher finishes: (ids, why it ended)."""
    rng = np.random.default_rng(seed)
    ids: list[int] = []
    for _ in range(steps):
        logits = rng.standard_normal(width or info.vocab_size).astype(np.float32) * 4
        matcher.mask_numpy(logits)
        token = int(np.argmax(logits))
        assert np.isfinite(logits[token]), "the mask left no token allowed"
        if token in info.eos_token_ids:
            assert matcher.is_accepting()
            return ids, "eos"
        matcher.accept(token)
        ids.append(token)
        if matcher.is_finished():
            return ids, "finished"
    return ids, "length"


def text_of(bpe: Any, ids: list[int]) -> str:
    return str(bpe.decode(ids, skip_special_tokens=False))


@pytest.mark.parametrize("seed", range(8))
def test_json_schema_output_parses_and_fits(bpe: Any, info: TokenizerInfo, seed: int) -> None:
    ids, why = drive(compile_constraint(Constraint.json_schema(PERSON), info).matcher(), info, seed)
    assert why in ("eos", "finished"), "a schema with bounded strings and arrays ends"
    value = json.loads(text_of(bpe, ids))
    jsonschema.validate(value, PERSON)


@pytest.mark.parametrize("seed", range(6))
def test_json_object_output_is_an_object(bpe: Any, info: TokenizerInfo, seed: int) -> None:
    ids, why = drive(compile_constraint(Constraint.json_object(), info).matcher(), info, seed)
    if why != "length":
        assert isinstance(json.loads(text_of(bpe, ids)), dict)


@pytest.mark.parametrize("seed", range(8))
def test_regex_output_matches(bpe: Any, info: TokenizerInfo, seed: int) -> None:
    ids, why = drive(compile_constraint(Constraint.regex(REGEX), info).matcher(), info, seed)
    assert why in ("eos", "finished")
    assert re.fullmatch(REGEX, text_of(bpe, ids))


@pytest.mark.parametrize("seed", range(8))
def test_choice_output_is_one_of_them(bpe: Any, info: TokenizerInfo, seed: int) -> None:
    ids, why = drive(compile_constraint(Constraint.choice(CHOICES), info).matcher(), info, seed)
    assert why in ("eos", "finished")
    assert text_of(bpe, ids) in CHOICES


def test_every_choice_is_reachable(bpe: Any, info: TokenizerInfo) -> None:
    """Escapes in the strings (quotes, backslashes, newlines, non-ASCII) reach the grammar as written."""
    seen = set()
    for seed in range(60):
        ids, _ = drive(compile_constraint(Constraint.choice(CHOICES), info).matcher(), info, seed)
        seen.add(text_of(bpe, ids))
    assert seen == set(CHOICES)


@pytest.mark.parametrize("seed", range(6))
def test_grammar_output_is_in_the_language(bpe: Any, info: TokenizerInfo, seed: int) -> None:
    ids, why = drive(compile_constraint(Constraint.grammar(GRAMMAR), info).matcher(), info, seed)
    if why != "length":
        assert re.fullmatch(r"\(\d{1,3}(,\d{1,3})*\)", text_of(bpe, ids))


def test_logits_wider_than_the_vocabulary(bpe: Any, info: TokenizerInfo) -> None:
    """Padding rows past the tokenizer's ids are disallowed: the sampler never picks one."""
    matcher = compile_constraint(Constraint.json_schema(PERSON), info).matcher()
    logits = np.zeros(info.vocab_size + 84, dtype=np.float32)
    logits[info.vocab_size :] = 1e9  # the model "prefers" the padding rows
    matcher.mask_numpy(logits)
    assert np.all(np.isneginf(logits[info.vocab_size :]))
    ids, why = drive(matcher, info, seed=3, width=info.vocab_size + 84)
    assert why != "length"
    jsonschema.validate(json.loads(text_of(bpe, ids)), PERSON)


def test_a_2d_row_is_masked_in_place(info: TokenizerInfo) -> None:
    matcher = compile_constraint(Constraint.choice(["yes", "no"]), info).matcher()
    logits = np.zeros((1, info.vocab_size), dtype=np.float32)
    matcher.mask_numpy(logits)
    assert 0 < int(np.isfinite(logits).sum()) < info.vocab_size


def test_eos_allowed_exactly_when_complete(bpe: Any, info: TokenizerInfo) -> None:
    matcher = compile_constraint(Constraint.regex("[0-9]{2,3}"), info).matcher()
    (digit,) = bpe.encode("7").ids
    assert not matcher.eos_allowed()
    matcher.accept(digit)
    assert not matcher.eos_allowed() and not matcher.is_accepting()
    matcher.accept(digit)
    assert matcher.eos_allowed() and matcher.is_accepting() and not matcher.is_finished()
    matcher.accept(digit)
    assert matcher.is_finished() and matcher.eos_allowed()
    assert matcher.allowed_ids() == list(info.eos_token_ids), "after a complete text only EOS"
    matcher.accept(info.eos_token_ids[0])  # EOS after the end is fine


def test_special_tokens_other_than_eos_are_never_allowed(bpe: Any, info: TokenizerInfo) -> None:
    start = bpe.token_to_id("<|im_start|>")
    matcher = compile_constraint(Constraint.json_object(), info).matcher()
    assert not matcher.allowed()[start]


def test_a_disallowed_token_raises(bpe: Any, info: TokenizerInfo) -> None:
    matcher = compile_constraint(Constraint.regex("[0-9]+"), info).matcher()
    (letter,) = bpe.encode("x").ids
    with pytest.raises(ConstraintViolationError, match=f"token {letter} does not fit the constraint"):
        matcher.accept(letter)


def test_whitespace_is_bounded(bpe: Any, info: TokenizerInfo) -> None:
    """A model that always prefers whitespace still ends a finite schema, in a bounded number of tokens."""
    schema = {
        "type": "object",
        "properties": {"a": {"type": "boolean"}, "b": {"type": "array", "items": {"enum": [1, 2]}, "maxItems": 2}},
        "required": ["a", "b"],
        "additionalProperties": False,
    }
    vocab = bpe.get_vocab()
    blank = np.zeros(info.vocab_size, dtype=np.float32)
    for tok, i in vocab.items():
        if i < info.vocab_size and bpe.decode([i]).strip() == "" and tok not in ("<|im_end|>",):
            blank[i] = 100.0  # whitespace first, always
    matcher = compile_constraint(Constraint.json_schema(schema), info).matcher()
    ids: list[int] = []
    for _ in range(500):
        logits = blank.copy()
        matcher.mask_numpy(logits)
        token = int(np.argmax(logits))
        if token in info.eos_token_ids:
            break
        matcher.accept(token)
        ids.append(token)
        if matcher.is_finished():
            break
    text = text_of(bpe, ids)
    jsonschema.validate(json.loads(text), schema)
    assert len(ids) < 9 * 16 + 30  # at most 16 gaps between this schema's tokens
    assert max(len(run) for run in re.findall(r"\s+", text)) <= 9  # one newline and at most 8 blanks


def test_compiled_once_per_constraint_and_tokenizer(bpe: Any, info: TokenizerInfo) -> None:
    first = compile_constraint(Constraint.json_schema(PERSON), info)
    assert compile_constraint(Constraint.json_schema(json.loads(json.dumps(PERSON))), info) is first
    other = tokenizer_info(train_bpe(280))
    assert other.fingerprint != info.fingerprint
    assert compile_constraint(Constraint.json_schema(PERSON), other) is not first
    a, b = first.matcher(), first.matcher()
    a.accept(bpe.encode("{").ids[0])
    assert b.allowed_ids() != a.allowed_ids(), "each matcher has its own state"


def test_tokenizer_info_is_cached_per_object(bpe: Any, info: TokenizerInfo) -> None:
    assert tokenizer_info(bpe) is info
    assert info.eos_token_ids == (bpe.token_to_id("<|im_end|>"),)
    assert tokenizer_info(bpe, eos_token_id=0).eos_token_ids == (0,)


def test_transformers_and_mlx_tokenizers_share_the_fingerprint(tmp_path: Path, bpe: Any) -> None:
    """The same tokenizer.json read by transformers and by mlx_lm compiles once for both."""
    transformers = pytest.importorskip("transformers")
    tokenizer_utils = pytest.importorskip("mlx_lm.tokenizer_utils")
    _, eos = train_tokenizer(tmp_path)
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    hf_info = tokenizer_info(hf)
    assert hf_info.eos_token_ids == (eos,)
    wrapped = tokenizer_utils.TokenizerWrapper(transformers.AutoTokenizer.from_pretrained(str(tmp_path)))
    mlx_info = tokenizer_info(wrapped)
    assert mlx_info.fingerprint == hf_info.fingerprint
    assert compile_constraint(Constraint.regex(REGEX), mlx_info) is compile_constraint(Constraint.regex(REGEX), hf_info)
    ids, why = drive(compile_constraint(Constraint.json_schema(PERSON), hf_info).matcher(), hf_info, seed=5)
    assert why != "length"
    jsonschema.validate(json.loads(hf.decode(ids)), PERSON)


def test_not_a_tokenizer() -> None:
    with pytest.raises(TypeError, match=r"cannot read a builtins\.str as a tokenizer"):
        tokenizer_info("gpt2")


@pytest.mark.parametrize(
    ("constraint", "message"),
    [
        (
            Constraint.json_schema({"type": "objekt"}),
            r"^invalid schema='\{\"type\": \"objekt\"\}': .*Invalid type: objekt\)$",
        ),
        (Constraint.json_schema({"$ref": "#/nowhere"}), r"^invalid schema=.*nowhere.*does not exist\)$"),
        (Constraint.regex("[a-"), r"^invalid regex='\[a-': expected a valid regular expression \(.*\)$"),
        (
            Constraint.grammar("start: foo"),
            r"^invalid grammar='start: foo': expected a valid Lark grammar .*unknown name.*foo",
        ),
    ],
)
def test_an_invalid_constraint_is_one_line(info: TokenizerInfo, constraint: Constraint, message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message) as raised:
        compile_constraint(constraint, info)
    assert "\n" not in str(raised.value)


def test_a_long_schema_is_quoted_short(info: TokenizerInfo) -> None:
    schema = {"type": "object", "properties": {f"field_{i}": {"type": "strin"} for i in range(50)}}
    with pytest.raises(InvalidOptionError) as raised:
        compile_constraint(Constraint.json_schema(schema), info)
    assert len(str(raised.value)) < 250 and "\n" not in str(raised.value)


def test_mask_mlx(info: TokenizerInfo, bpe: Any) -> None:
    mx = pytest.importorskip("mlx.core")
    matcher = compile_constraint(Constraint.choice(["yes", "no"]), info).matcher()
    logits = mx.zeros((1, info.vocab_size + 20))
    masked = np.array(matcher.mask_mlx(logits))
    expected = np.zeros(info.vocab_size + 20, dtype=np.float32)
    matcher.mask_numpy(expected)
    assert masked.shape == (1, info.vocab_size + 20)
    np.testing.assert_array_equal(masked[0], expected)
    assert {bpe.decode([i]) for i in np.flatnonzero(np.isfinite(expected))} <= {"y", "ye", "yes", "n", "no"}


def test_a_pydantic_model_class_is_closed(bpe: Any, info: TokenizerInfo) -> None:
    """A model class's objects take no extra keys (OpenAI's strict mode): the reply is the model's fields.

    pydantic's own schema leaves ``additionalProperties`` open, so a rambling model could add keys
    forever; `Constraint.json_schema(Model)` closes them, also inside ``$defs`` and arrays.
    """
    from pydantic import BaseModel, Field

    class Point(BaseModel):
        properties: int = Field(ge=0, le=9)  # a field named like a JSON Schema keyword stays a field

    class Shape(BaseModel):
        kind: str = Field(max_length=5)
        points: list[Point] = Field(max_length=2)

    constraint = Constraint.json_schema(Shape)
    assert constraint.value["additionalProperties"] is False
    assert constraint.value["$defs"]["Point"]["additionalProperties"] is False
    assert "additionalProperties" not in constraint.value["$defs"]["Point"]["properties"]
    for seed in range(6):
        ids, why = drive(compile_constraint(constraint, info).matcher(), info, seed)
        assert why != "length"
        value = json.loads(text_of(bpe, ids))
        assert set(value) == {"kind", "points"}
        Shape.model_validate(value)


def test_an_unimplemented_keyword_is_refused_not_ignored(info: TokenizerInfo) -> None:
    """`uniqueItems` would be a promise the mask cannot keep: refused, naming the keyword."""
    from provender._constrain import check_constraint

    for constraint in (Constraint.json_schema({"type": "array", "uniqueItems": True}),):
        with pytest.raises(InvalidOptionError, match=r'Unimplemented keys: \["uniqueItems"\]'):
            check_constraint(constraint)
        with pytest.raises(InvalidOptionError, match="uniqueItems"):
            compile_constraint(constraint, info)
