"""Real `provender serve` processes on free loopback ports, driven with the real `openai` package."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("provender_serve", reason="install packages/serve (tox does)")
openai = pytest.importorskip("openai", reason="the server tests drive it with the openai package (tox installs it)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running server process; `env` is what a CLI process needs to find it."""

    proc: subprocess.Popen[bytes]
    port: int
    env: dict[str, str]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, api_key: str = "unused", **kwargs: Any) -> Any:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=120, **kwargs)

    def raw(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        """A hand-built request (for bodies the openai package would never send): (status, JSON)."""
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def ps(self) -> list[dict[str, Any]]:
        status, body = self.raw("GET", "/api/ps", headers=self._auth())
        assert status == 200, body
        return list(body["models"])

    def _auth(self) -> dict[str, str]:
        key = self.env.get("PROVENDER_SERVER__API_KEY")
        return {"Authorization": f"Bearer {key}"} if key else {}

    def healthy(self) -> bool:
        try:
            return self.raw("GET", "/health")[1].get("service") == "provender"
        except (OSError, ValueError):
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


StartServer = Callable[..., Server]


@pytest.fixture
def start_server(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StartServer]:
    """start_server(*serve_args, env={...}) -> a healthy `provender serve` on a free port."""
    monkeypatch.setenv("PROVENDER_CACHE__DIR", str(cache_dir))
    monkeypatch.setenv("PROVENDER_DATA__DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PROVENDER_QUIET_PLUGIN_ERRORS", "1")
    servers: list[Server] = []

    def start(*args: str, env: dict[str, str] | None = None, wait: bool = True) -> Server:
        # The free port is only free when chosen: another test (pytest -n runs two at once) may
        # take it before this server binds it. A server that could not listen on a port this
        # fixture chose is started again on another; one told its port is not.
        chosen = wait and "--port" not in args and "PROVENDER_SERVER__PORT" not in (env or {})
        for _ in range(3):
            server = launch(*args, env=env, wait=wait)
            if not (chosen and server.proc.poll() is not None and "cannot listen" in server.log.read_text()):
                break
        if wait and server.proc.poll() is not None:
            pytest.fail(f"the server did not start: {server.log.read_text()}")
        return server

    def launch(*args: str, env: dict[str, str] | None, wait: bool) -> Server:
        port = free_port()
        full_env = {**os.environ, "PROVENDER_SERVER__PORT": str(port), **(env or {})}
        log = tmp_path / f"server-{port}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "provender", "serve", *args], env=full_env, stdout=out, stderr=subprocess.STDOUT
            )
        server = Server(proc, port, {k: v for k, v in full_env.items() if k.startswith("PROVENDER_")}, log)
        servers.append(server)
        deadline = time.monotonic() + 60
        while wait and proc.poll() is None and not server.healthy():
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not start: {log.read_text()}")
            time.sleep(0.1)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mlx_lm", reason="the MLX tests need mlx-lm (tox installs it)")
    from provender_mlx.testing import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama", seed=0)


@pytest.fixture(scope="session")
def endless_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real MLX model that never stops generating (for disconnects and full queues)."""
    pytest.importorskip("mlx_lm", reason="the MLX tests need mlx-lm (tox installs it)")
    from provender_mlx.testing import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("models") / "endless", constant_token="<tool_call>")


@pytest.fixture
def cached_tiny(tiny_model: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The tiny MLX model imported into the test's cache as test/tiny."""
    from provender import CacheManager

    monkeypatch.setenv("PROVENDER_CACHE__DIR", str(cache_dir))
    CacheManager().import_model(tiny_model, "test/tiny")
    return "test/tiny"


@pytest.fixture
def make_script(tmp_path: Path) -> Callable[..., str]:
    """make_script(["reply", ...]) -> a `scripted:` model answering them in turn
    (tests/plugins/provender-scripted)."""
    from importlib import metadata

    if "scripted" not in {ep.name for ep in metadata.entry_points(group="provender")}:
        pytest.skip("install tests/plugins/provender-scripted (tox does)")

    def make(replies: list[str], name: str = "script") -> str:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"replies": replies}))
        return f"scripted:{path}"

    return make
