"""Issue 22's workload: time to first token at each turn of a conversation, with and without the prompt cache.

    python benchmarks/prompt_cache.py [--repeat 3] [--turns 10] [--no-serve]   (writes results-prompt-cache.json)
    python benchmarks/prompt_cache.py --disk [--repeat 3] [--provider mlx|transformers|llamacpp]
        (only section 3, merged into the same file)

A tiny random MLX llama (hidden 256, 4 layers) built on the spot; a system prompt and ten user
turns of about 60 words, ``max_tokens=8``, each reply appended to the conversation. Measured

1. in process: `MLXProvider.stream_chat`, with ``memory.prompt_cache_bytes`` at its default and at 0;
2. through ``provender serve`` with the real ``openai`` client, streaming (the server decodes on
   MLX's `BatchSession`), with the cache on and off (one server at a time).

3. ``--disk``, a saved prompt cache (issue 22 item 3): on the benchmarks' larger model of the
   provider (MLX: hidden 512, 8 layers, as serve_bench and dialects; transformers: hidden 576, 12
   layers, as transformers_bench; llama.cpp: n_embd 512, 6 layers, F32, as llamacpp_bench), a system
   prompt of at least 2,000 tokens saved once with
   `PooledProvider.save_prompt` (what ``provender cache prompt`` does); then, each time in a fresh
   load of the model (loaded, but it never saw the prefix), time to first token of that system
   prompt plus a question, reading the saved state from the disk cache against computing it
   (``cache.prompt_cache_max_size = 0``: nothing read). The two alternate, after one warm-up of each.

Time to first token is from the call to the first non-empty piece of text, or the end of the
reply when it has none. Medians over ``--repeat`` conversations (a fresh load each).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

RESULTS = Path(__file__).parent / "results-prompt-cache.json"
TEXT = (
    "the model reads every message of the conversation again at each turn unless it keeps the state "
    "of what it has already read so a long chat grows slower with each reply while a cache of that "
    "state lets the next turn read only its own new words and answer at once"
)
WORDS = TEXT.split()
REPORTED = (1, 2, 5, 10)


def user_turn(n: int) -> str:
    return " ".join(WORDS[(7 * n + i) % len(WORDS)] for i in range(60))


def first_token(pieces: Iterator[str]) -> tuple[float, str]:
    started = time.perf_counter()
    text, first = "", None
    for piece in pieces:
        if piece and first is None:
            first = time.perf_counter() - started
        text += piece
    return (first if first is not None else time.perf_counter() - started), text


def conversation(ask: Callable[[list[dict[str, str]]], Iterator[str]], turns: int, system: int = 0) -> list[float]:
    """TTFT at each turn; `system` varies the system prompt (the warm-up's shares no prefix with the others)."""
    messages = [{"role": "system", "content": f"{system}: You are a helpful assistant. " + user_turn(99)}]
    times = []
    for n in range(turns):
        messages.append({"role": "user", "content": user_turn(n)})
        seconds, text = first_token(ask(messages))
        times.append(seconds)
        print(f"  turn {n + 1}: {seconds:.3f} s", file=sys.stderr, flush=True)
        messages.append({"role": "assistant", "content": text})
    return times


def in_process(model: Path, turns: int, repeat: int, cache_bytes: str | None) -> list[list[float]]:
    from provender_mlx import MLXProvider

    if cache_bytes is None:
        os.environ.pop("PROVENDER_MEMORY__PROMPT_CACHE_BYTES", None)
    else:
        os.environ["PROVENDER_MEMORY__PROMPT_CACHE_BYTES"] = cache_bytes
    runs = []
    for i in range(repeat + 1):  # the first, two-turn conversation warms up (kernels, imports): not counted
        MLXProvider.clear_model_cache()
        p = MLXProvider(str(model))
        p.load_model()
        runs.append(conversation(lambda m, p=p: p.stream_chat(m, max_tokens=8), turns if i else 2, i))
    MLXProvider.clear_model_cache()
    return runs[1:]


def through_serve(model: Path, turns: int, repeat: int, cache_bytes: str | None) -> list[list[float]]:
    import openai
    from serve_bench import free_port, start, stop

    port = free_port()
    env = {**os.environ, "PROVENDER_SERVER__PORT": str(port)}
    env.pop("PROVENDER_MEMORY__PROMPT_CACHE_BYTES", None)
    if cache_bytes is not None:
        env["PROVENDER_MEMORY__PROMPT_CACHE_BYTES"] = cache_bytes
    proc = start([sys.executable, "-m", "provender", "serve"], env, f"http://127.0.0.1:{port}/health")
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none")

    def ask(messages: list[dict[str, str]]) -> Iterator[str]:
        stream = client.chat.completions.create(
            model=str(model), messages=messages, max_tokens=8, stream=True, temperature=0
        )
        for event in stream:
            if event.choices:
                yield event.choices[0].delta.content or ""

    try:
        # each conversation new to the server (its own system prompt); the first, two turns, loads the model
        runs = [conversation(ask, turns if i else 2, i) for i in range(repeat + 1)]
    finally:
        stop(proc)
    return runs[1:]


def long_system(p: Any, tokens: int) -> str:
    """A system prompt of at least `tokens` tokens for `p`'s model (the words of TEXT, numbered)."""
    parts: list[str] = []
    while True:
        parts.append(f"Rule {len(parts) + 1}: " + user_turn(len(parts)) + ".")
        text = " ".join(parts) + "\n"
        if p.count_tokens(text) >= tokens:
            return text


def _larger_model(root: Path, provider: str) -> tuple[str, str, Callable[..., Any]]:
    """The benchmarks' larger model for `provider`: its path, a description, and the provider class."""
    if provider == "transformers":
        from provender_transformers import TransformersProvider
        from provender_transformers.testing import build_tiny_llama as build_tf

        path = build_tf(root / "bench-llama-576", seed=0, hidden_size=576, layers=12)  # as transformers_bench
        return str(path), "transformers llama hidden 576, 12 layers (random weights)", TransformersProvider
    if provider == "llamacpp":
        from provender_llamacpp import LlamaCppProvider
        from provender_llamacpp.testing import build_tiny_llama as build_gguf

        path = build_gguf(root / "bench-llama-F32.gguf", n_embd=512, n_layer=6, vocab_size=2000)  # as llamacpp_bench
        return str(path), "llama.cpp llama n_embd 512, 6 layers, F32 (random weights)", LlamaCppProvider
    from provender_mlx import MLXProvider
    from provender_mlx.testing import build_tiny_llama

    path = build_tiny_llama(root / "bench-llama-512", hidden_size=512, layers=8, vocab_size=300)
    return str(path), "mlx llama hidden 512, 8 layers (random weights)", MLXProvider


def disk_section(root: Path, repeat: int, provider: str = "mlx", tokens: int = 2000) -> dict[str, Any]:
    """Section 3: first token with a saved system prompt read from the disk cache, against computing it.
    llama.cpp caps its context at the GGUF's training context (2,048 here): 1,900 tokens there."""
    if provider == "llamacpp":
        tokens = min(tokens, 1900)
    from provender import CacheManager, model_pool

    os.environ.setdefault("PROVENDER_LLAMACPP__N_CTX", "4096")  # room for the system prompt
    model, described, cls = _larger_model(root, provider)
    on = CacheManager(root / "cache", max_size="20GB")
    off = CacheManager(root / "cache", max_size="20GB", prompt_max_size=0)  # the same cache, nothing read

    def fresh(cache: CacheManager) -> Any:
        model_pool().clear()
        p = cls(model, cache=cache)
        p.load_model()
        return p

    p = fresh(on)
    system = long_system(p, tokens)
    started = time.perf_counter()
    entry = p.save_prompt(system)
    save_s = time.perf_counter() - started
    n = int(entry.metadata["prompt"]["tokens"])
    print(f"  saved {n} tokens ({entry.size / 1e6:.1f} MB) in {save_s:.2f} s", file=sys.stderr, flush=True)
    times: dict[str, list[float]] = {"disk": [], "computed": []}
    for i in range(repeat + 1):  # the first of each warms up: not counted
        for name, cache in (("disk", on), ("computed", off)):
            p = fresh(cache)
            question = f"Question {i}: which rule says " + " ".join(WORDS[i : i + 6]) + "?"
            seconds, _ = first_token(p.stream(system + question, max_tokens=8))
            stats = p.prompt_cache().stats
            assert stats.disk_hits == (1 if name == "disk" else 0), stats
            print(f"  {name}: {seconds:.3f} s (prefilled {stats.last_prefilled})", file=sys.stderr, flush=True)
            if i:
                times[name].append(seconds)
    model_pool().clear()
    disk, computed = statistics.median(times["disk"]), statistics.median(times["computed"])
    return {
        "model": described,
        "system_tokens": n,
        "saved_bytes": entry.size,
        "save_s": round(save_s, 3),
        "median_ttft_disk_s": round(disk, 4),
        "median_ttft_computed_s": round(computed, 4),
        "speedup": round(computed / disk, 1),
        "runs": times,
    }


def summary(runs: list[list[float]]) -> dict[str, Any]:
    medians = [statistics.median(turn) for turn in zip(*runs, strict=True)]
    return {
        "median_s_by_turn": [round(m, 4) for m in medians],
        "last_over_first": round(medians[-1] / medians[0], 2),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--no-serve", action="store_true", help="only the in-process figures")
    parser.add_argument("--disk", action="store_true", help="only section 3 (a saved prompt cache on disk)")
    parser.add_argument("--provider", choices=["mlx", "transformers", "llamacpp"], default="mlx", help="for --disk")
    args = parser.parse_args()
    if args.disk:
        with tempfile.TemporaryDirectory() as tmp:
            section = disk_section(Path(tmp), args.repeat, args.provider)
        section["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        key = "disk" if args.provider == "mlx" else f"disk_{args.provider}"
        RESULTS.write_text(json.dumps({**old, key: section}, indent=1))
        print(
            f"first token, {section['system_tokens']}-token system prompt: saved on disk "
            f"{section['median_ttft_disk_s']} s, computed {section['median_ttft_computed_s']} s "
            f"({section['speedup']}x)"
        )
        return
    from provender_mlx.testing import build_tiny_llama

    with tempfile.TemporaryDirectory() as tmp:
        model = build_tiny_llama(Path(tmp) / "tiny-llama-256", hidden_size=256, layers=4, vocab_size=400)
        results: dict[str, Any] = {"turns": args.turns, "repeat": args.repeat, "max_tokens": 8}
        for name, bytes_ in (("cache", None), ("no_cache", "0")):
            results[f"in_process_{name}"] = summary(in_process(model, args.turns, args.repeat, bytes_))
        if not args.no_serve:
            for name, bytes_ in (("cache", None), ("no_cache", "0")):
                results[f"serve_{name}"] = summary(through_serve(model, args.turns, args.repeat, bytes_))
    results["when"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    RESULTS.write_text(json.dumps(results, indent=1))
    for key, value in results.items():
        if isinstance(value, dict):
            picked = [value["median_s_by_turn"][t - 1] for t in REPORTED if t <= args.turns]
            print(f"{key:22} turns {REPORTED}: {picked}  last/first {value['last_over_first']}")


if __name__ == "__main__":
    main()
