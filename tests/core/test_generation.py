"""provender.generation: typed options validated once, results with the runtime's finish reason, logprobs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from provender import InvalidOptionError, LoadedModel, PooledProvider, Provider, UnsupportedError
from provender._decoding import Decoding, Detokenizer
from provender.generation import (
    Chunk,
    Constraint,
    GenerationOptions,
    GenerationResult,
    parse_options,
    tool_call_constraint,
)

ALL = GenerationOptions.model_fields.keys()


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("max_tokens", 0, "an integer >= 1"),
        ("max_tokens", True, "an integer >= 1"),
        ("max_tokens", "5", "an integer >= 1"),
        ("temperature", -1.0, "a number >= 0"),
        ("top_p", 0.0, "(0, 1]"),
        ("top_p", 1.5, "(0, 1]"),
        ("top_k", -1, "an integer >= 0"),
        ("min_p", 2, "[0, 1]"),
        ("seed", -3, "an integer >= 0"),
        ("stop", [""], "non-empty strings"),
        ("stop", 3, "non-empty strings"),
        ("repeat_penalty", 0, "> 0"),
        ("system_prompt", 3, "a string"),
        ("logprobs", "yes", "true or false"),
        ("top_logprobs", 21, "[0, 20]"),
        ("tool_choice", "always", "'required'"),
        ("tool_choice", {"type": "function"}, "'required'"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_option(option: str, value: object, expected: str) -> None:
    with pytest.raises(InvalidOptionError) as info:
        parse_options({option: value}, ALL, provider="p")
    message = str(info.value)
    assert message.startswith(f"invalid {option}=") and expected in message and "\n" not in message


def test_an_option_the_provider_does_not_take_names_it_and_the_provider() -> None:
    with pytest.raises(UnsupportedError, match=r"provider 'p' does not support option 'logprobs'.*max_tokens"):
        parse_options({"logprobs": True}, {"max_tokens"}, provider="p")
    with pytest.raises(UnsupportedError, match="option 'schema'"):
        parse_options({"schema": {"type": "object"}}, {"max_tokens"}, provider="p")
    assert parse_options({"logprobs": None, "seed": None}, {"max_tokens"}).set() == {}  # None: not given


def test_values_and_shortcuts() -> None:
    class Point(BaseModel):
        x: int
        y: int

    opts = parse_options({"stop": "END", "max_tokens": 3, "temperature": 1, "schema": Point}, ALL)
    assert opts.stop == ["END"] and opts.temperature == 1.0 and opts.max_tokens == 3
    assert opts.constraint == Constraint.json_schema(Point)
    assert parse_options({"choice": ["a", "b"]}, ALL).constraint == Constraint.choice(["a", "b"])
    assert parse_options({"regex": "[0-9]+"}, ALL).constraint == Constraint.regex("[0-9]+")
    assert parse_options({"json_object": True}, ALL).constraint == Constraint.json_object()
    assert parse_options({"top_logprobs": 3}, ALL).logprobs  # top_logprobs implies logprobs
    with pytest.raises(InvalidOptionError, match="constraint"):
        parse_options({"choice": ["a"], "regex": "a"}, ALL)
    with pytest.raises(InvalidOptionError, match="choice"):
        parse_options({"choice": []}, ALL)
    assert parse_options({"tool_choice": {"type": "function", "function": {"name": "f"}}}, ALL).forced_tool() == "f"
    assert parse_options({"tool_choice": "required"}, ALL).forced_tool() == "*"
    assert parse_options({"tool_choice": "auto"}, ALL).forced_tool() is None


def test_tool_call_constraint_fits_the_tools_parameters() -> None:
    import jsonschema

    weather = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    tools = [
        {"type": "function", "function": {"name": "weather", "parameters": weather}},
        {"type": "function", "function": {"name": "time"}},
    ]
    one = tool_call_constraint(tools, {"type": "function", "function": {"name": "weather"}})
    jsonschema.validate({"name": "weather", "arguments": {"city": "Oslo"}}, one.value)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "time", "arguments": {}}, one.value)
    both = tool_call_constraint(tools, "required")
    jsonschema.validate({"name": "time", "arguments": {}}, both.value)
    with pytest.raises(InvalidOptionError, match="tool_choice"):
        tool_call_constraint(tools, {"type": "function", "function": {"name": "nope"}})


class Logits:
    """A made-up runtime: fixed logits per step, the Decoding's numpy hook as its logits processor."""

    rows = np.array([[1.0, 3.0, 2.0, -1.0], [0.5, 0.0, 4.0, 1.0], [2.0, 2.5, 0.0, 0.0]], dtype=np.float32)

    def run(self, decoding: Decoding, n: int) -> list[Chunk]:
        out, history = [], [9]
        for step in range(n):
            row = decoding.numpy_hook(np.array(history), self.rows[step % 3].copy())
            token = int(np.argmax(row))
            history.append(token)
            if (chunk := decoding.feed(token, "abcd"[token])) is not None:
                out.append(chunk)
        return [*out, decoding.finish("length")]


def test_logprobs_are_the_log_softmax_of_the_raw_logits_and_greedy_picks_the_top() -> None:
    opts = parse_options({"logprobs": True, "top_logprobs": 2, "max_tokens": 3}, ALL)
    decoding = Decoding(opts, token_text=lambda i: "abcd"[i], prompt_tokens=1)
    chunks = Logits().run(decoding, 3)
    logprobs = [lp for c in chunks for lp in (c.logprobs or [])]
    assert [lp.token for lp in logprobs] == ["b", "c", "b"]
    for lp, row in zip(logprobs, Logits.rows, strict=True):
        expected = row - np.log(np.exp(row.astype(np.float64)).sum())
        assert abs(lp.logprob - expected[lp.token_id]) < 1e-6
        assert lp.top[0] == (lp.token, lp.logprob) and len(lp.top) == 2 and lp.top[0][1] >= lp.top[1][1]
    assert chunks[-1].finish_reason == "length" and chunks[-1].completion_tokens == 3


def test_stop_strings_end_a_decoding_with_stop() -> None:
    opts = parse_options({"stop": ["cb"]}, ALL)
    decoding = Decoding(opts, token_text=str)
    chunks = [decoding.feed(t, p) for t, p in [(1, "b"), (2, "c"), (1, "b")]]
    assert decoding.stopped and chunks[-1] is not None and chunks[-1].finish_reason == "stop"
    assert "".join(c.text for c in chunks if c) == "b"


def test_detokenizer_holds_back_an_incomplete_character() -> None:
    data = "é!".encode()
    detok = Detokenizer(lambda ids: bytes(ids).decode("utf-8", errors="replace"))
    assert [detok.add(b) for b in data] == ["", "é", "!"]


def _tokenizers() -> dict[str, Any]:
    """Real `tokenizers` of three families, trained on the spot: byte-level BPE (GPT-2's),
    SentencePiece-style Metaspace (a leading space dropped at the start of a decode), WordPiece
    (``##`` continuations, spaces cleaned up around punctuation)."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

    from provender.testing import CORPUS, train_bpe

    metaspace = tokenizers.Tokenizer(models.BPE(unk_token="<unk>"))
    metaspace.pre_tokenizer, metaspace.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    metaspace.train_from_iterator(
        CORPUS.splitlines(), trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>"], show_progress=False)
    )
    wordpiece = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer()
    wordpiece.pre_tokenizer, wordpiece.decoder = pre_tokenizers.BertPreTokenizer(), decoders.WordPiece()
    wordpiece.train_from_iterator(
        CORPUS.splitlines(),
        trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[UNK]", "[SEP]"], show_progress=False),
    )
    return {"byte-level": train_bpe(), "metaspace": metaspace, "wordpiece": wordpiece}


TEXTS = [
    "The quick brown fox jumps over the lazy dog, doesn't it ? Yes .",
    "naïve café: 東京 🎉 — done!",
    "  two  spaces and\nnew lines\n\n",
]


@pytest.mark.parametrize("family", ["byte-level", "metaspace", "wordpiece"])
def test_detokenizer_pieces_join_to_one_decode_of_all_ids(family: str) -> None:
    tokenizer = _tokenizers()[family]
    special = tokenizer.token_to_id("<|im_end|>") or tokenizer.token_to_id("<s>") or tokenizer.token_to_id("[SEP]")
    for text in TEXTS:
        ids = tokenizer.encode(text).ids
        ids = [*ids[:5], special, *ids[5:]]  # a special token mid-reply, skipped in the text
        whole = tokenizer.decode(ids, skip_special_tokens=True)
        detok = Detokenizer(lambda window: str(tokenizer.decode(window, skip_special_tokens=True)))
        pieces = [detok.add(i) for i in ids]
        assert "".join(pieces) + detok.flush() == whole, (family, text)
        assert "\ufffd" not in "".join(pieces)


def test_detokenizer_decodes_a_window_not_the_whole_reply() -> None:
    """A 3,000-token reply: every step decodes the last piece's ids and the new ones, so the ids
    decoded in all grow with the reply's length, not with its square (which was 4.5 million)."""
    tokenizer = _tokenizers()["byte-level"]
    ids = tokenizer.encode(" ".join(TEXTS) * 60).ids[:3000]
    decoded = 0

    def decode(window: list[int]) -> str:
        nonlocal decoded
        decoded += len(window)
        return str(tokenizer.decode(window))

    detok = Detokenizer(decode)
    text = "".join(detok.add(i) for i in ids) + detok.flush()
    assert len(ids) == 3000 and text == tokenizer.decode(ids)
    assert decoded < 10 * len(ids), decoded


class Legacy(Provider):
    """A provider written before the typed contract: text methods only."""

    name = "legacy"

    def generate(self, prompt: str, **options: Any) -> str:
        return prompt.upper()[: options.get("max_tokens") or None]

    def stream(self, prompt: str, **options: Any) -> Iterator[str]:
        yield from self.generate(prompt, **options)


def test_a_text_only_provider_gets_complete_from_its_text_methods() -> None:
    result = Legacy("m").complete("hi there", max_tokens=4)
    assert result == GenerationResult(text="HI T", finish_reason="stop")
    with pytest.raises(UnsupportedError, match="option 'logprobs'"):
        Legacy("m").complete("hi", logprobs=True)


def test_echo_reports_the_finish_reason_and_counts() -> None:
    from provender import get_provider

    echo = get_provider("echo:upper")
    cut = echo.complete("one two three", max_tokens=2)
    assert (cut.text, cut.finish_reason, cut.prompt_tokens, cut.completion_tokens) == ("ONE TWO", "length", 3, 2)
    whole = echo.complete(messages=[{"role": "user", "content": "one two"}])
    assert (whole.text, whole.finish_reason) == ("ONE TWO", "stop")
    stopped = list(echo.stream_complete("one two three", stop="TWO"))
    assert "".join(c.text for c in stopped) == "ONE " and stopped[-1].finish_reason == "stop"
    with pytest.raises(UnsupportedError, match="'echo' does not support option 'logprobs'"):
        echo.complete("x", logprobs=True)
    with pytest.raises(InvalidOptionError, match="max_tokens"):
        echo.stream_complete("x", max_tokens=0)  # checked when called, not when iterated


def test_import_provender_and_help_stay_free_of_pydantic() -> None:
    for code in ("import provender", "import provender.cli, provender._provider, provender._pooled"):
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
        )
        assert "pydantic" not in out.stderr, code


class Rendered(PooledProvider):
    """Generates the text it was asked to continue, one character per token: shows what the base rendered."""

    name = "rendered"

    def resolve(self) -> tuple[Path, None]:
        return Path("/nonexistent-model-dir"), None

    def check_files(self) -> None:
        """No weights to check."""

    def load_files(self, path: Path) -> LoadedModel:
        return LoadedModel(self.model, "no weights", None)

    def template(self, item: LoadedModel, messages: list[dict[str, Any]], tools: Any = None) -> str:
        return json.dumps({"messages": [m["content"] for m in messages], "tools": [t["name"] for t in tools or []]})

    def decode(self, item: LoadedModel, request: Any) -> Iterator[Chunk]:
        decoding = self.decoding(request, prompt_tokens=0, token_text=str)
        for i, char in enumerate(request.text[: decoding.max_tokens]):
            if (chunk := decoding.feed(i, char)) is not None:
                yield chunk
        yield decoding.finish("length" if len(request.text) > decoding.max_tokens else "stop")


def test_the_base_renders_prompts_conversations_and_tool_choice_none() -> None:
    provider = Rendered("m")
    assert provider.generate("plain") == "plain"
    as_chat = json.loads(provider.generate("hi", system_prompt="sys"))
    assert as_chat == {"messages": ["sys", "hi"], "tools": []}
    messages = [{"role": "user", "content": "q"}]
    tools = [{"name": "f"}]
    assert json.loads(provider.chat(messages, tools))["tools"] == ["f"]
    assert json.loads(provider.chat(messages, tools, tool_choice="auto"))["tools"] == ["f"]
    assert json.loads(provider.chat(messages, tools, tool_choice="none"))["tools"] == []  # no tools offered
    assert provider.complete("abcdef", max_tokens=4).finish_reason == "length"
    with pytest.raises(UnsupportedError, match="option 'top_k'"):
        provider.generate("x", top_k=3)
    with pytest.raises(InvalidOptionError, match="messages"):
        provider.chat("not a list")  # type: ignore[arg-type]
