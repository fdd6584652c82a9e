"""What each dialect costs against the OpenAI chat route, on the same model and request.

    python benchmarks/dialects.py [--repeat 15] [--echo-repeat 200] [--max-tokens 16] [--quick]
    (writes benchmarks/results-dialects.json)

Two servers, one after the other: one on the echo model (generation costs next to nothing, so
what is left is each route's own cost: parsing, conversion, the answer's shape, the event
stream), one on an MLX model (mlx-lm's llama class, hidden 512, 8 layers, random weights whose
greedy output is one token forever, so every request generates exactly ``max_tokens`` on every
route). Each repeat sends the same conversation through ``/v1/chat/completions``, Anthropic's
``/v1/messages``, OpenAI's ``/v1/responses`` and Ollama's ``/api/chat``, whole and streamed (read to its end), in a
rotating order, over one kept-alive HTTP connection (the stdlib's `http.client`, so no SDK's
own cost is measured). A dialect's overhead is the median over repeats of its time over the
chat route's in the same repeat, minus one (and the median paired difference in ms).

Throughput under 4 clients (``--throughput-rounds``, ``--per-client``; ``--throughput-only`` runs
just this part and keeps the file's other figures): on one server per model, 4 threads, each with
its own kept-alive connection, send ``--per-client`` requests one after the other, all to Ollama's
``/api/chat`` or all to the OpenAI chat route, whole or streamed; each round runs the four phases
in a rotating order. A phase's throughput is its requests over its wall time; Ollama's figure
against OpenAI's is the median over rounds of the paired ratio (and the ratio of the medians).
Bounded: rounds x 4 phases x 4 clients x per-client requests, then it stops.
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
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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
        "ollama chat": ("/api/chat", {"model": model, "messages": turns, "options": {"num_predict": max_tokens}}),
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


@contextmanager
def serving(root: Path) -> Iterator[int]:
    """A fresh `provender serve` on the cache under `root`: its port, until the block ends."""
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
    try:
        deadline = time.monotonic() + 120
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            try:
                conn.request("GET", "/health")
                conn.getresponse().read()
                conn.close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(log_path.read_text()) from None
                time.sleep(0.2)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def measure(model: str, root: Path, repeat: int, max_tokens: int, prompt: str) -> dict[str, Any]:
    """Paired timings of every route on `model` through one fresh server: {route, mode: figures}."""
    runs: dict[str, list[float]] = {}
    with serving(root) as port:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
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


CLIENTS = 4


def two_routes(model: str, text: str, max_tokens: int, stream: bool) -> dict[str, tuple[str, dict[str, Any]]]:
    """The same conversation for Ollama's /api/chat and the OpenAI chat route."""
    turns = [{"role": "user", "content": text}]
    return {
        "ollama chat": (
            "/api/chat",
            {"model": model, "messages": turns, "stream": stream, "options": {"num_predict": max_tokens}},
        ),
        "openai chat": (
            "/v1/chat/completions",
            {"model": model, "messages": turns, "max_tokens": max_tokens, "stream": stream},
        ),
    }


def phase(port: int, path: str, body: dict[str, Any], per_client: int) -> float:
    """`CLIENTS` threads, each on its own connection, `per_client` requests each: requests per second."""
    errors: list[BaseException] = []
    start_line = threading.Barrier(CLIENTS + 1)

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        try:
            conn.request("GET", "/health")  # connected before the clock starts
            conn.getresponse().read()
            start_line.wait()
            for _ in range(per_client):
                timed(conn, path, body)
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    start_line.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    took = time.perf_counter() - began
    if errors:
        raise errors[0]
    return CLIENTS * per_client / took


def throughput(model: str, root: Path, rounds: int, per_client: int, max_tokens: int, prompt: str) -> dict[str, Any]:
    """Requests per second under `CLIENTS` clients, Ollama's /api/chat against the OpenAI chat route."""
    runs: dict[str, list[float]] = {}
    with serving(root) as port:
        warm = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        for stream in (False, True):
            for path, body in two_routes(model, prompt, max_tokens, stream).values():
                timed(warm, path, body)
        warm.close()
        for i in range(rounds):
            phases = [
                (f"{name}, {'streamed' if stream else 'whole'}", path, body)
                for stream in (False, True)
                for name, (path, body) in two_routes(model, f"{i} {prompt}", max_tokens, stream).items()
            ]
            k = i % len(phases)
            for key, path, body in phases[k:] + phases[:k]:  # a rotating order
                runs.setdefault(key, []).append(phase(port, path, body, per_client))
    results: dict[str, Any] = {}
    for mode in ("whole", "streamed"):
        ours, theirs = runs[f"ollama chat, {mode}"], runs[f"openai chat, {mode}"]
        results[mode] = {
            "ollama_rps_median": statistics.median(ours),
            "openai_rps_median": statistics.median(theirs),
            "ollama_vs_openai_paired_median": statistics.median(o / a for o, a in zip(ours, theirs, strict=True)),
            "ratio_of_medians": statistics.median(ours) / statistics.median(theirs),
            "ollama_rps": ours,
            "openai_rps": theirs,
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="paired repeats on the MLX model (default 15)")
    parser.add_argument("--echo-repeat", type=int, default=200, help="paired repeats on the echo model (default 200)")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--throughput-rounds", type=int, default=5, help="rounds of the 4-client phases (default 5)")
    parser.add_argument("--per-client", type=int, default=8, help="requests per client in a phase (default 8)")
    parser.add_argument("--echo-per-client", type=int, default=50, help="the same on the echo model (default 50)")
    parser.add_argument("--throughput-only", action="store_true", help="only the 4-client part (keeps the rest)")
    parser.add_argument("--overhead-only", action="store_true", help="only the paired overheads (keeps the rest)")
    parser.add_argument("--quick", action="store_true", help="a smoke run (3 repeats, 4 tokens; writes nothing)")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.echo_repeat, args.max_tokens = 3, 10, 4
        args.throughput_rounds, args.per_client, args.echo_per_client = 2, 2, 5

    from provender_mlx.testing import build_tiny_llama

    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.machine()}, "
        f"Python {platform.python_version()}",
        "max_tokens": args.max_tokens,
        "load_average_before": os.getloadavg(),
    }
    before = os.getloadavg()
    if args.throughput_only and RESULTS.exists():  # the overhead figures (and their loads) stay as they were
        out = json.loads(RESULTS.read_text())
    elif args.overhead_only and RESULTS.exists():  # the throughput figures stay as they were
        out["throughput"] = json.loads(RESULTS.read_text()).get("throughput")
    with tempfile.TemporaryDirectory(prefix="provender-dialects-") as tmp:
        root = Path(tmp)
        # the echo model: generation costs nearly nothing, so what is left is each route's own cost
        words = " ".join(f"w{i}" for i in range(args.max_tokens * 2))
        model_dir = build_tiny_llama(
            root / "bench-llama", hidden_size=512, layers=8, vocab_size=300, constant_token="<tool_call>"
        )
        if not args.throughput_only:
            out["echo"] = {
                "repeat": args.echo_repeat,
                "results": measure("echo:plain", root, args.echo_repeat, args.max_tokens, words),
            }
            mlx = measure(f"mlx:{model_dir}", root, args.repeat, args.max_tokens, PROMPT)
            out["mlx"] = {"repeat": args.repeat, "results": mlx}
        rounds = args.throughput_rounds
        if not args.overhead_only:
            out["throughput"] = {
                "date": time.strftime("%Y-%m-%d"),
                "clients": CLIENTS,
                "rounds": rounds,
                "max_tokens": args.max_tokens,
                "echo": {
                    "per_client": args.echo_per_client,
                    "results": throughput("echo:plain", root, rounds, args.echo_per_client, args.max_tokens, words),
                },
                "mlx": {
                    "per_client": args.per_client,
                    "results": throughput(f"mlx:{model_dir}", root, rounds, args.per_client, args.max_tokens, PROMPT),
                },
            }
    after = os.getloadavg()
    if not args.overhead_only:
        out["throughput"]["load_average_before_after"] = [before, after]
    if not args.throughput_only:
        out["load_average_after"] = after
    if not args.quick:
        RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    for which in ("echo", "mlx") if not args.throughput_only else ():
        for key, row in out[which]["results"].items():
            print(
                f"{which:4} {key:30} {row['median_s'] * 1000:8.1f} ms   vs chat {row['overhead_vs_chat'] * 100:+6.1f}%"
                f"  ({row['median_difference_ms']:+.2f} ms)"
            )
    for which in ("echo", "mlx"):
        for mode, row in out["throughput"][which]["results"].items():
            print(
                f"{which:4} {CLIENTS} clients, {mode:8} ollama {row['ollama_rps_median']:8.2f} req/s  openai "
                f"{row['openai_rps_median']:8.2f} req/s  paired ratio {row['ollama_vs_openai_paired_median']:.3f}"
            )
    print(f"load average {before} -> {after}")


if __name__ == "__main__":
    main()
