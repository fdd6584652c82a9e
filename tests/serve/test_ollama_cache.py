"""Ollama's routes that change the cache, on a real `provender serve`, driven with the real `ollama`
package: ``copy`` makes an alias that chat, generate and ``list`` know, that outlives a rebuilt
index and a restarted server, and whose deletion leaves the model; ``pull`` from a remote tier
streams its progress while the bytes arrive (``completed`` growing over several chunks), then
success, and the model is cached; a pull that fails before its first byte is an HTTP error, one
that fails midway an ``{"error"}`` line; bad input is a 4xx in Ollama's shape while the server serves on."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

ollama = pytest.importorskip("ollama", reason="tox installs the ollama package (serve's test extra)")


def client(server: Any) -> Any:
    return ollama.Client(host=server.url, timeout=120)


def echo_model(tmp_path: Path, name: str, mode: str = "upper", weights: int = 0) -> Path:
    model = tmp_path / name.replace("/", "-")
    model.mkdir()
    (model / "echo.json").write_text(json.dumps({"provider": "echo", "mode": mode}))
    if weights:
        (model / "weights.bin").write_bytes(os.urandom(weights))
    return model


def test_copy_makes_an_alias_that_outlives_a_rebuilt_index(start_server: Any, tmp_path: Path, cache_dir: Path) -> None:
    from provender import CacheManager

    CacheManager().import_model(echo_model(tmp_path, "test/echo"), "test/echo")
    server = start_server()
    api = client(server)
    assert api.copy("test/echo", "shout:v2").status == "success"
    answer = api.chat(model="shout:v2", messages=[{"role": "user", "content": "by the alias"}], stream=False)
    assert answer.message.content == "BY THE ALIAS"
    assert "".join(p.response for p in api.generate(model="shout:v2", prompt="a b", stream=True)) == "A B"
    listed = {m.model: m for m in api.list().models}
    assert {"test/echo", "shout:v2"} <= set(listed) and listed["shout:v2"].digest == listed["test/echo"].digest
    # the OpenAI routes read names by the same colon rule: "shout" and "test/echo" name no provider
    api.copy("shout:v2", "shout")
    openai_client = server.client()
    for model in ("shout", "shout:v2", "shout:latest", "echo:shout:v2", "test/echo:latest"):
        said = openai_client.chat.completions.create(model=model, messages=[{"role": "user", "content": "openai too"}])
        assert said.choices[0].message.content == "OPENAI TOO", model
    api.delete("shout")
    server.stop()

    # the index is unreadable: the next server's cache sets it aside and rebuilds it from the files
    for extra in ("index.db-wal", "index.db-shm"):
        (cache_dir / extra).unlink(missing_ok=True)
    (cache_dir / "index.db").write_bytes(b"garbage, not SQLite" * 20)
    server = start_server()
    api = client(server)
    assert api.chat(model="shout:v2", messages=[{"role": "user", "content": "still"}]).message.content == "STILL"
    assert list(cache_dir.glob("index.db.corrupt-*"))
    with pytest.raises(ollama.ResponseError) as err:  # the model an alias names is not removed from under it
        api.delete("test/echo")
    assert err.value.status_code == 409 and "shout:v2" in err.value.error
    api.delete("shout:v2")  # only the alias goes
    models = {m.model for m in api.list().models}
    assert "shout:v2" not in models and "test/echo" in models
    assert api.generate(model="test/echo", prompt="kept", stream=False).response == "KEPT"
    with pytest.raises(ollama.ResponseError) as err:
        api.chat(model="shout:v2", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 404


def test_bad_copies_are_ollama_errors_and_the_server_serves_on(start_server: Any, tmp_path: Path) -> None:
    from provender import CacheManager

    CacheManager().import_model(echo_model(tmp_path, "test/echo"), "test/echo")
    server = start_server()
    cases: list[tuple[Any, int, str]] = [
        ({"source": "no/such", "destination": "x"}, 404, "no/such"),
        ({"source": "test/echo", "destination": "../../etc"}, 400, "invalid name"),
        ({"source": "test/echo", "destination": "/abs/path"}, 400, "invalid name"),
        ({"source": "test/echo", "destination": "0123abcd"}, 400, "key"),
        ({"source": "test/echo", "destination": "echo:plain"}, 400, "provider"),
        ({"source": "test/echo", "destination": "test/echo"}, 409, "exists"),
        ({"source": "test/echo", "destination": "a\u0430b"}, 400, "invalid name"),
        ({"source": "test/echo", "destination": "x" * 2000}, 400, "destination"),
        ({"source": "test/echo"}, 400, "destination"),
        ({"source": "test/echo", "destination": "y", "extra": 1}, 400, "extra"),
        (b"[1, 2", 400, "JSON"),
    ]
    for body, status, words in cases:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        got, answer = server.raw("POST", "/api/copy", data, {"Content-Type": "application/json"})
        assert got == status, (body, answer)
        assert set(answer) == {"error"} and words in answer["error"], (body, answer)
    assert CacheManager().aliases() == {}
    got, answer = server.raw("DELETE", "/api/delete", json.dumps({"model": "no/alias"}).encode())
    assert got == 404 and set(answer) == {"error"}
    api = client(server)
    api.copy("test/echo", "fine")
    assert api.generate(model="fine", prompt="serving", stream=False).response == "SERVING"


def tier_with(tmp_path: Path, name: str, size: int) -> str:
    """A file:// remote tier holding an imported echo model with `size` bytes of weights."""
    from provender import CacheManager

    url = (tmp_path / "tier").as_uri()
    (tmp_path / "tier").mkdir()
    other = CacheManager(tmp_path / "other-cache", max_size="1GB", remote=url)
    other.import_model(echo_model(tmp_path, name, weights=size), name)
    return url


def test_pull_streams_its_progress_from_the_remote_tier(start_server: Any, tmp_path: Path) -> None:
    from provender import CacheManager

    url = tier_with(tmp_path, "test/big", 6 << 20)  # six chunks of the tier's 1 MiB reads
    server = start_server(env={"PROVENDER_REMOTE__URL": url, "HF_HUB_OFFLINE": "1"})
    api = client(server)
    parts = list(api.pull("test/big", stream=True))
    statuses = [p.status for p in parts]
    assert statuses[0] == "pulling manifest" and statuses[-3:] == [
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    progress = [p for p in parts if p.status.startswith("pulling sha256:")]
    assert len(progress) > 3, statuses
    completed = [p.completed for p in progress]
    assert completed == sorted(completed) and completed[0] < completed[-1] == progress[-1].total >= 6 << 20
    assert progress[0].digest and all(p.digest == progress[0].digest for p in progress)
    assert CacheManager(remote=None).get("test/big").size >= 6 << 20
    assert api.generate(model="test/big", prompt="pulled", stream=False).response == "PULLED"
    again = list(api.pull("test/big", stream=True))  # cached now: one line of the whole, then success
    assert [p.status for p in again][-1] == "success" and any(p.completed for p in again)
    assert api.pull("test/big", stream=False).status == "success"


def test_pull_errors_before_and_during_the_stream(start_server: Any, tmp_path: Path) -> None:
    url = tier_with(tmp_path, "test/bad", 4 << 20)
    blob = max((p for p in (tmp_path / "tier").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes: found corrupt only once every chunk has arrived
    blob.chmod(0o644)
    blob.write_bytes(bytes(data))
    server = start_server(env={"PROVENDER_REMOTE__URL": url, "HF_HUB_OFFLINE": "1"})
    api = client(server)
    with pytest.raises(ollama.ResponseError) as err:  # nothing anywhere: an HTTP error before any line
        list(api.pull("no/such-model", stream=True))
    assert err.value.status_code == 404
    seen: list[Any] = []
    with pytest.raises(ollama.ResponseError) as err:  # corrupt in the tier, the Hub offline: an error line
        for part in api.pull("test/bad", stream=True):
            seen.append(part)
    assert any(p.status.startswith("pulling sha256:") for p in seen) and seen[-1].status != "success"
    assert "test/bad" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        api.pull("test/bad", stream=False)
    assert err.value.status_code >= 400
    got, answer = server.raw("POST", "/api/pull", json.dumps({"model": "../../etc"}).encode())
    assert 400 <= got < 500 and set(answer) == {"error"}
    assert api.list().models is not None and server.raw("GET", "/api/version")[0] == 200  # serving on
