"""Constrained decoding's cost on each runtime: tokens/s with a JSON schema against without, compile times.

    .tox/tests/bin/python benchmarks/structured.py mlx               # MLX (CPU here)
    .tox/transformers/bin/python benchmarks/structured.py transformers
    .tox/llamacpp/bin/python benchmarks/structured.py llamacpp
    (each: [--rounds 3] [--tokens 128]; writes its section of benchmarks/results-structured.json)

On the models the other benchmarks use (MLX: mlx_bench's llama, 512 hidden x 4 layers; transformers:
the SmolLM-sized 576 x 12 llama; llama.cpp: llamacpp_bench's 512 x 6 F32 GGUF), greedy, per runtime:

1. ``compile``: reading the tokenizer into the engine (`tokenizer_info`), compiling the schema the
   first time (`compile_constraint` after `clear_cache`) and again from the core's cache;
2. ``loop``: tokens/s of the runtime's own generation loop with provender's `Matcher` applied to
   each step's logits (mlx_lm's ``generate_step`` logits processor; transformers' ``generate``
   with a ``LogitsProcessor``; llama-cpp-python's ``create_completion`` ``logits_processor``)
   against the same loop unconstrained; for llama.cpp also against llama.cpp's own GBNF grammar
   (``LlamaGrammar.from_json_schema`` on the same schema, ``grammar=``) and its build time;
3. ``provider``: the same through the provider (``Provider.complete(prompt, schema=...)``),
   where the provider applies the constraint itself.

The schema (an array of objects with strings, numbers, enums and a nested object, up to 50 of them)
does not end before ``--tokens``, so both sides generate the same number of tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
PROMPT = "The shared cache keeps models on disk so that every process finds them."
ITEM = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "score": {"type": "number"},
        "role": {"enum": ["admin", "user", "guest"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 12},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "age", "score", "role", "tags", "address"],
    "additionalProperties": False,
}
SCHEMA = {"type": "array", "items": ITEM, "minItems": 50, "maxItems": 50}
#: one thread for the runtimes: on a shared 2-core machine, spinning worker threads measure the neighbours
THREADS = int(os.environ.get("BENCH_THREADS", "1"))


def timed(fn: Callable[[], int], rounds: int) -> dict[str, float]:
    """Median tokens/s and seconds of `fn` (which returns how many tokens it generated)."""
    fn()  # warm-up: first-call set-up (kernels, the engine's lazy tables) untimed
    secs, cpus, counts = [], [], []
    for _ in range(rounds):
        start, cpu = time.perf_counter(), time.process_time()
        counts.append(fn())
        secs.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    n, wall, cpu_s = statistics.median(counts), statistics.median(secs), statistics.median(cpus)
    return {"tokens": n, "seconds": wall, "tokens_per_s": n / wall, "cpu_seconds": cpu_s, "tokens_per_cpu_s": n / cpu_s}


def compile_times(tokenizer: Any) -> dict[str, float]:
    from provender import _constrain
    from provender.generation import Constraint

    start = time.perf_counter()
    info = _constrain.tokenizer_info(tokenizer)
    tok_s = time.perf_counter() - start
    _constrain.clear_cache()
    start = time.perf_counter()
    _constrain.compile_constraint(Constraint.json_schema(SCHEMA), info)
    first = time.perf_counter() - start
    cached = []
    for _ in range(100):
        start = time.perf_counter()
        _constrain.compile_constraint(Constraint.json_schema(SCHEMA), info)
        cached.append(time.perf_counter() - start)
    return {
        "tokenizer_info_ms": tok_s * 1e3,
        "first_compile_ms": first * 1e3,
        "cached_compile_us": statistics.median(cached) * 1e6,
    }


def matcher_for(tokenizer: Any) -> Any:
    from provender import _constrain
    from provender.generation import Constraint

    return _constrain.compile_constraint(Constraint.json_schema(SCHEMA), _constrain.tokenizer_info(tokenizer)).matcher()


def alternate(sides: dict[str, Callable[[], int]], rounds: int) -> dict[str, dict[str, float]]:
    """Each side timed `rounds` times, the sides in turn (one round of each, then the next)."""
    out: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, fn in sides.items():
            out[name].append(timed(fn, 1))
    return {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in out.items()}


def ratios(rows: dict[str, dict[str, float]], base: str = "unconstrained") -> dict[str, float]:
    """tokens/s of each side over `base`'s, by wall-clock and by CPU time (the steadier on a shared machine)."""
    out = {}
    for name, row in rows.items():
        if name != base:
            out[f"{name}_vs_{base}"] = row["tokens_per_s"] / rows[base]["tokens_per_s"]
            out[f"{name}_vs_{base}_cpu"] = row["tokens_per_cpu_s"] / rows[base]["tokens_per_cpu_s"]
    return out


def provider_rows(provider: Any, tokens: int, rounds: int) -> dict[str, Any]:
    """Unconstrained against ``schema=`` through ``Provider.complete``, if the provider takes it."""

    def run(**extra: Any) -> Callable[[], int]:
        return lambda: int(provider.complete(PROMPT, max_tokens=tokens, temperature=0.0, **extra).completion_tokens)

    try:
        run(schema=SCHEMA)()
    except Exception as exc:  # the provider does not (yet) apply constraints: said in the results
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"}
    rows = alternate({"unconstrained": run(), "constrained": run(schema=SCHEMA)}, rounds)
    return {**rows, **ratios(rows)}


# -- the runtimes -------------------------------------------------------------------------------


def bench_mlx(work: Path, tokens: int, rounds: int) -> dict[str, Any]:
    import importlib

    import mlx.core as mx
    import mlx_lm
    from mlx_bench import build

    from provender_mlx import MLXProvider

    generate_step = importlib.import_module("mlx_lm.generate").generate_step
    path = build(work)
    model, tokenizer = mlx_lm.load(str(path))
    prompt = mx.array(tokenizer.encode(PROMPT))
    eos = set(tokenizer.eos_token_ids)

    def loop(constrained: bool) -> int:
        matcher = matcher_for(tokenizer) if constrained else None
        seen = [len(prompt)]

        def process(tokens: mx.array, logits: mx.array) -> mx.array:
            assert matcher is not None
            if tokens.size > seen[0]:
                matcher.accept(int(tokens[-1].item()))
                seen[0] = tokens.size
            return matcher.mask_mlx(logits)

        n = 0
        for token, _ in generate_step(
            prompt, model, max_tokens=tokens, logits_processors=[process] if matcher else None
        ):
            n += 1
            if int(token) in eos:
                break
        return n

    out: dict[str, Any] = {
        "model": "mlx_bench's random llama (512 hidden, 4 layers, 300-token BPE)",
        "compile": compile_times(tokenizer),
    }
    rows = alternate({"unconstrained": lambda: loop(False), "constrained": lambda: loop(True)}, rounds)
    out["loop"] = {**rows, **ratios(rows)}
    out["provider"] = provider_rows(MLXProvider(str(path)), tokens, rounds)
    return out


def bench_transformers(work: Path, tokens: int, rounds: int) -> dict[str, Any]:
    import torch
    from transformers_bench import build_llama

    from provender_transformers import TransformersProvider
    from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList

    torch.set_num_threads(THREADS)
    path = build_llama(work / "llama-576x12")
    model = AutoModelForCausalLM.from_pretrained(str(path)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    enc = tokenizer(PROMPT, return_tensors="pt")
    n_prompt = enc["input_ids"].shape[1]

    class Mask(LogitsProcessor):  # type: ignore[misc]
        def __init__(self) -> None:
            self.matcher = matcher_for(tokenizer)

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            if input_ids.shape[1] > n_prompt:
                self.matcher.accept(int(input_ids[0, -1]))
            self.matcher.mask_torch(scores[0])
            return scores

    def loop(constrained: bool) -> int:
        extra = {"logits_processor": LogitsProcessorList([Mask()])} if constrained else {}
        with torch.inference_mode():
            out = model.generate(**enc, max_new_tokens=tokens, min_new_tokens=0, do_sample=False, **extra)
        return int(out.shape[1] - n_prompt)

    out: dict[str, Any] = {
        "model": "transformers_bench's random llama (576 hidden, 12 layers)",
        "compile": compile_times(tokenizer),
    }
    rows = alternate({"unconstrained": lambda: loop(False), "constrained": lambda: loop(True)}, rounds)
    out["loop"] = {**rows, **ratios(rows)}
    out["provider"] = provider_rows(TransformersProvider(str(path)), tokens, rounds)
    return out


def source_corpus(megabytes: float = 8.0) -> str:
    """Python's own standard library sources as text, for a BPE of a real model's vocabulary size
    (the test corpus holds about 400 tokens' worth)."""
    parts, size = [], 0
    for file in sorted(Path(os.__file__).parent.glob("*.py")):
        text = file.read_text(encoding="utf-8", errors="replace")
        parts.append(text)
        size += len(text)
        if size > megabytes * 1e6:
            break
    return "\n".join(parts)


def bench_llamacpp(work: Path, tokens: int, rounds: int, vocab: int = 0) -> dict[str, Any]:
    import numpy as np
    from llama_cpp import Llama, LlamaGrammar, LogitsProcessorList

    from provender_llamacpp import LlamaCppProvider
    from provender_llamacpp.testing import build_tiny_llama

    if vocab:  # a real model's vocabulary size (GBNF's cost grows with it: it checks every candidate)
        path = build_tiny_llama(
            work / "bench-llama-F32.gguf", n_embd=512, n_layer=6, vocab_size=vocab, corpus=source_corpus()
        )
    else:
        path = build_tiny_llama(work / "bench-llama-F32.gguf", n_embd=512, n_layer=6, vocab_size=2000)
    llm = Llama(str(path), n_ctx=2048, n_threads=THREADS, n_threads_batch=THREADS, verbose=False)
    n_prompt = len(llm.tokenize(PROMPT.encode()))

    def engine() -> int:
        matcher = matcher_for(llm)
        seen = [n_prompt]

        def process(input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
            if len(input_ids) > seen[0]:
                matcher.accept(int(input_ids[-1]))
                seen[0] = len(input_ids)
            matcher.mask_numpy(scores)
            return scores

        out = llm.create_completion(
            PROMPT, max_tokens=tokens, temperature=0.0, logits_processor=LogitsProcessorList([process])
        )
        return int(out["usage"]["completion_tokens"])

    start = time.perf_counter()
    grammar = LlamaGrammar.from_json_schema(json.dumps(SCHEMA), verbose=False)
    gbnf_build_ms = (time.perf_counter() - start) * 1e3

    def gbnf() -> int:
        out = llm.create_completion(PROMPT, max_tokens=tokens, temperature=0.0, grammar=grammar)
        return int(out["usage"]["completion_tokens"])

    def plain() -> int:
        return int(llm.create_completion(PROMPT, max_tokens=tokens, temperature=0.0)["usage"]["completion_tokens"])

    out: dict[str, Any] = {
        "model": "llamacpp_bench's random llama (n_embd 512, 6 layers, F32, "
        + (f"a {llm.n_vocab():,}-token BPE trained on Python's sources)" if vocab else "the test BPE's vocabulary)"),
        "n_vocab": llm.n_vocab(),
        "compile": {**compile_times(llm), "gbnf_from_json_schema_ms": gbnf_build_ms},
    }
    rows = alternate({"unconstrained": plain, "constrained": engine, "gbnf": gbnf}, rounds)
    out["loop"] = {
        **rows,
        **ratios(rows),
        "engine_vs_gbnf": rows["constrained"]["tokens_per_s"] / rows["gbnf"]["tokens_per_s"],
        "engine_vs_gbnf_cpu": rows["constrained"]["tokens_per_cpu_s"] / rows["gbnf"]["tokens_per_cpu_s"],
    }
    out["provider"] = provider_rows(LlamaCppProvider(str(path), n_ctx=2048, threads=THREADS), tokens, rounds)
    return out


RUNTIMES = {"mlx": bench_mlx, "transformers": bench_transformers, "llamacpp": bench_llamacpp}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runtime", choices=sorted(RUNTIMES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument(
        "--vocab", type=int, default=0, help="llamacpp: a BPE of this many tokens trained on Python's sources"
    )
    args = parser.parse_args()
    if args.vocab and args.runtime != "llamacpp":
        parser.error("--vocab is for the llamacpp runtime")
    results_path = HERE / "results-structured.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("PROVENDER_CACHE__DIR", str(Path(tmp) / "cache"))
        extra = {"vocab": args.vocab} if args.vocab else {}
        section = RUNTIMES[args.runtime](Path(tmp), args.tokens, args.rounds, **extra)
    section["run"] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} cores, {platform.machine()} {platform.system()}, "
        f"Python {platform.python_version()}",
        "load_average": os.getloadavg()[0],
        "rounds": args.rounds,
        "tokens": args.tokens,
    }
    results.setdefault(args.runtime, []).append(section)
    results_path.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(section, indent=1))


if __name__ == "__main__":
    main()
