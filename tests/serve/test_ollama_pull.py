"""Ollama's ``/api/pull`` from the Hub (tests/fakehub.py: a real HTTP server huggingface_hub downloads
from), driven with the real ``ollama`` package on a real ``provender serve``: the progress grows as the
Hub's files arrive; a name made by ``/api/copy`` is its model, cached (success, nothing downloaded);
an alias whose model was evicted is a 404 naming that model; GGUF's ``repo:QUANT`` pulls that
quantisation only and names the cache entry on the other routes; a client that goes away midway
leaves the pull running into the cache, no half-written entry listed, and the server serving on."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from fakehub import FakeHub

ollama = pytest.importorskip("ollama", reason="tox installs the ollama package (serve's test extra)")

MIB = 1 << 20


def client(server: Any) -> Any:
    return ollama.Client(host=server.url, timeout=120)


def echo_repo(files: int, size: int) -> dict[str, bytes]:
    """An echo model as a Hub repo: its echo.json and `files` weight files of `size` bytes."""
    repo = {"echo.json": json.dumps({"provider": "echo", "mode": "upper"}).encode()}
    repo.update({f"weights-{i}.bin": os.urandom(size) for i in range(files)})
    return repo


def test_a_pull_from_the_hub_streams_its_bytes_as_they_arrive(start_server: Any, fake_hub: FakeHub) -> None:
    from provender import CacheManager

    repo = echo_repo(5, MIB)
    total = sum(len(data) for data in repo.values())
    fake_hub.add("org/hub-echo", repo)
    server = start_server(env={"HF_ENDPOINT": fake_hub.endpoint})
    api = client(server)
    parts = list(api.pull("org/hub-echo", stream=True))
    statuses = [p.status for p in parts]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
    progress = [p for p in parts if p.status.startswith("pulling sha256:")]
    completed = [p.completed for p in progress]
    # told at the start (nothing yet), then after each file's bytes are written: at least five steps up
    assert completed[0] == 0 and completed == sorted(completed) and len(set(completed)) >= 6, completed
    assert completed[-1] == total and all(p.total == total for p in progress)
    assert all(p.digest == progress[0].digest for p in progress) and progress[0].status.endswith(progress[0].digest)
    assert sorted(fake_hub.downloads) == sorted(f"org/hub-echo/{name}" for name in repo)
    assert CacheManager(remote=None).get("org/hub-echo").size == total
    assert api.generate(model="org/hub-echo", prompt="from the hub", stream=False).response == "FROM THE HUB"

    again = list(api.pull("org/hub-echo:latest", stream=True))  # cached: one line of the whole, nothing fetched
    assert [p.completed for p in again if p.status.startswith("pulling sha256:")] == [total]
    assert again[-1].status == "success" and len(fake_hub.downloads) == len(repo)


def test_pulling_an_alias_is_its_cached_model(start_server: Any, fake_hub: FakeHub) -> None:
    from provender import CacheManager

    fake_hub.add("org/hub-echo", echo_repo(2, 1000))
    fake_hub.add("org/other", echo_repo(1, 10))  # a Hub repo the alias's name shadows
    server = start_server(env={"HF_ENDPOINT": fake_hub.endpoint})
    api = client(server)
    assert api.pull("org/hub-echo", stream=False).status == "success"
    for alias in ("shout", "shout:v2", "org/other"):
        api.copy("org/hub-echo", alias)
    size = CacheManager(remote=None).get("org/hub-echo").size
    asked = fake_hub.requests
    for name in ("shout", "shout:latest", "shout:v2", "echo:shout:v2", "org/other"):
        parts = list(api.pull(name, stream=True))
        assert parts[-1].status == "success", (name, parts)
        assert [p.completed for p in parts if p.completed is not None] == [size], name
        assert api.pull(name, stream=False).status == "success", name
    assert fake_hub.requests == asked  # the aliases' model is in the cache: the Hub is never asked
    assert "org/other" not in {e.name for e in CacheManager(remote=None).entries()}
    assert api.chat(model="shout:v2", messages=[{"role": "user", "content": "still"}]).message.content == "STILL"

    # the model evicted (not removed: the aliases stay), a pull of an alias says which model to pull again
    api.generate(model="shout:v2", keep_alive=0)  # unloaded: nothing holds it
    CacheManager(remote=None).prune(0)
    assert CacheManager(remote=None).find("org/hub-echo") is None
    for name in ("shout:v2", "shout"):
        with pytest.raises(ollama.ResponseError) as err:
            list(api.pull(name, stream=True))
        assert err.value.status_code == 404 and "org/hub-echo" in err.value.error, err.value.error
        got, answer = server.raw("POST", "/api/pull", json.dumps({"model": name, "stream": False}).encode())
        assert got == 404 and set(answer) == {"error"} and "org/hub-echo" in answer["error"], answer
    assert fake_hub.requests == asked
    assert api.pull("org/hub-echo", stream=False).status == "success"  # back: its aliases name it again
    assert api.generate(model="shout:v2", prompt="back", stream=False).response == "BACK"


def test_gguf_repo_quant_is_pulled_and_names_the_cache_entry(start_server: Any, fake_hub: FakeHub) -> None:
    fake_hub.add(
        "org/tiny-GGUF",
        {"tiny-Q4_K_M.gguf": b"GGUF" + os.urandom(2000), "tiny-Q8_0.gguf": b"GGUF" + os.urandom(4000)},
    )
    server = start_server(env={"HF_ENDPOINT": fake_hub.endpoint})
    api = client(server)
    parts = list(api.pull("org/tiny-GGUF:Q4_K_M", stream=True))
    assert parts[-1].status == "success"
    assert max(p.completed or 0 for p in parts) == 2004
    assert fake_hub.downloads == ["org/tiny-GGUF/tiny-Q4_K_M.gguf"]  # that quantisation only
    with pytest.raises(ollama.ResponseError) as err:  # on offer? no: a 404 naming the ones there are
        api.pull("org/tiny-GGUF:Q2_K", stream=False)
    assert err.value.status_code == 404 and "Q4_K_M" in err.value.error
    # "org/tiny-GGUF" is no provider: the whole name is the cached entry (here no runtime for GGUF is installed)
    with pytest.raises(ollama.ResponseError) as err:
        api.chat(model="org/tiny-GGUF:Q4_K_M", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 404 and "no installed provider can serve it" in err.value.error
    import openai

    with pytest.raises(openai.NotFoundError, match="no installed provider can serve it"):
        server.client().chat.completions.create(
            model="org/tiny-GGUF:Q4_K_M", messages=[{"role": "user", "content": "x"}]
        )


def read_line(sock: socket.socket, buffer: bytearray) -> bytes:
    while b"\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, bytes(buffer)
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line


def test_a_client_that_goes_away_midway_leaves_the_pull_running(
    start_server: Any, fake_hub: FakeHub, tmp_path: Path
) -> None:
    from provender import CacheManager

    repo = echo_repo(4, MIB)
    total = sum(len(data) for data in repo.values())
    fake_hub.add("org/slow-echo", repo)
    fake_hub.throttle = 0.3  # per 64 KiB: each file takes about 5 s
    server = start_server(env={"HF_ENDPOINT": fake_hub.endpoint})
    body = json.dumps({"model": "org/slow-echo"}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall(
            f"POST /api/pull HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        buffer = bytearray()
        while read_line(sock, buffer).strip():  # the status line and headers
            pass
        seen = []
        while not any(b'"completed"' in s for s in seen):  # chunked: size lines between the NDJSON lines
            seen.append(read_line(sock, buffer))
        assert any(json.loads(s) == {"status": "pulling manifest"} for s in seen if s.startswith(b"{"))
    # gone, while the Hub's bytes still arrive: the server answers others meanwhile, and lists no entry
    api = client(server)
    assert api.chat(model="echo:plain", messages=[{"role": "user", "content": "meanwhile"}]).message.content
    listed = {m.model for m in api.list().models}
    found = CacheManager(remote=None).find("org/slow-echo")
    in_flight = fake_hub.bytes_sent < total
    assert in_flight, "the pull ended before the checks: raise the fake Hub's throttle"
    assert "org/slow-echo" not in listed and found is None
    deadline = time.monotonic() + 90
    while CacheManager(remote=None).find("org/slow-echo") is None:  # the pull goes on into the cache
        assert time.monotonic() < deadline, "the pull did not finish"
        time.sleep(0.2)
    entry = CacheManager(remote=None).get("org/slow-echo")
    assert entry.size == total and not list(entry.path.rglob("*.incomplete"))
    assert not [issue for issue in CacheManager(remote=None).verify() if issue.key == entry.key]
    fake_hub.throttle = 0
    assert api.generate(model="org/slow-echo", prompt="whole", stream=False).response == "WHOLE"
    assert api.pull("org/slow-echo", stream=False).status == "success"
    assert sorted(fake_hub.downloads) == sorted(f"org/slow-echo/{name}" for name in repo)  # each file once
    assert server.proc.poll() is None and server.raw("GET", "/api/version")[0] == 200


def test_routes_that_build_or_share_models_are_ollama_errors(start_server: Any) -> None:
    import urllib.request

    server = start_server()
    api = client(server)
    for call, words in (
        (lambda: api.create(model="mine", from_="echo:plain", stream=False), "Modelfile"),
        (lambda: api.push("echo:plain", stream=False), "registry"),
    ):
        with pytest.raises(ollama.ResponseError) as err:
            call()
        assert err.value.status_code == 404 and isinstance(err.value.error, str) and words in err.value.error
    got, answer = server.raw("POST", "/api/blobs/sha256:" + "0" * 64, b"data")
    assert got == 404 and set(answer) == {"error"} and "Modelfile" in answer["error"]
    probe = urllib.request.Request(server.url + "/api/blobs/sha256:" + "0" * 64, method="HEAD")
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(probe, timeout=30)
    assert missing.value.code == 404
    # a wrong method or an unknown path under Ollama's /api/ is Ollama's shape too; Anthropic's under its own
    for method, path in (("GET", "/api/chat"), ("GET", "/api/nothing")):
        got, answer = server.raw(method, path)
        assert got in (404, 405) and set(answer) == {"error"} and path in answer["error"], (method, path, answer)
    got, answer = server.raw("GET", "/v1/messages")
    assert got == 405 and answer["type"] == "error" and answer["error"]["message"]
    got, answer = server.raw("GET", "/api/provender/unload")  # provender's own /api/ routes: OpenAI's shape
    assert got == 405 and answer["error"]["message"]
    assert api.generate(model="echo:upper", prompt="serving", stream=False).response == "SERVING"
