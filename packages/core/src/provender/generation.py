"""The typed generation contract: what a caller may ask of a provider's generation.

Imports pydantic, so neither ``import provender`` nor ``provender --help`` loads this module.

- `GenerationOptions`: every generation option, validated once (`parse_options`) against the options
  a provider declares (``Provider.supported_options``); a bad value is an `InvalidOptionError`, an
  option the provider does not take an `UnsupportedError`, both one line naming the option.
- `Constraint` says what shape the generated text must have (a JSON schema, any JSON object, a regular
  expression, one of a few strings, or a grammar in llguidance's Lark dialect); `provender._constrain`
  compiles it against a model's tokenizer and each provider masks its own logits with it.
- `GenerationResult` (``Provider.complete``) and `Chunk` (``Provider.stream_complete``): the text, the
  finish reason the runtime gave, token counts and, when asked, `TokenLogprob` per generated token.
- `Detokenizer` and `hf_token_bytes`: a token loop's text, and each token's own bytes (logprobs'
  ``bytes``), for a provider's own loop.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Collection, Iterable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from provender.errors import InvalidOptionError, UnsupportedError

__all__ = [
    "Chunk",
    "Constraint",
    "Detokenizer",
    "GenerationOptions",
    "GenerationResult",
    "TokenLogprob",
    "collect",
    "hf_token_bytes",
    "parse_options",
    "tool_call_constraint",
]

ConstraintKind = Literal["json_schema", "json_object", "regex", "choice", "grammar"]


class Constraint(BaseModel):
    """The shape generated text must take; ``value`` depends on ``kind``.

    - ``json_schema``: a JSON Schema (dict); the text is one JSON value that fits it
    - ``json_object``: ``None``; the text is any JSON object
    - ``regex``: a regular expression (str) the whole text matches
    - ``choice``: a non-empty list of non-empty strings; the text is exactly one of them
    - ``grammar``: a grammar in llguidance's Lark dialect (str)

    Build one with the helpers: ``Constraint.json_schema(schema_or_model_class)``,
    ``Constraint.json_object()``, ``Constraint.regex(r"...")``, ``Constraint.choice([...])``,
    ``Constraint.grammar(text)``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ConstraintKind
    value: Any = None

    @model_validator(mode="after")
    def _check_value(self) -> Constraint:
        problem = _problem(self.kind, self.value)
        if problem is not None:
            raise ValueError(str(InvalidOptionError(problem[0], self.value, problem[1])))
        if self.kind == "choice":
            object.__setattr__(self, "value", list(self.value))
        return self

    def __hash__(self) -> int:
        return hash(self.key())

    @classmethod
    def _make(cls, kind: ConstraintKind, value: Any) -> Constraint:
        """Build one, raising `InvalidOptionError` (not pydantic's ValidationError) for a bad value."""
        problem = _problem(kind, value)
        if problem is not None:
            raise InvalidOptionError(problem[0], value, problem[1])
        return cls(kind=kind, value=value)

    # -- helpers ------------------------------------------------------------------------------

    @classmethod
    def json_schema(cls, schema: Any) -> Constraint:
        """A JSON value fitting ``schema``: a JSON Schema dict, or a pydantic model class.

        A model class's objects are closed (``additionalProperties: false`` where the model does
        not allow extras), as OpenAI's strict structured outputs are: the reply has the declared
        fields only, and a finite model has a finite reply.
        """
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            schema = _closed(schema.model_json_schema())
        return cls._make("json_schema", schema)

    @classmethod
    def json_object(cls) -> Constraint:
        """Any JSON object."""
        return cls._make("json_object", None)

    @classmethod
    def regex(cls, pattern: str) -> Constraint:
        """Text that the regular expression ``pattern`` matches in full."""
        return cls._make("regex", pattern)

    @classmethod
    def choice(cls, options: list[str] | tuple[str, ...]) -> Constraint:
        """Exactly one of ``options``."""
        return cls._make("choice", list(options) if isinstance(options, (list, tuple)) else options)

    @classmethod
    def grammar(cls, text: str) -> Constraint:
        """Text in the language of ``text``, a grammar in llguidance's Lark dialect."""
        return cls._make("grammar", text)

    def key(self) -> str:
        """Stable JSON naming this constraint (sorted keys): equal constraints have equal keys."""
        return json.dumps({"kind": self.kind, "value": self.value}, sort_keys=True, separators=(",", ":"))


def _closed(schema: Any) -> Any:
    """`schema` with ``additionalProperties: false`` on every object schema that does not say."""
    if isinstance(schema, list):
        return [_closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    named = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
    out = {
        k: {name: _closed(sub) for name, sub in v.items()} if k in named and isinstance(v, dict) else _closed(v)
        for k, v in schema.items()
    }
    if (out.get("type") == "object" or "properties" in out) and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _problem(kind: str, value: Any) -> tuple[str, str] | None:
    """``(option name, what a valid value is)`` when ``value`` is not one for ``kind``, else None."""
    if kind == "json_schema":
        if not isinstance(value, dict):
            return "schema", "a JSON Schema object (a dict) or a pydantic model class"
        try:
            json.dumps(value)
        except (TypeError, ValueError) as e:
            return "schema", f"a JSON-serialisable JSON Schema ({e})"
    elif kind == "json_object":
        if value is not None:
            return "json_object", "no value (None)"
    elif kind in ("regex", "grammar"):
        if not isinstance(value, str) or not value:
            return kind, f"a non-empty {kind} string"
    elif kind == "choice" and (
        not isinstance(value, (list, tuple)) or not value or not all(isinstance(c, str) and c for c in value)
    ):
        return "choice", "a non-empty list of non-empty strings"
    return None


# -- options ------------------------------------------------------------------------------------

FinishReason = Literal["stop", "length", "tool_calls"]
ToolChoice = Literal["auto", "none", "required"] | dict[str, Any]
Int = Annotated[int, Field(strict=True)]
Float = Annotated[float, Field(strict=True)]

#: the constraint's keyword shortcuts: ``schema=`` (a JSON Schema or a pydantic model class), ``choice=``...
SHORTCUTS: dict[str, Callable[[Any], Constraint]] = {
    "schema": Constraint.json_schema,
    "choice": Constraint.choice,
    "regex": Constraint.regex,
    "grammar": Constraint.grammar,
    "json_object": lambda on: Constraint.json_object() if on is True else _bad("json_object", on, "true"),
}
MAX_TOP_LOGPROBS = 20
EXPECTED = {  # what a valid value is, said in the error
    "max_tokens": "an integer >= 1",
    "temperature": "a number >= 0 (0 is greedy)",
    "top_p": "a number in (0, 1]",
    "top_k": "an integer >= 0 (0: no limit)",
    "min_p": "a number in [0, 1]",
    "seed": "an integer >= 0",
    "stop": "a string or a list of non-empty strings",
    "repeat_penalty": "a number > 0 (1: none)",
    "system_prompt": "a string",
    "constraint": "a provender.generation.Constraint",
    "tool_choice": "'auto', 'none', 'required' or {'type': 'function', 'function': {'name': ...}}",
    "logprobs": "true or false",
    "top_logprobs": f"an integer in [0, {MAX_TOP_LOGPROBS}]",
}


def _bad(option: str, value: Any, expected: str) -> Any:
    raise InvalidOptionError(option, value, expected)


class GenerationOptions(BaseModel):
    """What a caller may ask of a generation; None (or absent) means the provider's default.

    ``max_tokens`` (providers default to 256), ``temperature`` (0, the default, is greedy), ``top_p``,
    ``top_k``, ``min_p``, ``seed``, ``stop`` (strings that end the text, cut before them),
    ``repeat_penalty``, ``system_prompt`` (a system message for a plain prompt), ``constraint`` (the
    shape of the text, `Constraint`), ``tool_choice`` (with tools: ``"required"`` or a named function
    constrains the reply to a call), ``logprobs`` (each generated token's log-probability, from the
    model's own distribution before sampling parameters and constraints) and ``top_logprobs`` (that
    many alternatives per token, at most 20; implies ``logprobs``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: Annotated[Int, Field(ge=1)] | None = None
    temperature: Annotated[Float, Field(ge=0)] | None = None
    top_p: Annotated[Float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[Int, Field(ge=0)] | None = None
    min_p: Annotated[Float, Field(ge=0, le=1)] | None = None
    seed: Annotated[Int, Field(ge=0)] | None = None
    stop: list[Annotated[str, Field(strict=True, min_length=1)]] | None = None
    repeat_penalty: Annotated[Float, Field(gt=0)] | None = None
    system_prompt: Annotated[str, Field(strict=True)] | None = None
    constraint: Constraint | None = None
    tool_choice: ToolChoice | None = None
    logprobs: Annotated[bool, Field(strict=True)] = False
    top_logprobs: Annotated[Int, Field(ge=0, le=MAX_TOP_LOGPROBS)] = 0

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else list(value) if isinstance(value, tuple) else value

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice(cls, value: Any) -> Any:
        if isinstance(value, dict) and not _named_tool(value):
            raise ValueError("not a named function")
        return value

    @model_validator(mode="after")
    def _top_implies_logprobs(self) -> GenerationOptions:
        if self.top_logprobs and not self.logprobs:
            object.__setattr__(self, "logprobs", True)
        return self

    def set(self) -> dict[str, Any]:
        """The options given (not None, not their default), by name."""
        return self.model_dump(exclude_defaults=True, exclude={"constraint"}) | (
            {"constraint": self.constraint} if self.constraint is not None else {}
        )

    def forced_tool(self) -> str | None:
        """The tool a call is forced to: its name, ``"*"`` for any (``"required"``), else None."""
        if self.tool_choice == "required":
            return "*"
        return _named_tool(self.tool_choice) if isinstance(self.tool_choice, dict) else None


def _named_tool(choice: dict[str, Any]) -> str | None:
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else None
    return name if choice.get("type") == "function" and isinstance(name, str) and name else None


def parse_options(
    options: dict[str, Any], supported: Collection[str], *, provider: str = "provider"
) -> GenerationOptions:
    """`options` (keyword arguments of a generation call) as `GenerationOptions`, validated once.

    An option not in `supported` (and not None) raises `UnsupportedError` naming it and the provider;
    a bad value raises `InvalidOptionError` naming the option and what a valid value is. The
    constraint's shortcuts (``schema=``, ``choice=``, ``regex=``, ``grammar=``, ``json_object=True``)
    count as ``constraint``.
    """
    if isinstance(options, GenerationOptions):
        options = options.set()
    given = {k: v for k, v in options.items() if v is not None}
    shortcuts = [k for k in given if k in SHORTCUTS]
    if len(shortcuts) + ("constraint" in given) > 1:
        names = ", ".join(sorted([*shortcuts, *(["constraint"] if "constraint" in given else [])]))
        raise InvalidOptionError("constraint", names, "one of constraint, schema, choice, regex, grammar")
    unknown = sorted(k for k in given if (k if k not in SHORTCUTS else "constraint") not in supported)
    if unknown:
        known = ", ".join(sorted(supported)) or "none"
        raise UnsupportedError(provider, f"option {', '.join(map(repr, unknown))}", f"its options are {known}")
    for key in shortcuts:
        given["constraint"] = SHORTCUTS[key](given.pop(key))
    try:
        return GenerationOptions(**given)
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]) if error["loc"] else "options"
        raise InvalidOptionError(name, given.get(name), EXPECTED.get(name, "a valid value")) from None


# -- results ------------------------------------------------------------------------------------


class TokenLogprob(BaseModel):
    """One generated token: its text, id, log-probability, and the `top` alternatives (best first).

    `bytes` are the token's own bytes as the tokenizer defines them (OpenAI's ``bytes``): a token
    that holds part of a UTF-8 character has a `token` text that cannot show it (empty or U+FFFD),
    and its bytes joined with its neighbours' make the character. `top_bytes` are the bytes of
    each `top` alternative, in the same order."""

    model_config = ConfigDict(frozen=True)

    token: str
    token_id: int
    logprob: float
    top: list[tuple[str, float]] = []
    bytes: list[int] = []
    top_bytes: list[list[int]] = []


class GenerationResult(BaseModel):
    """A whole generation: the text, why it ended (from the runtime: ``"length"`` when ``max_tokens``
    cut it, ``"stop"`` at the end of sequence, a stop string or a completed constraint,
    ``"tool_calls"`` when a forced tool call completed), token counts, and logprobs when asked.
    ``cached_tokens`` are the prompt tokens read from a prompt cache instead of processed (part of
    ``prompt_tokens``)."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    logprobs: list[TokenLogprob] | None = None


class Chunk(BaseModel):
    """A piece of a streamed generation; the last one carries ``finish_reason`` and the token counts
    (``cached_tokens``: how many of the prompt's came from a prompt cache, when the runtime says)."""

    text: str
    logprobs: list[TokenLogprob] | None = None
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None


def collect(chunks: Iterable[Chunk]) -> GenerationResult:
    """The `GenerationResult` a stream of chunks adds up to."""
    texts: list[str] = []
    logprobs: list[TokenLogprob] | None = None
    last = Chunk(text="", finish_reason="stop")
    for chunk in chunks:
        texts.append(chunk.text)
        if chunk.logprobs is not None:
            logprobs = (logprobs or []) + chunk.logprobs
        last = chunk
    return GenerationResult(
        text="".join(texts),
        finish_reason=last.finish_reason or "stop",
        prompt_tokens=last.prompt_tokens or 0,
        completion_tokens=last.completion_tokens or 0,
        cached_tokens=last.cached_tokens or 0,  # 0 also where the runtime keeps no prompt cache
        logprobs=logprobs,
    )


def tool_call_constraint(tools: list[dict[str, Any]], tool_choice: Any = "required") -> Constraint:
    """A JSON schema for one call of a tool: ``{"name": NAME, "arguments": {...}}``, the arguments
    fitting that tool's ``parameters``. ``tool_choice``: ``"required"`` (any of `tools`) or
    ``{"type": "function", "function": {"name": NAME}}``. The text the model then writes is that
    JSON object alone (no chat-template markup around it)."""
    choice = parse_options({"tool_choice": tool_choice}, {"tool_choice"}).forced_tool()
    if choice is None:
        raise InvalidOptionError("tool_choice", tool_choice, "'required' or a named function")
    functions = [t.get("function", t) for t in tools if isinstance(t, dict)]
    named = [f for f in functions if isinstance(f, dict) and (choice == "*" or f.get("name") == choice)]
    if not named:
        raise InvalidOptionError("tool_choice", tool_choice, f"a tool among {[f.get('name') for f in functions]}")
    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"const": f["name"]},
                "arguments": f.get("parameters") or {"type": "object", "properties": {}},
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for f in named
    ]
    return Constraint.json_schema(calls[0] if len(calls) == 1 else {"anyOf": calls})


class Detokenizer:
    """Text of a growing list of token ids, piece by piece, from a `decode` of a list of ids (for a
    provider's token loop).

    Each step decodes a window, not the whole list: the ids of the last piece sent (whose text
    anchors the new piece) and those after them, so a reply costs time linear in its length. The
    anchor keeps the pieces equal to one decode of all the ids where a tokenizer renders a token
    by its neighbours (a leading space dropped at the start of a decode, WordPiece's ``##``, spaces
    cleaned up around punctuation). A piece is held back while the text ends in an incomplete
    character (U+FFFD), or adds nothing yet (a special token skipped, bytes of a character dropped)."""

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self.decode = decode
        self.ids: list[int] = []
        self._start = 0  # the window: ids[_start:]; those before it are sent
        self._anchor = 0  # ids[_start:_anchor] are sent too: their text is the window's known head

    def add(self, token: int) -> str:
        """Add a token; the new text it completes (may be empty)."""
        self.ids.append(token)
        return self._piece(final=False)

    def flush(self) -> str:
        """The text still held back, at the end."""
        return self._piece(final=True)

    def _piece(self, *, final: bool) -> str:
        head = self.decode(self.ids[self._start : self._anchor]) if self._anchor > self._start else ""
        text = self.decode(self.ids[self._start :])
        if len(text) <= len(head) or not text.startswith(head) or (not final and text.endswith("\ufffd")):
            return ""
        self._start, self._anchor = self._anchor, len(self.ids)
        return text[len(head) :]


# -- a Hugging Face tokenizer's token bytes --------------------------------------------------------


@functools.cache
def _gpt2_byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the printable character that stands for each byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def hf_token_bytes(tokenizer: Any) -> Callable[[int], bytes]:
    """The bytes of one token of a Hugging Face tokenizer (or mlx-lm's wrapper around one).

    A byte-level BPE piece (GPT-2, Llama 3, Qwen) maps back through GPT-2's byte alphabet; a
    SentencePiece byte-fallback piece (``<0xE2>``) is its byte and ``▁`` a space; any other token
    is its decoded text. Text alone cannot carry a token that is part of a UTF-8 character."""
    import json
    import re

    hf = tokenizer  # mlx_lm's TokenizerWrapper passes these attributes on to the HF tokenizer it holds
    backend = getattr(hf, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    described = json.dumps(json.loads(decoder.__getstate__())) if decoder is not None else ""
    byte_level = '"ByteLevel"' in described
    alphabet = _gpt2_byte_decoder() if byte_level else {}
    fallback = re.compile(r"<0x([0-9A-Fa-f]{2})>")

    def token_bytes(token: int) -> bytes:
        piece = hf.convert_ids_to_tokens(int(token))
        if isinstance(piece, str):
            if byte_level and all(c in alphabet for c in piece):
                return bytes(alphabet[c] for c in piece)
            if match := fallback.fullmatch(piece):
                return bytes([int(match[1], 16)])
            if not byte_level and "▁" in piece:
                return piece.replace("▁", " ").encode("utf-8")
        return str(hf.decode([int(token)], skip_special_tokens=False)).encode("utf-8", "surrogatepass")

    return token_bytes
