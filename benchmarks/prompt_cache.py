"""Issue 22's workload: time to first token at each turn of a conversation, with and without the prompt cache.

    python benchmarks/prompt_cache.py [--repeat 3] [--turns 10] [--no-serve]   (writes results-prompt-cache.json)

A tiny random MLX llama (hidden 256, 4 layers) built on the spot; a system prompt and ten user
turns of about 60 words, ``max_tokens=8``, each reply appended to the conversation. Measured

1. in process: `MLXProvider.stream_chat`, with ``memory.prompt_cache_bytes`` at its default and at 0;
2. through ``provender serve`` with the real ``openai`` client, streaming (the server decodes on
   MLX's `BatchSession`), with the cache on and off (one server at a time).

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
    args = parser.parse_args()
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
