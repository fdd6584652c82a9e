"""The server's walls (issue 19): what a web page, a rebinding DNS name or a connection flood can do.

Every attack is the bytes a browser (or a hostile neighbour) sends, to a real `provender serve`
on 127.0.0.1: a simple cross-origin POST (``text/plain``, no preflight), a preflight, a
``Host: evil.example:PORT`` after DNS rebinding, idle and half-sent requests by the hundred,
and all of it under ``ulimit -n 256``.
"""

from __future__ import annotations

import http.client
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fakehub import FakeHub

CHAT = {"model": "echo:upper", "messages": [{"role": "user", "content": "hello"}]}
EVIL = "http://evil.example"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Limited:
    """A `provender serve` process started here (for a preexec_fn the fixture has not)."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc, self.port, self.log = proc, port, log

    def healthy(self) -> bool:
        try:
            return request(self, "GET", "/health", timeout=10)[0] == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def request(
    server: Any,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> tuple[int, dict[str, str], Any]:
    """One HTTP request with exactly these headers (Host included, when given): status, headers, JSON or bytes."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    headers = dict(headers or {})
    try:
        conn.putrequest(method, path, skip_host="Host" in headers, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        data = response.read()
        got = {k.lower(): v for k, v in response.getheaders()}
    finally:
        conn.close()
    try:
        return response.status, got, json.loads(data)
    except ValueError:
        return response.status, got, data


def forbidden(answer: tuple[int, dict[str, str], Any], code: str) -> None:
    status, headers, body = answer
    assert status == 403, answer
    assert body["error"]["type"] == "permission_error" and body["error"]["code"] == code, body
    assert "access-control-allow-origin" not in headers


def test_a_rebinding_host_is_refused(start_server: Any) -> None:
    server = start_server(env={"PROVENDER_SERVER__ALLOWED_HOSTS": "models.internal,proxy.example:8443"})
    port = server.port
    # what the page at evil.example sees after its name is rebound to 127.0.0.1: its own origin, no Origin
    for host in (f"evil.example:{port}", "evil.example", f"localhost.evil.example:{port}", f"127.0.0.1.nip.io:{port}"):
        forbidden(request(server, "GET", "/v1/models", headers={"Host": host}), "host_not_allowed")
        forbidden(
            request(server, "POST", "/api/unload", b'{"model": null}', {"Host": host, "Content-Type": "text/plain"}),
            "host_not_allowed",
        )
    for host in (f"localhost:{port + 1}", "127.0.0.1", f"models.internal.evil:{port}", "proxy.example:443", "a b"):
        forbidden(request(server, "GET", "/v1/models", headers={"Host": host}), "host_not_allowed")
    # the server's own names, the loopback addresses, and the configured ones
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}", f"127.0.0.2:{port}"):
        assert request(server, "GET", "/v1/models", headers={"Host": host})[0] == 200, host
    for host in (f"models.internal:{port}", "models.internal", "proxy.example:8443"):
        assert request(server, "GET", "/v1/models", headers={"Host": host})[0] == 200, host
    assert server.proc.poll() is None


def test_a_simple_cross_origin_post_is_refused_before_any_work(start_server: Any) -> None:
    server = start_server()
    body = json.dumps(CHAT).encode()
    # a page's fetch(url, {method: "POST", body}) with a string body: text/plain, no preflight
    for content_type in ("text/plain;charset=UTF-8", "application/x-www-form-urlencoded", "multipart/form-data"):
        answer = request(server, "POST", "/v1/chat/completions", body, {"Origin": EVIL, "Content-Type": content_type})
        forbidden(answer, "origin_not_allowed")
        assert answer[1]["vary"] == "Origin"
    for origin in ("null", "https://evil.example", f"http://localhost:{server.port}.evil.example", "http://localhost"):
        forbidden(request(server, "POST", "/v1/chat/completions", body, {"Origin": origin}), "origin_not_allowed")
    forbidden(request(server, "GET", "/api/ps", headers={"Origin": EVIL}), "origin_not_allowed")
    # a no-cors GET (an <img>, a <script>) carries no Origin, but says where it comes from
    forbidden(request(server, "GET", "/v1/models", headers={"Sec-Fetch-Site": "cross-site"}), "cross_origin")
    # refused before the body is read: a declared body that never comes is not waited for
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nOrigin: {EVIL}\r\n"
            "Content-Type: text/plain\r\nContent-Length: 100000\r\n\r\n{".encode()
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 403 ")
    assert server.ps() == []  # nothing was loaded for any of them


def test_preflight_and_cors_for_allowed_origins(start_server: Any) -> None:
    server = start_server(env={"PROVENDER_SERVER__ORIGINS": "https://app.example,https://*.tools.example"})
    own = f"http://127.0.0.1:{server.port}"
    allowed = (own, f"http://localhost:{server.port}", "vscode-webview://1234abcd", "app://x", "https://app.example")
    for origin in (*allowed, "https://ide.tools.example"):
        status, headers, _ = request(
            server,
            "OPTIONS",
            "/v1/chat/completions",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os",
            },
        )
        assert status == 204, origin
        assert headers["access-control-allow-origin"] == origin and headers["vary"] == "Origin"
        assert "POST" in headers["access-control-allow-methods"]
        assert headers["access-control-allow-headers"] == "authorization, content-type, x-stainless-os"
        status, headers, body = request(
            server, "POST", "/v1/chat/completions", json.dumps(CHAT).encode(), {"Origin": origin}
        )
        assert status == 200 and body["choices"][0]["message"]["content"] == "HELLO", origin
        assert headers["access-control-allow-origin"] == origin and headers["vary"] == "Origin"
    for origin in (EVIL, "https://app.example.evil", "https://tools.example", "null"):
        answer = request(
            server,
            "OPTIONS",
            "/v1/chat/completions",
            headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        )
        forbidden(answer, "origin_not_allowed")


def test_requests_without_an_origin_keep_working(start_server: Any) -> None:
    server = start_server()
    body = json.dumps(CHAT).encode()
    # Ollama's documented `curl -d '{...}'` sends application/x-www-form-urlencoded: it is still JSON here
    for content_type in (None, "application/x-www-form-urlencoded", "text/plain", "application/json"):
        headers = {"Content-Type": content_type} if content_type else {}
        status, got, answer = request(server, "POST", "/v1/chat/completions", body, headers)
        assert status == 200 and answer["choices"][0]["message"]["content"] == "HELLO", content_type
        assert got["vary"] == "Origin" and "access-control-allow-origin" not in got
    # a user's own browser tab typing the URL: Sec-Fetch-Site none
    assert request(server, "GET", "/health", headers={"Sec-Fetch-Site": "none"})[0] == 200
    assert server.client().chat.completions.create(**CHAT).choices[0].message.content == "HELLO"


@pytest.fixture
def hub_with_tiny(tiny_model: Path) -> Any:
    hub = FakeHub()
    hub.add("org/tiny", {p.name: p.read_bytes() for p in tiny_model.iterdir()})
    yield hub
    hub.close()


def test_the_original_attack_pulls_and_unloads_nothing(
    start_server: Any, hub_with_tiny: FakeHub, cached_tiny: str, cache_dir: Path
) -> None:
    """A page's fetch() of a chat naming `mlx:org/tiny` made the server pull it (and the pull evicted a model)."""
    from provender import CacheManager

    hub = hub_with_tiny
    env = {"HF_ENDPOINT": hub.endpoint, "PROVENDER_SERVER__ORIGINS": "https://app.example"}
    server = start_server(env=env)
    client = server.client()
    client.chat.completions.create(model=cached_tiny, messages=CHAT["messages"], max_tokens=2)  # a model in use
    before = {e.name for e in CacheManager().entries()}
    attack = json.dumps({**CHAT, "model": "mlx:org/tiny", "max_tokens": 2}).encode()
    forbidden(
        request(server, "POST", "/v1/chat/completions", attack, {"Origin": EVIL, "Content-Type": "text/plain"}),
        "origin_not_allowed",
    )
    unload = b'{"model": null}'
    forbidden(
        request(server, "POST", "/api/unload", unload, {"Origin": EVIL, "Content-Type": "text/plain"}),
        "origin_not_allowed",
    )
    forbidden(
        request(server, "POST", "/api/unload", unload, {"Host": f"evil.example:{server.port}"}), "host_not_allowed"
    )
    # an allowed page may use cached models, but not make the server download one (server.pull)
    status, _, answer = request(server, "POST", "/v1/chat/completions", attack, {"Origin": "https://app.example"})
    assert status == 403 and answer["error"]["code"] == "pull_not_allowed", answer
    assert "server.pull" in answer["error"]["message"]
    for path in ("/v1/completions", "/v1/embeddings"):
        body = (
            {"model": "mlx:org/tiny", "prompt": "x"}
            if "completions" in path
            else {"model": "mlx:org/tiny", "input": "x"}
        )
        status, _, answer = request(server, "POST", path, json.dumps(body).encode(), {"Origin": "https://app.example"})
        assert status == 403 and answer["error"]["code"] == "pull_not_allowed", answer
    assert hub.requests == 0 and {e.name for e in CacheManager().entries()} == before
    assert [r["model"] for r in server.ps()] == [cached_tiny]  # not unloaded
    # the same request from curl (no Origin) is the user's own: it pulls, as before
    status, _, answer = request(server, "POST", "/v1/chat/completions", attack, {"Content-Type": "application/json"})
    assert status == 200, answer
    assert hub.requests > 0 and "org/tiny" in {e.name for e in CacheManager().entries()}


def test_pull_never_refuses_every_download(start_server: Any, hub_with_tiny: FakeHub, cached_tiny: str) -> None:
    server = start_server(env={"HF_ENDPOINT": hub_with_tiny.endpoint, "PROVENDER_SERVER__PULL": "never"})
    client = server.client()
    import openai

    with pytest.raises(openai.PermissionDeniedError, match=r"server\.pull"):
        client.chat.completions.create(model="mlx:org/tiny", messages=CHAT["messages"], max_tokens=2)
    assert hub_with_tiny.requests == 0
    # cached models, local paths and a provider's own names still load
    assert client.completions.create(model=f"mlx:{cached_tiny}", prompt="hi", max_tokens=2).choices[0].text is not None
    assert client.chat.completions.create(**CHAT).choices[0].message.content == "HELLO"


def test_a_non_ascii_api_key_matches_a_client_sending_utf8(start_server: Any) -> None:
    key = "clé-ключ-🔑"
    server = start_server(env={"PROVENDER_SERVER__API_KEY": key})
    attempts = ((key.encode(), 200), (b"wrong", 401), (key.encode()[:-1], 401), ("clé".encode("latin-1"), 401))
    for sent, status in attempts:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(
                f"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nConnection: close\r\n".encode()
                + b"Authorization: Bearer "
                + sent
                + b"\r\n\r\n"
            )
            assert sock.makefile("rb").readline().split()[1] == str(status).encode(), sent


def test_a_lone_surrogate_or_malformed_body_is_a_400(start_server: Any) -> None:
    server = start_server()
    for raw in (
        b'{"model": "echo:upper", "messages": [{"role": "user", "content": "\\ud800"}]}',
        b'{"model": "echo:upper", "messages": [{"role": "user", "content": "a\\udfffb"}]}',
        b'{"model": "echo:upper\\ud83d", "messages": [{"role": "user", "content": "x"}]}',
        b'{"model": "echo:upper", "messages": [{"role": "user", "content": "x", "\\ud800": 1}]}',
    ):
        status, _, answer = request(server, "POST", "/v1/chat/completions", raw, {"Content-Type": "application/json"})
        assert status == 400 and answer["error"]["code"] == "invalid_text", (raw, answer)
    status, _, answer = request(
        server, "POST", "/v1/completions", b'{"model": "echo:upper", "prompt": "\\ud800", "stream": true}'
    )
    assert status == 400 and "surrogate" in answer["error"]["message"]
    for raw in (b"\xff\xfe{}", b'{"model": "echo:upper", "messages": [{"role": "user", "content": "\xc3"}]}'):
        status, _, answer = request(server, "POST", "/v1/chat/completions", raw)
        assert status == 400 and answer["error"]["code"] == "invalid_json", (raw, answer)
    status, _, answer = request(server, "POST", "/v1/embeddings", b'{"model": "echo:upper", "input": ["\\udc80"]}')
    assert status == 400 and answer["error"]["param"] == "input.0"
    assert "Traceback" not in server.log.read_text()
    assert server.client().chat.completions.create(**CHAT).choices[0].message.content == "HELLO"


def banner(server: Any) -> str:
    deadline = time.monotonic() + 60
    while "listening" not in (text := server.log.read_text()):
        assert time.monotonic() < deadline and server.proc.poll() is None, text
        time.sleep(0.1)
    return text


def test_the_banner_shows_the_bound_address(start_server: Any) -> None:
    wildcard = start_server("--host", "0.0.0.0")
    text = banner(wildcard)
    assert f"http://0.0.0.0:{wildcard.port}" in text and f"http://127.0.0.1:{wildcard.port}" in text
    assert "warning" in text  # reachable from other machines, without a key
    hosts = ["127.1", "127.0.0.5", "localhost"]
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
        hosts.append("::1")
    except OSError:
        pass
    for host in hosts:
        text = banner(start_server("--host", host, wait=False))
        assert "warning" not in text, (host, text)  # loopback, however it is spelt
        assert "listening on http://127.0.0." in text or "listening on http://[::1]:" in text, text
    assert "http://127.0.0.1:" in banner(start_server("--host", "127.1", wait=False))  # the address, not "127.1"


# -- connection floods ---------------------------------------------------------------------


def partial_connections(port: int, n: int) -> list[socket.socket]:
    """`n` connections: a third silent, a third mid-request line, a third mid-headers."""
    socks = []
    for i in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall([b"", b"GET /heal", b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "][i % 3])
        socks.append(sock)
    return socks


def closed(sock: socket.socket) -> bool:
    """Whether the server closed `sock` (EOF, after any 408 it sent)."""
    sock.settimeout(30)
    try:
        while data := sock.recv(4096):
            assert data.startswith(b"HTTP/1.1 408") or data.startswith(b"HTTP/1.1 503"), data
    except ConnectionResetError:
        pass
    return True


def test_connections_that_send_no_complete_head_are_dropped(start_server: Any) -> None:
    server = start_server(env={"PROVENDER_SERVER__HEADER_TIMEOUT": "1.5"})
    started = time.monotonic()
    socks = partial_connections(server.port, 60)
    # a kept-alive connection that starts its next request and stalls
    keep = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    keep.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
    reader = keep.makefile("rb")
    assert reader.readline().startswith(b"HTTP/1.1 200")
    length = 0
    while (line := reader.readline()) != b"\r\n":
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    reader.read(length)
    keep.sendall(b"GET /health HTTP/1.1\r\n")
    assert server.healthy()  # served meanwhile
    assert all(closed(sock) for sock in [*socks, keep])
    took = time.monotonic() - started
    assert 1.4 < took < 10, took
    for sock in socks:
        sock.close()
    keep.close()
    assert server.healthy()
    log = server.log.read_text()
    assert log.count("connection flood") == 1 and "Traceback" not in log, log


def start_limited(tmp_path: Path, cache_dir: Path, nofile: int, env: dict[str, str]) -> Limited:
    """A server in a process whose file-descriptor limit is `nofile` (``ulimit -n``)."""
    port = free_port()
    full_env = {
        **os.environ,
        "PROVENDER_CACHE__DIR": str(cache_dir),
        "PROVENDER_DATA__DIR": str(tmp_path / "data"),
        "PROVENDER_QUIET_PLUGIN_ERRORS": "1",
        "PROVENDER_SERVER__PORT": str(port),
        **env,
    }
    log = tmp_path / f"limited-{port}.log"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "provender", "serve"],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=limit,
        )
    server = Limited(proc, port, log)
    deadline = time.monotonic() + 60
    while not server.healthy():
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            pytest.fail(f"the server did not start: {log.read_text()}")
        time.sleep(0.1)
    return server


def test_a_flood_under_a_low_file_limit_keeps_health_answering(tmp_path: Path, cache_dir: Path) -> None:
    """300 idle and half-sent connections against `ulimit -n 256`, with an API key: /health answers
    throughout, the flood is one log line, and the connections are dropped after the timeout."""
    env = {"PROVENDER_SERVER__API_KEY": "k", "PROVENDER_SERVER__HEADER_TIMEOUT": "3"}
    server = start_limited(tmp_path, cache_dir, 256, env)
    socks: list[socket.socket] = []
    try:
        socks = partial_connections(server.port, 300)  # past the automatic cap (128 under 256 descriptors)
        for _ in range(5):
            assert server.healthy()  # room is made by closing the oldest idle connection
        status, _, body = request(server, "GET", "/v1/models", headers={"Authorization": "Bearer k"})
        assert status == 200, body
        assert all(closed(sock) for sock in socks)
        assert server.healthy()
        log = server.log.read_text()
        assert "Traceback" not in log and len(log) < 2000, log
        assert log.count("connection flood") == 1, log
        assert server.proc.poll() is None
    finally:
        for sock in socks:
            sock.close()
        server.stop()


def test_a_flood_past_the_file_limit_is_logged_once(tmp_path: Path, cache_dir: Path) -> None:
    """With the cap above the file limit (a misconfiguration), accept() runs out of descriptors:
    that is counted in one line, not a traceback a second, and the server answers once they go."""
    env = {"PROVENDER_SERVER__HEADER_TIMEOUT": "2", "PROVENDER_SERVER__MAX_CONNECTIONS": "1000"}
    server = start_limited(tmp_path, cache_dir, 128, env)
    socks: list[socket.socket] = []
    try:
        for _ in range(200):
            try:
                sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            except OSError:
                break
            socks.append(sock)
        time.sleep(4)  # the timeout drops the accepted ones; the backlog is accepted as descriptors free up
        for sock in socks:
            closed(sock)
            sock.close()
        deadline = time.monotonic() + 20
        while not server.healthy():
            assert time.monotonic() < deadline, server.log.read_text()
            time.sleep(0.2)
        log = server.log.read_text()
        assert "Traceback" not in log and len(log) < 2000, log
        assert server.proc.poll() is None
    finally:
        for sock in socks:
            sock.close()
        server.stop()
