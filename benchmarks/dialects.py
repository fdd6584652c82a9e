"""What each dialect costs against the OpenAI chat route, on the same model and request.

    python benchmarks/dialects.py [--repeat 15] [--echo-repeat 200] [--max-tokens 16] [--quick]
    (writes benchmarks/results-dialects.json)

Two servers, one after the other: one on the echo model (generation costs next to nothing, so
what is left is each route's own cost: parsing, conversion, the answer's shape, the event
stream), one on an MLX model (mlx-lm's llama class, hidden 512, 8 layers, random weights whose
greedy output is one token forever, so every request generates exactly ``max_tokens`` on every
route). Each repeat sends the same conversation through ``/v1/chat/completions``, Anthropic's
``/v1/messages`` and OpenAI's ``/v1/responses``, whole and streamed (read to its end), in a
rotating order, over one kept-alive HTTP connection (the stdlib's `http.client`, so no SDK's
own cost is measured). A dialect's overhead is the median over repeats of its time over the
chat route's in the same repeat, minus one (and the median paired difference in ms).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results-dialects.json"
PROMPT = "The shared cache keeps models on disk so that every process finds them."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bodies(model: str, text: str, max_tokens: int, stream: bool) -> dict[str, tuple[str, dict[str, Any]]]:
    """The same conversation as each route takes it: {name: (path, body)}."""
    turns = [{"role": "user", "content": text}]
    routes: dict[str, tuple[str, dict[str, Any]]] = {
        "openai chat": ("/v1/chat/completions", {"model": model, "messages": turns, "max_tokens": max_tokens}),
        "anthropic messages": ("/v1/messages", {"model": model, "messages": turns, "max_tokens": max_tokens}),
        "openai responses": ("/v1/responses", {"model": model, "input": turns, "max_output_tokens": max_tokens}),
    }
    return {name: (path, {**body, "stream": stream}) for name, (path, body) in routes.items()}


def timed(conn: http.client.HTTPConnection, path: str, body: dict[str, Any]) -> float:
    data = json.dumps(body).encode()
    start = time.perf_counter()
    conn.request("POST", path, data, {"content-type": "application/json"})
    response = conn.getresponse()
    payload = response.read()
    elapsed = time.perf_counter() - start
    if response.status != 200:
        raise RuntimeError(f"{path}: {response.status} {payload[:300]!r}")
    return elapsed


def measure(model: str, root: Path, repeat: int, max_tokens: int, prompt: str) -> dict[str, Any]:
    """Paired timings of every route on `model` through one fresh server: {route, mode: figures}."""
    port = free_port()
    env = {
        **os.environ,
        "PROVENDER_CACHE__DIR": str(root / "cache"),
        "PROVENDER_DATA__DIR": str(root / "data"),
        "PROVENDER_SERVER__PORT": str(port),
        "PROVENDER_QUIET_PLUGIN_ERRORS": "1",
    }
    log_path = root / f"server-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "provender", "serve"], env=env, stdout=log, stderr=log)
    runs: dict[str, list[float]] = {}
    try:
        deadline = time.monotonic() + 120
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            try:
                conn.request("GET", "/health")
                conn.getresponse().read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(log_path.read_text()) from None
                time.sleep(0.2)
        for stream in (False, True):  # warm: load the model, run every route's path once
            for path, body in bodies(model, prompt, max_tokens, stream).values():
                timed(conn, path, body)
        for i in range(repeat):
            text = f"{uuid.uuid4().hex[:8]} {prompt}"
            for stream in (False, True):
                routes = list(bodies(model, text, max_tokens, stream).items())
                k = i % len(routes)
                for name, (path, body) in routes[k:] + routes[:k]:  # a rotating order
                    key = f"{name}, {'streamed' if stream else 'whole'}"
                    runs.setdefault(key, []).append(timed(conn, path, body))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    results: dict[str, Any] = {}
    for key, seconds in runs.items():
        base = runs[f"openai chat, {key.split(', ')[1]}"]
        ratios = [t / b for t, b in zip(seconds, base, strict=True)]
        results[key] = {
            "median_s": statistics.median(seconds),
            "overhead_vs_chat": statistics.median(ratios) - 1,
            "median_difference_ms": statistics.median((t - b) * 1000 for t, b in zip(seconds, base, strict=True)),
            "ratios": ratios,
            "seconds": seconds,
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="paired repeats on the MLX model (default 15)")
    parser.add_argument("--echo-repeat", type=int, default=200, help="paired repeats on the echo model (default 200)")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="a smoke run (3 repeats, 4 tokens; writes nothing)")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.echo_repeat, args.max_tokens = 3, 10, 4

    from provender_mlx.testing import build_tiny_llama

    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}",
        "max_tokens": args.max_tokens,
        "load_average_before": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="provender-dialects-") as tmp:
        root = Path(tmp)
        # the echo model: generation costs nearly nothing, so what is left is each route's own cost
        words = " ".join(f"w{i}" for i in range(args.max_tokens * 2))
        out["echo"] = {
            "repeat": args.echo_repeat,
            "results": measure("echo:plain", root, args.echo_repeat, args.max_tokens, words),
        }
        model_dir = build_tiny_llama(
            root / "bench-llama", hidden_size=512, layers=8, vocab_size=300, constant_token="<tool_call>"
        )
        mlx = measure(f"mlx:{model_dir}", root, args.repeat, args.max_tokens, PROMPT)
        out["mlx"] = {"repeat": args.repeat, "results": mlx}
    out["load_average_after"] = os.getloadavg()
    if not args.quick:
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    for which in ("echo", "mlx"):
        for key, row in out[which]["results"].items():
            print(
                f"{which:4} {key:30} {row['median_s'] * 1000:8.1f} ms   vs chat {row['overhead_vs_chat'] * 100:+6.1f}%"
                f"  ({row['median_difference_ms']:+.2f} ms)"
            )
    print(f"load average {out['load_average_before']} -> {out['load_average_after']}")


if __name__ == "__main__":
    main()
