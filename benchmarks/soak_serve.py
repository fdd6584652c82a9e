"""The server soak (issue 19): `provender serve` under hostile requests, slow clients and SIGKILLs.

    python benchmarks/soak_serve.py                 # about 2 minutes; part of `tox -e soak`
    python benchmarks/soak_serve.py --seconds 120   # a longer attack phase

One real server on 127.0.0.1 (a free port, nothing beyond loopback), run under ``ulimit -n 256``
with the default settings (no key, ``server.header_timeout`` 10 s shortened to 2 s so slow
clients churn within the run), serving a tiny MLX model from a cache that also holds a model
imported with ``--move``. For `--seconds`:

- a legitimate client chats with ``echo:upper`` and the tiny model and checks every answer;
- a prober times ``GET /health`` on a new connection every 50 ms (the p50/p99 in the report);
- hostile clients send malformed JSON, lone surrogates, 100,000-deep nesting, bodies past the
  limit (declared and streamed), garbage HTTP, rebinding ``Host`` headers, cross-origin simple
  POSTs and preflights, pulls and unloads from an allowed origin: each must get its 4xx;
- slow clients keep up to 300 connections open, sending a request head a byte at a time.

Then the server is SIGKILLed `--kills` times in the middle of a streamed generation and
restarted on the same port. After each kill no lease is left, and at the end every file of the
cache's entries is byte for byte what it was, `verify` is clean and nothing was pulled.
Writes benchmarks/results-soak-serve.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "tests"))
NOFILE = 256
CHAT = {"model": "echo:upper", "messages": [{"role": "user", "content": "hello soak"}]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http(
    port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None, timeout: float = 30
) -> tuple[int, bytes]:
    """One request on a new connection, with exactly these headers: (status, body); status 0 on no answer."""
    head = {"Host": f"127.0.0.1:{port}", "Connection": "close", **(headers or {})}
    if body or method == "POST":
        head.setdefault("Content-Length", str(len(body)))
    raw = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in head.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(raw.encode("utf-8", "surrogateescape") + body)
        except OSError:  # refused while sending (413 before the body): read the answer anyway
            pass
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except OSError:
            pass
    if not data.startswith(b"HTTP/1.1 "):
        return 0, data
    return int(data.split()[1]), data.partition(b"\r\n\r\n")[2]


class Soak:
    def __init__(self, root: Path, seconds: float, kills: int) -> None:
        self.root, self.seconds, self.kills = root, seconds, kills
        self.port = free_port()
        self.cache = root / "cache"
        self.stop = threading.Event()
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.health: list[float] = []
        self.health_failed = 0
        self.unexpected: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[Path] = []
        self.env = {
            **os.environ,
            "PROVENDER_CACHE__DIR": str(self.cache),
            "PROVENDER_DATA__DIR": str(root / "data"),
            "PROVENDER_QUIET_PLUGIN_ERRORS": "1",
            "PROVENDER_SERVER__PORT": str(self.port),
            "PROVENDER_SERVER__HEADER_TIMEOUT": "2",
            "PROVENDER_SERVER__ORIGINS": "https://app.example",
            "HF_HUB_OFFLINE": "1",  # nothing may be pulled; a pull would fail loudly
        }
        for key in [k for k in self.env if k.startswith("PROVENDER_CONFIG")]:
            del self.env[key]

    # -- the server -------------------------------------------------------------------

    def start(self) -> float:
        log = self.root / f"server-{len(self.logs)}.log"
        self.logs.append(log)

        def limit() -> None:
            # the soft limit (`ulimit -Sn 256`): mlx_lm raises it to 2048 when it is imported, and fails
            # to import under a hard limit below 4096 (tests/serve/test_server_walls.py covers a hard 256)
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, hard))

        started = time.monotonic()
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "provender", "serve", "--max-models", "3"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=limit,
            )
        while True:
            try:
                if http(self.port, "GET", "/health", timeout=5)[0] == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() - started > 60:
                raise RuntimeError(f"the server did not start: {log.read_text()}")
            time.sleep(0.05)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    # -- clients ----------------------------------------------------------------------

    def note(self, kind: str, status: int, expected: tuple[int, ...]) -> None:
        with self.lock:
            self.counts[f"{kind}"] += 1
            if status >= 500 or (status not in expected and status != 0):
                self.unexpected.append(f"{kind}: {status} (expected {expected})")
            if status == 0:
                self.counts["no_answer"] += 1

    def legit(self, model: str) -> None:
        while not self.stop.is_set():
            body = json.dumps({"model": model, "prompt": "the soak", "max_tokens": 4}).encode()
            path = "/v1/completions"
            if model.startswith("echo"):
                body, path = json.dumps(CHAT).encode(), "/v1/chat/completions"
            try:
                status, answer = http(self.port, "POST", path, body, {"Content-Type": "application/json"})
            except OSError:
                status, answer = 0, b""
            self.note("legit", status, (200,))
            if model.startswith("echo") and status == 200 and b"HELLO SOAK" not in answer:
                self.unexpected.append(f"legit: wrong answer {answer[:100]!r}")

    def prober(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                ok = http(self.port, "GET", "/health", timeout=10)[0] == 200
            except OSError:
                ok = False
            with self.lock:
                if ok:
                    self.health.append(time.monotonic() - started)
                else:
                    self.health_failed += 1
            time.sleep(0.05)

    def hostile(self, seed: int) -> None:
        rng = random.Random(seed)
        port = self.port
        chat = json.dumps(CHAT).encode()
        attacks: list[tuple[str, Any, tuple[int, ...]]] = [
            ("bad_json", lambda: http(port, "POST", "/v1/chat/completions", b'{"model": "echo:upper", "mess'), (400,)),
            ("not_object", lambda: http(port, "POST", "/v1/chat/completions", b"[1, 2, 3]"), (400,)),
            (
                "surrogate",
                lambda: http(port, "POST", "/v1/chat/completions", chat.replace(b"hello soak", b"\\ud800")),
                (400,),
            ),
            ("deep", lambda: http(port, "POST", "/v1/chat/completions", b"[" * 100_000 + b"]" * 100_000), (400, 413)),
            (
                "huge_declared",
                lambda: http(port, "POST", "/v1/chat/completions", b"{", {"Content-Length": str(10**10)}, timeout=10),
                (413,),
            ),
            ("huge_streamed", lambda: self.streamed_body(9 * 2**20), (413,)),
            ("garbage_http", lambda: self.garbage(rng), (400, 404)),
            (
                "rebinding_host",
                lambda: http(port, "GET", "/v1/models", headers={"Host": f"evil{rng.randrange(99)}.example:{port}"}),
                (403,),
            ),
            (
                "cross_origin_post",
                lambda: http(
                    port,
                    "POST",
                    "/v1/chat/completions",
                    json.dumps({**CHAT, "model": "mlx:org/not-cached"}).encode(),
                    {"Origin": "https://evil.example", "Content-Type": "text/plain"},
                ),
                (403,),
            ),
            (
                "cross_origin_unload",
                lambda: http(port, "POST", "/api/unload", b'{"model": null}', {"Origin": "null"}),
                (403,),
            ),
            (
                "preflight",
                lambda: http(
                    port,
                    "OPTIONS",
                    "/v1/chat/completions",
                    headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
                ),
                (403,),
            ),
            (
                "allowed_origin_pull",
                lambda: http(
                    port,
                    "POST",
                    "/v1/chat/completions",
                    json.dumps({**CHAT, "model": "mlx:org/not-cached"}).encode(),
                    {"Origin": "https://app.example"},
                ),
                (403,),
            ),
            (
                "unknown_model",
                lambda: http(port, "POST", "/v1/chat/completions", chat.replace(b"echo:", b"nope:")),
                (404,),
            ),
        ]
        while not self.stop.is_set():
            kind, attack, expected = rng.choice(attacks)
            try:
                status = attack()[0]
            except OSError:
                status = 0
            self.note(kind, status, expected)

    def streamed_body(self, size: int) -> tuple[int, bytes]:
        """A body past --max-body (8 MiB) sent in chunks, without a Content-Length."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            sock.sendall(
                f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n".encode()
            )
            piece = b"x" * 2**16
            try:
                for _ in range(size // len(piece) + 1):
                    sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                sock.sendall(b"0\r\n\r\n")
            except OSError:
                pass
            data = b""
            try:
                while chunk := sock.recv(65536):
                    data += chunk
            except OSError:
                pass
        return (int(data.split()[1]) if data.startswith(b"HTTP/1.1 ") else 0), data

    def garbage(self, rng: random.Random) -> tuple[int, bytes]:
        junk = rng.choice([b"\x00\xff" * 50, b"GET / HTTP/9.9\r\n\r\n", b"GET /\x01 HTTP/1.1\r\n\r\n", os.urandom(300)])
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(junk + b"\r\n\r\n")
            data = b""
            try:
                while chunk := sock.recv(65536):
                    data += chunk
            except OSError:
                pass
        return (int(data.split()[1]) if data.startswith(b"HTTP/1.1 ") else 400), data  # closed: refused too

    def slowloris(self, target: int) -> None:
        """Keep up to `target` connections trickling a request head, a byte a second each."""
        head = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nX-Slow: {'a' * 200}\r\n\r\n".encode()
        open_: list[tuple[socket.socket, int]] = []
        while not self.stop.is_set():
            while len(open_) < target and not self.stop.is_set():
                try:
                    sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                except OSError:
                    break
                sock.setblocking(False)
                open_.append((sock, 0))
                with self.lock:
                    self.counts["slow_opened"] += 1
            kept = []
            for sock, sent in open_:
                try:
                    sock.send(head[sent : sent + 1])
                    try:
                        if sock.recv(4096) == b"":
                            raise ConnectionResetError
                    except BlockingIOError:
                        pass
                    kept.append((sock, sent + 1))
                except OSError:  # the server dropped it (408, closed, reset)
                    sock.close()
                    with self.lock:
                        self.counts["slow_dropped"] += 1
            open_ = kept
            self.stop.wait(1.0)
        for sock, _ in open_:
            sock.close()

    # -- the run ----------------------------------------------------------------------

    def attack(self, model: str) -> dict[str, Any]:
        threads = [
            threading.Thread(target=self.legit, args=("echo:upper",)),
            threading.Thread(target=self.legit, args=(model,)),
            threading.Thread(target=self.prober),
            threading.Thread(target=self.slowloris, args=(300,)),
            *[threading.Thread(target=self.hostile, args=(seed,)) for seed in range(3)],
        ]
        for thread in threads:
            thread.start()
        self.stop.wait(self.seconds)
        self.stop.set()
        for thread in threads:
            thread.join(timeout=60)
        lat = sorted(self.health)
        pick = lambda q: round(1000 * lat[min(len(lat) - 1, int(q * len(lat)))], 1) if lat else None  # noqa: E731
        hostile = {
            k: v for k, v in self.counts.items() if k not in ("legit", "no_answer", "slow_opened", "slow_dropped")
        }
        return {
            "seconds": self.seconds,
            "requests": sum(v for k, v in self.counts.items() if not k.startswith("slow")) + len(lat),
            "legit_requests": self.counts["legit"],
            "hostile_requests": sum(hostile.values()),
            "hostile_by_kind": dict(sorted(hostile.items())),
            "health_probes": len(lat) + self.health_failed,
            "health_failed": self.health_failed,
            "health_p50_ms": pick(0.5),
            "health_p99_ms": pick(0.99),
            "health_max_ms": round(1000 * lat[-1], 1) if lat else None,
            "slow_connections_opened": self.counts["slow_opened"],
            "slow_connections_dropped_by_server": self.counts["slow_dropped"],
            "no_answer": self.counts["no_answer"],
            "unexpected": self.unexpected[:20],
        }

    def kill_loop(self, model: str) -> dict[str, Any]:
        from provender import CacheManager

        restarts = []
        for _ in range(self.kills):
            body = json.dumps({"model": model, "prompt": "go", "max_tokens": 10_000, "stream": True}).encode()
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            sock.sendall(
                f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nContent-Length: {len(body)}\r\n"
                "Content-Type: application/json\r\n\r\n".encode()
                + body
            )
            sock.recv(4096)  # the stream started: the model is loaded and generating
            time.sleep(random.uniform(0.05, 0.5))
            self.kill()
            sock.close()
            if CacheManager(self.cache).in_use(model):
                raise AssertionError("a SIGKILLed server left a lease on its model")
            restarts.append(self.start())
        return {
            "kills": self.kills,
            "leases_left": 0,
            "restart_p50_s": round(sorted(restarts)[len(restarts) // 2], 2) if restarts else None,
            "restart_max_s": round(max(restarts), 2) if restarts else None,
        }


def entry_files(cache: Path) -> dict[str, str]:
    from soak_walls import tree_state

    return {k: v for k, v in tree_state(cache / "objects").items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--kills", type=int, default=5)
    args, _ = parser.parse_known_args()  # `tox -e soak -- ...` passes soak.py's options too
    from provender import CacheManager
    from provender_mlx.testing import build_tiny_llama

    root = Path(tempfile.mkdtemp(prefix="provender-soak-serve-"))
    soak = Soak(root, args.seconds, args.kills)
    try:
        os.environ.update({k: v for k, v in soak.env.items() if k.startswith(("PROVENDER_", "HF_HUB_OFFLINE"))})
        cm = CacheManager(soak.cache)
        cm.import_model(build_tiny_llama(root / "tiny", seed=0), "soak/tiny")
        finetune = build_tiny_llama(root / "finetune", seed=1)
        cm.import_model(finetune, "me/finetune", link_mode="move")  # its only copy
        before = entry_files(soak.cache)
        soak.start()
        report: dict[str, Any] = {"nofile": NOFILE, "attack": soak.attack("soak/tiny")}
        print(f"attack: {json.dumps(report['attack'])}", flush=True)
        report["kills"] = soak.kill_loop("soak/tiny")
        print(f"kills: {report['kills']}", flush=True)
        status, body = http(soak.port, "POST", "/v1/chat/completions", json.dumps(CHAT).encode())
        assert status == 200 and b"HELLO SOAK" in body, (status, body)
        soak.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        soak.proc.wait(timeout=30)  # type: ignore[union-attr]
        after = entry_files(soak.cache)
        problems = CacheManager(soak.cache).verify()
        logs = "".join(log.read_text(errors="replace") for log in soak.logs)
        report["cache"] = {
            "entries": sorted(e.name for e in CacheManager(soak.cache).entries()),
            "entry_files_changed": sum(before.get(k) != after.get(k) for k in before.keys() | after.keys()),
            "verify_problems": len(problems),
        }
        report["log"] = {
            "bytes": len(logs),
            "tracebacks": logs.count("Traceback"),
            "flood_lines": logs.count("connection flood"),
        }
        print(f"cache: {report['cache']}, log: {report['log']}", flush=True)
        attack = report["attack"]
        assert not attack["unexpected"], attack["unexpected"]
        assert attack["health_failed"] == 0, "/health did not answer during the attack"
        assert report["cache"]["entry_files_changed"] == 0 and not problems, report["cache"]
        assert report["cache"]["entries"] == ["me/finetune", "soak/tiny"], report["cache"]
        assert report["log"]["tracebacks"] == 0, logs[-3000:]
    finally:
        if soak.proc is not None and soak.proc.poll() is None:
            soak.proc.kill()
            soak.proc.wait()
        if os.environ.get("SOAK_KEEP"):
            print(f"kept {root}", flush=True)
        else:
            shutil.rmtree(root, ignore_errors=True)
    (HERE / "results-soak-serve.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
