"""Constrained decoding: a `Constraint` compiled against a model's tokenizer, applied as a token mask.

The engine is llguidance (chosen by measurement: docs/structured-output.md). It is imported only
here, and only when a constraint is compiled, so ``import provender`` never loads it; it comes with
``pip install 'provender[structured]'``.

- `tokenizer_info(tokenizer)` reads a transformers tokenizer, an mlx_lm ``TokenizerWrapper``, a
  ``tokenizers.Tokenizer`` or a ``llama_cpp.Llama`` into a `TokenizerInfo` (cached per object);
- `compile_constraint(constraint, info)` compiles once (LRU cache keyed by the constraint's key and
  the tokenizer's fingerprint) into a `CompiledConstraint`;
- `CompiledConstraint.matcher()` gives one `Matcher` per generated sequence, which masks each step's
  logits (numpy, torch or MLX) to the tokens the constraint allows and is told each chosen token.

JSON whitespace is bounded (one space, or a newline and at most 8 spaces or tabs, between tokens:
llama.cpp's rule with 8 for its 20), so a schema whose strings, arrays and numbers are bounded has a finite output and
ends even on a model that rambles. The tokenizer's end-of-sequence token is allowed exactly when the
text so far is complete; other special tokens are never allowed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from provender.errors import ConstraintViolationError, InvalidOptionError

if TYPE_CHECKING:
    import llguidance
    import numpy as np
    from numpy.typing import NDArray

    from provender.generation import Constraint

__all__ = [
    "CompiledConstraint",
    "ConstraintViolationError",
    "Matcher",
    "TokenizerInfo",
    "check_constraint",
    "compile_constraint",
    "tokenizer_info",
]

#: the JSON whitespace allowed between tokens: llama.cpp's json-schema-to-grammar rule, with at most 8
#: blanks after a newline (its 20 let a small model spend 21 tokens a gap on a byte-level vocabulary)
JSON_WHITESPACE = r"(?:\x20|\n[\x20\t]{0,8})?"
#: how many compiled constraints the cache keeps (each holds its grammar's parser tables)
CACHE_SIZE = 64
#: how much of an offending schema/regex/grammar an error message quotes
_QUOTE = 80
#: names of the end-of-sequence token in a bare `tokenizers.Tokenizer`, most specific first
_EOS_NAMES = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>")


def _engine() -> Any:
    try:
        import llguidance
    except ImportError:  # pragma: no cover - the extra is declared where it is needed
        from provender.errors import ConfigError

        raise ConfigError(
            "structured output needs the llguidance engine: pip install 'provender[structured]'"
        ) from None
    return llguidance


# -- tokenizers -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TokenizerInfo:
    """A tokenizer as the engine needs it: its token table, end-of-sequence ids and a fingerprint.

    ``fingerprint`` is equal for two tokenizers with the same tokens and end-of-sequence ids, so a
    constraint compiled for one serves the other (the cache's key).
    """

    ll: llguidance.LLTokenizer
    vocab_size: int
    eos_token_ids: tuple[int, ...]
    fingerprint: str


_info_by_object: weakref.WeakKeyDictionary[Any, TokenizerInfo] = weakref.WeakKeyDictionary()
_info_by_id: dict[int, tuple[Any, TokenizerInfo]] = {}  # objects that take no weak reference
_info_lock = threading.Lock()


def tokenizer_info(tokenizer: Any, *, eos_token_id: int | list[int] | None = None) -> TokenizerInfo:
    """The `TokenizerInfo` of a transformers fast tokenizer, an mlx_lm ``TokenizerWrapper``, a
    ``tokenizers.Tokenizer`` or a ``llama_cpp.Llama`` (cached per object).

    ``eos_token_id`` overrides the end-of-sequence token(s); a bare ``tokenizers.Tokenizer`` has
    none of its own, so without it the first of ``<|im_end|>``, ``<|endoftext|>``, ``</s>``... it has.
    """
    with _info_lock:
        cached = _cached_info(tokenizer)
    if cached is not None and eos_token_id is None:
        return cached
    info = _build_info(tokenizer, eos_token_id)
    if eos_token_id is None:
        with _info_lock:
            try:
                _info_by_object[tokenizer] = info
            except TypeError:  # no weak reference to it: keep it alive with its info (few tokenizers)
                _info_by_id[id(tokenizer)] = (tokenizer, info)
    return info


def _cached_info(tokenizer: Any) -> TokenizerInfo | None:
    try:
        found = _info_by_object.get(tokenizer)
    except TypeError:
        found = None
    if found is None and id(tokenizer) in _info_by_id:
        obj, info = _info_by_id[id(tokenizer)]
        found = info if obj is tokenizer else None
    return found


def _eos_list(eos: int | list[int] | tuple[int, ...] | set[int] | None) -> list[int]:
    if eos is None:
        return []
    if isinstance(eos, int):
        return [eos]
    return sorted(int(e) for e in eos)


def _build_info(tokenizer: Any, eos_override: int | list[int] | None) -> TokenizerInfo:
    llg = _engine()
    kind = type(tokenizer).__module__.split(".")[0]
    if kind == "llama_cpp":
        return _llama_cpp_info(tokenizer, eos_override)
    if hasattr(tokenizer, "_tokenizer") and hasattr(tokenizer, "eos_token_ids") and kind == "mlx_lm":
        eos = _eos_list(eos_override) or _eos_list(tokenizer.eos_token_ids)
        return _hf_info(tokenizer._tokenizer, eos)
    if hasattr(tokenizer, "backend_tokenizer"):  # a transformers fast tokenizer
        eos = _eos_list(eos_override) or _eos_list(tokenizer.eos_token_id)
        return _hf_info(tokenizer, eos)
    if kind == "tokenizers" and hasattr(tokenizer, "to_str"):
        eos = _eos_list(eos_override)
        if not eos:
            found = [tokenizer.token_to_id(n) for n in _EOS_NAMES]
            eos = [next(i for i in found if i is not None)] if any(i is not None for i in found) else []
        return _from_json(llg, tokenizer.to_str(), eos)
    raise TypeError(
        f"cannot read a {type(tokenizer).__module__}.{type(tokenizer).__qualname__} as a tokenizer: expected a "
        "transformers fast tokenizer, an mlx_lm TokenizerWrapper, a tokenizers.Tokenizer or a llama_cpp.Llama"
    )


def _hf_info(hf: Any, eos: list[int]) -> TokenizerInfo:
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise TypeError(f"{type(hf).__qualname__} is a slow tokenizer: structured output needs a fast one")
    from copy import copy

    backend = copy(backend)  # as llguidance.hf does: no padding or truncation in the engine's copy
    backend.no_padding()
    backend.no_truncation()
    return _from_json(_engine(), backend.to_str(), eos)


def _from_json(llg: Any, tokenizer_json: str, eos: list[int]) -> TokenizerInfo:
    ll = llg.LLTokenizer(tokenizer_json, eos_token=eos or None)
    digest = hashlib.sha256(tokenizer_json.encode()).hexdigest()
    return _info(ll, f"hf:{digest}")


def _llama_cpp_info(llm: Any, eos_override: int | list[int] | None) -> TokenizerInfo:
    import llama_cpp
    from llguidance.llamacpp import lltokenizer_from_vocab

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    eos = _eos_list(eos_override)
    if not eos:
        eos = sorted({int(llama_cpp.llama_vocab_eos(vocab)), int(llama_cpp.llama_vocab_eot(vocab))} - {-1})
    ll = lltokenizer_from_vocab(vocab, eos_token=eos or None)
    digest = hashlib.sha256()
    for i in range(ll.vocab_size):  # the token table as the engine read it, specials marked
        digest.update(ll.decode_bytes([i]) + (b"\xff" if ll.is_special_token(i) else b"") + b"\x00")
    # The engine's tokenizer points into this Llama's native vocabulary, freed with it: what is
    # compiled for one Llama is never handed to another (a reload of the same GGUF included), and
    # is forgotten when the Llama goes.
    info = _info(ll, f"gguf:{digest.hexdigest()}:{next(_llama_serial)}")
    weakref.finalize(llm, _forget_compiled, info.fingerprint)
    return info


_llama_serial = itertools.count(1)


def _forget_compiled(fingerprint: str) -> None:
    with _compiled_lock:
        for key in [k for k in _compiled if k[1] == fingerprint]:
            del _compiled[key]


def _info(ll: Any, base: str) -> TokenizerInfo:
    eos = tuple(sorted(int(e) for e in ll.eos_tokens))
    return TokenizerInfo(ll, int(ll.vocab_size), eos, f"{base}:{ll.vocab_size}:{','.join(map(str, eos))}")


# -- compiling ---------------------------------------------------------------------------------


@dataclass(eq=False)
class CompiledConstraint:
    """A constraint compiled for one tokenizer: hands out a fresh `Matcher` per sequence."""

    constraint: Constraint
    info: TokenizerInfo
    grammar: str  # llguidance's grammar (JSON) the constraint compiled to
    _template: Any = field(repr=False)  # an LLMatcher at the start, deep-copied per sequence

    def matcher(self) -> Matcher:
        """A matcher at the start of the constrained text, for one generated sequence."""
        return Matcher(self._template.deep_copy(), self.info)


_compiled: OrderedDict[tuple[str, str], CompiledConstraint] = OrderedDict()
_compiled_lock = threading.Lock()


def compile_constraint(constraint: Constraint, info: TokenizerInfo) -> CompiledConstraint:
    """`constraint` compiled against `info`'s tokenizer (LRU-cached by constraint and tokenizer).

    Raises `InvalidOptionError` naming what is wrong in one line for an invalid schema, regular
    expression, grammar or choice.
    """
    key = (constraint.key(), info.fingerprint)
    with _compiled_lock:
        hit = _compiled.get(key)
        if hit is not None:
            _compiled.move_to_end(key)
            return hit
    compiled = _compile(constraint, info)
    with _compiled_lock:
        _compiled[key] = compiled
        _compiled.move_to_end(key)
        while len(_compiled) > CACHE_SIZE:
            _compiled.popitem(last=False)
    return compiled


def clear_cache() -> None:
    """Forget every compiled constraint (for benchmarks: the next compile is a first one)."""
    with _compiled_lock:
        _compiled.clear()


def _option_name(constraint: Constraint) -> str:
    return {"json_schema": "schema", "json_object": "response_format"}.get(constraint.kind, constraint.kind)


def _quoted(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= _QUOTE else text[: _QUOTE - 3] + "..."


def _one_line(message: str) -> str:
    """The first line of an engine error, without llguidance's position prefix (``at 1(8): ``)."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    line = lines[0] if lines else "invalid"
    if line.startswith("at ") and "): " in line:
        line = line.split("): ", 1)[1]
    detail = next((ln[len("error: ") :] for ln in lines[1:] if ln.startswith("error: ")), None)
    if line.endswith(":") and detail:  # the regex parser says what is wrong on a later line
        line = f"{line} {detail}"
    return line


def _grammar(llg: Any, constraint: Constraint) -> str:
    kind, value = constraint.kind, constraint.value
    matcher = llg.LLMatcher
    if kind in ("json_schema", "json_object"):
        schema = value if kind == "json_schema" else {"type": "object"}
        options = {"whitespace_pattern": JSON_WHITESPACE}
        try:
            return str(matcher.grammar_from_json_schema(schema, defaults=options))
        except ValueError as e:
            raise InvalidOptionError("schema", _quoted(schema), f"a JSON Schema ({_one_line(str(e))})") from None
    if kind == "regex":
        return str(matcher.grammar_from_regex(value))
    if kind == "choice":
        # Lark string literals escape as JSON strings do; the alternatives are tried as written
        return str(matcher.grammar_from_lark("start: " + " | ".join(json.dumps(c) for c in value)))
    if kind == "grammar":
        return str(matcher.grammar_from_lark(value))
    raise InvalidOptionError("constraint", kind, "json_schema, json_object, regex, choice or grammar")


_WHAT = {
    "json_schema": "a JSON Schema llguidance supports",
    "json_object": "a JSON object",
    "regex": "a valid regular expression",
    "choice": "a non-empty list of non-empty strings",
    "grammar": "a valid Lark grammar (llguidance's dialect)",
}


def _validate(llg: Any, constraint: Constraint, grammar: str, ll: Any) -> None:
    error = llg.LLMatcher.validate_grammar(grammar, ll)
    if error:
        raise InvalidOptionError(
            _option_name(constraint), _quoted(constraint.value), f"{_WHAT[constraint.kind]} ({_one_line(error)})"
        )


def check_constraint(constraint: Constraint) -> None:
    """Raise `InvalidOptionError` (one line) if `constraint` cannot compile, without a tokenizer.

    For early checks (the command line, a server's request): a schema, regex or grammar with an
    error is refused before any model loads.
    """
    llg = _engine()
    _validate(llg, constraint, _grammar(llg, constraint), None)


def _compile(constraint: Constraint, info: TokenizerInfo) -> CompiledConstraint:
    llg = _engine()
    grammar = _grammar(llg, constraint)
    what = _WHAT[constraint.kind]
    _validate(llg, constraint, grammar, info.ll)
    template = llg.LLMatcher(info.ll, grammar, log_level=0)
    if template.is_error():  # pragma: no cover - validate_grammar said it was fine
        raise InvalidOptionError(
            _option_name(constraint), _quoted(constraint.value), f"{what} ({_one_line(template.get_error())})"
        )
    # The first mask builds the lexer's tables (tens of ms on a 32k vocabulary); deep copies share
    # them, so computing it here once keeps that cost in the compile (cached) and off every request.
    import numpy as np

    scratch = np.zeros((info.vocab_size + 31) // 32, dtype=np.int32)
    template.unsafe_compute_mask_ptr(scratch.ctypes.data, scratch.nbytes)
    return CompiledConstraint(constraint, info, grammar, template)


# -- masking -------------------------------------------------------------------------------------


class Matcher:
    """The constraint's state along one generated sequence.

    Each step: mask the logits (`mask_numpy` / `mask_torch` / `mask_mlx`), sample, then `accept` the
    chosen token; `is_finished` says the constrained text is complete (stop with finish_reason
    "stop"). Logits rows wider than the tokenizer (padding rows) have their extra ids disallowed.
    """

    def __init__(self, ll_matcher: Any, info: TokenizerInfo) -> None:
        import numpy as np

        self._m = ll_matcher
        self.info = info
        self.vocab_size = info.vocab_size
        self._bits = np.zeros((info.vocab_size + 31) // 32, dtype=np.int32)
        self._allowed: NDArray[np.bool_] | None = None  # the mask of the current state, once computed
        self._torch: dict[tuple[Any, int], Any] = {}  # the current disallowed-mask per (device, width)

    # the mask of the current state -------------------------------------------------------------

    def allowed(self) -> NDArray[np.bool_]:
        """Which token ids the constraint allows next (a bool array of `vocab_size`)."""
        if self._allowed is None:
            import numpy as np

            self._m.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
            bits = np.unpackbits(self._bits.view(np.uint8), bitorder="little")[: self.vocab_size]
            self._allowed = bits.view(np.bool_)
        return self._allowed

    def allowed_ids(self) -> list[int]:
        """The allowed token ids, ascending."""
        import numpy as np

        return [int(i) for i in np.flatnonzero(self.allowed())]

    def _disallowed(self, width: int) -> NDArray[np.bool_]:
        import numpy as np

        allowed = self.allowed()
        out = np.ones(width, dtype=np.bool_)  # ids past the tokenizer: never allowed
        n = min(width, self.vocab_size)
        np.logical_not(allowed[:n], out=out[:n])
        return out

    def mask_numpy(self, logits: NDArray[Any]) -> None:
        """Set the disallowed entries of a 1-D (or ``(1, V)``) float row to -inf, in place."""
        row = logits.reshape(-1) if logits.ndim == 2 and logits.shape[0] == 1 else logits
        if row.ndim != 1:
            raise ValueError(f"expected one row of logits, got shape {logits.shape}")
        row[self._disallowed(row.shape[0])] = -float("inf")

    def mask_torch(self, logits: Any) -> None:
        """Same as `mask_numpy`, for a 1-D or ``(1, V)`` torch tensor (any device), in place."""
        import torch

        width = int(logits.shape[-1])
        key = (logits.device, width)
        mask = self._torch.get(key)
        if mask is None:
            mask = torch.from_numpy(self._disallowed(width)).to(logits.device)
            self._torch[key] = mask
        logits.masked_fill_(mask, float("-inf"))

    def mask_mlx(self, logits: Any) -> Any:
        """The masked copy of a 1-D or ``(1, V)`` MLX array (MLX arrays are not written in place)."""
        import mlx.core as mx

        allowed = mx.array(~self._disallowed(int(logits.shape[-1])))
        return mx.where(allowed, logits, mx.array(-float("inf"), dtype=logits.dtype))

    # advancing ------------------------------------------------------------------------------------

    def accept(self, token_id: int) -> None:
        """Advance past the chosen token; raises `ConstraintViolationError` if it was not allowed."""
        if self._m.is_stopped() and int(token_id) in self.info.eos_token_ids:
            return  # the end-of-sequence token after a complete text: nothing left to advance
        if not self._m.consume_token(int(token_id)):
            error = self._m.get_error() or "not allowed here"
            raise ConstraintViolationError(f"token {token_id} does not fit the constraint: {_one_line(error)}")
        self._allowed = None
        self._torch.clear()

    def is_finished(self) -> bool:
        """The constrained text is complete and nothing more may follow: stop now (finish_reason "stop")."""
        return bool(self._m.is_stopped())

    def is_accepting(self) -> bool:
        """The text so far is complete (it may still go on: an end-of-sequence token is allowed)."""
        return bool(self._m.is_accepting())

    def eos_allowed(self) -> bool:
        """Whether the tokenizer's end-of-sequence token is allowed now (exactly when complete)."""
        allowed = self.allowed()
        return any(allowed[e] for e in self.info.eos_token_ids if e < self.vocab_size)

    def forced_text(self) -> bytes:
        """The bytes the constraint forces next, whatever the model prefers (may be empty)."""
        return bytes(self._m.compute_ff_bytes())
