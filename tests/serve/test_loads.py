"""Loading models in a real `provender serve`: huge keep-alives and failed loads (issue 19 items 2 and 3).

Every test drives a real server process over HTTP and the real `provender ps` / `cache rm` CLI.
The failed loads use real MLX models (a tiny llama written on the spot) made broken on disk;
tests/llamacpp/test_serve_loads.py does the same with a truncated GGUF.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from helpers import run_cli

USER = [{"role": "user", "content": "hello world"}]
HUGE = ["99999999999999999h", 1e300, 10**30, "3651d"]


def _chat(model: str, **extra: Any) -> bytes:
    return json.dumps({"model": model, "messages": USER, "max_tokens": 2, **extra}).encode()


def _listings_answer(server: Any) -> list[dict[str, Any]]:
    """/api/ps, /v1/models and `provender ps` (table and JSON) all answer; the ps rows."""
    status, models = server.raw("GET", "/v1/models")
    assert status == 200, models
    rows = server.ps()
    table = run_cli("ps", env=server.env)
    assert table.returncode == 0, table.stderr
    as_json = run_cli("ps", "--json", env=server.env)
    assert as_json.returncode == 0, as_json.stderr
    assert [r["model"] for r in json.loads(as_json.stdout)] == [r["model"] for r in rows]
    return rows


@pytest.mark.parametrize("value", HUGE)
def test_a_keep_alive_no_clock_can_show_is_a_400_and_every_listing_keeps_answering(
    start_server: Any, value: object
) -> None:
    server = start_server()
    for path in ("/v1/chat/completions", "/v1/completions"):
        body = _chat("echo:upper", keep_alive=value)
        if path == "/v1/completions":
            body = json.dumps({"model": "echo:upper", "prompt": "hi", "keep_alive": value}).encode()
        status, answer = server.raw("POST", path, body, {"Content-Type": "application/json"})
        assert status == 400, answer
        message = answer["error"]["message"]
        assert answer["error"]["param"] == "keep_alive" and message.startswith("keep_alive: ")
        assert "longest duration, 3650d" in message and '"forever"' in message
    status, answer = server.raw(
        "POST",
        "/v1/embeddings",
        json.dumps({"model": "echo:upper", "input": "x", "keep_alive": value}).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 400 and answer["error"]["param"] == "keep_alive", answer
    assert _listings_answer(server) == []  # the refused requests loaded nothing


def test_forever_is_its_own_value_and_shows_as_forever(start_server: Any) -> None:
    server = start_server("--max-models", "3")
    for model, keep in (("echo:upper", "forever"), ("echo:lower", -1e300), ("echo:reverse", "3650d")):
        status, answer = server.raw("POST", "/v1/chat/completions", _chat(model, keep_alive=keep))
        assert status == 200, answer
    rows = {r["model"]: r for r in _listings_answer(server)}
    assert rows["echo:upper"]["keep_alive"] == rows["echo:lower"]["keep_alive"] == -1
    assert rows["echo:upper"]["until"] is None and rows["echo:reverse"]["until"] is not None
    table = run_cli("ps", env=server.env).stdout
    assert table.count("forever") == 2, table
    status, body = server.raw("GET", "/api/ps")
    pool = {r["key"]: r for r in body["pool"]}
    assert status == 200 and pool["echo:upper"]["until"] is None and pool["echo:upper"]["keep_alive"] == -1, body


def test_a_keep_alive_too_long_is_refused_where_it_is_given(start_server: Any) -> None:
    out = run_cli("serve", "--keep-alive", "99999999999999999h", "--port", "0")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "Invalid value for '--keep-alive': '99999999999999999h' is longer than the longest duration" in out.stderr
    for value in ("99999999999999999h", "315360001"):
        out = run_cli("serve", "--port", "0", env={"PROVENDER_MEMORY__KEEP_ALIVE": value})
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert "memory.keep_alive" in out.stderr and "longest duration" in out.stderr, out.stderr
    out = run_cli("config", "--json", env={"PROVENDER_MEMORY__KEEP_ALIVE": "forever"})
    assert out.returncode == 0, out.stderr
    assert "forever" in out.stdout


# -- a failed load (item 3) ------------------------------------------------------------------


@pytest.fixture
def good_and_broken(tiny_model: Path, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """test/good (a working MLX model) in the cache; returns a copy of its files to break."""
    from provender import CacheManager

    monkeypatch.setenv("PROVENDER_CACHE__DIR", str(cache_dir))
    CacheManager().import_model(tiny_model, "test/good")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    return broken


def _after_a_failed_load(server: Any, status: int, answer: dict[str, Any]) -> None:
    """What must hold after the request for test/broken failed: the good model stays, the
    broken one left no row and no lease, and the server keeps serving the good one."""
    from provender import CacheManager

    assert status in (404, 500), answer
    assert "Traceback" not in answer["error"]["message"]
    assert [r["model"] for r in _listings_answer(server)] == ["test/good"]
    assert not CacheManager().in_use("test/broken")
    status, again = server.raw("POST", "/v1/chat/completions", _chat("test/good"))
    assert status == 200, again
    out = run_cli("cache", "rm", "test/broken", "-y", env=server.env)
    assert out.returncode == 0 and "running process" not in out.stderr, out.stderr


def test_a_truncated_model_is_refused_before_it_evicts_anything(start_server: Any, good_and_broken: Path) -> None:
    from provender import CacheManager

    for f in good_and_broken.glob("*.safetensors"):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # a download cut short
    CacheManager().import_model(good_and_broken, "test/broken")
    server = start_server("--max-models", "1")
    status, answer = server.raw("POST", "/v1/chat/completions", _chat("test/good"))
    assert status == 200, answer
    status, answer = server.raw("POST", "/v1/chat/completions", _chat("test/broken"))
    assert status == 404 and answer["error"]["code"] == "model_not_found", answer
    assert "model.safetensors is incomplete" in answer["error"]["message"]
    assert "pull or import it again" in answer["error"]["message"]
    status, ps = server.raw("GET", "/api/ps")
    assert [r["key"] for r in ps["pool"]] == ["mlx:test/good"]  # its weights were never unloaded
    _after_a_failed_load(server, status=404, answer=answer)
    assert "unloaded test/good" not in server.log.read_text()  # the server never let the good one go


def test_a_load_that_fails_past_the_check_leaves_no_slot_and_no_lease(start_server: Any, good_and_broken: Path) -> None:
    from provender import CacheManager

    config = json.loads((good_and_broken / "config.json").read_text())
    config["hidden_size"] = config["hidden_size"] * 2  # whole files, weights of the wrong shape
    (good_and_broken / "config.json").write_text(json.dumps(config))
    CacheManager().import_model(good_and_broken, "test/broken")
    server = start_server("--max-models", "1")
    assert server.raw("POST", "/v1/chat/completions", _chat("test/good"))[0] == 200
    status, answer = server.raw("POST", "/v1/chat/completions", _chat("test/broken"))
    _, ps = server.raw("GET", "/api/ps")
    assert [r["key"] for r in ps["pool"]] == ["mlx:test/good"], ps  # pushed out for it, then loaded back
    _after_a_failed_load(server, status, answer)


# -- models named by a path (item 9) -----------------------------------------------------------


def _ask(server: Any, model: str, key: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    status, answer = server.raw("POST", "/v1/chat/completions", _chat(model), headers)
    return status, answer


def test_with_a_key_paths_are_refused_with_one_answer_whether_they_exist_or_not(
    start_server: Any, tiny_model: Path, tmp_path: Path
) -> None:
    server = start_server(env={"PROVENDER_SERVER__API_KEY": "k"})
    names = {
        str(tiny_model): True,  # a model directory the server can read
        str(tmp_path / "nothing-here"): False,
        "mlx:/etc": True,
        "mlx:/no/such/dir": False,
        "~/": True,
        "./nowhere": False,
    }
    answers = []
    for name in names:
        status, answer = _ask(server, name, "k")
        assert status == 403, (name, answer)
        answers.append((answer["error"]["code"], answer["error"]["message"].replace(repr(name), "NAME")))
    assert len(set(answers)) == 1, answers  # nothing tells what exists on the server's disk
    code, message = answers[0]
    assert code == "path_not_allowed" and "server.local_paths" in message
    assert _ask(server, "echo:upper", "k")[0] == 200  # names that are not paths still work
    assert server.healthy()


def test_without_local_paths_a_relative_name_is_never_read_from_the_working_directory(
    start_server: Any, tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative name that exists from the server's working directory (here: a whole model)
    answers as one that does not: both are looked up in the cache, and neither is loaded."""
    workdir = tmp_path / "cwd"
    shutil.copytree(tiny_model, workdir / "org" / "here")
    monkeypatch.chdir(workdir)
    server = start_server(env={"PROVENDER_SERVER__API_KEY": "k", "HF_HUB_OFFLINE": "1"})
    answers = []
    for name in ("org/here", "org/elsewhere", "mlx:org/here", "mlx:org/elsewhere"):
        status, answer = _ask(server, name, "k")
        message = answer["error"]["message"].replace(name, "NAME").replace(name.removeprefix("mlx:"), "NAME")
        answers.append((status, answer["error"]["code"], message))
    assert answers[0] == answers[1] and answers[2] == answers[3], answers
    assert answers[0][0] == 404, answers
    _, ps = server.raw("GET", "/api/ps", headers={"Authorization": "Bearer k"})
    assert ps["pool"] == [], ps  # the model in the working directory was never loaded


def test_paths_follow_server_local_paths(start_server: Any, tiny_model: Path, tmp_path: Path) -> None:
    missing = str(tmp_path / "nothing-here")
    local = start_server()  # loopback, no key: "auto" allows paths, as before
    assert _ask(local, str(tiny_model))[0] == 200
    status, answer = _ask(local, missing)
    assert status == 404 and answer["error"]["code"] == "model_not_found", answer
    refused = start_server(env={"PROVENDER_SERVER__LOCAL_PATHS": "refuse"})
    assert [_ask(refused, name)[0] for name in (str(tiny_model), missing)] == [403, 403]
    allowed = start_server(env={"PROVENDER_SERVER__API_KEY": "k", "PROVENDER_SERVER__LOCAL_PATHS": "allow"})
    assert _ask(allowed, str(tiny_model), "k")[0] == 200
    listed = start_server("--model", str(tiny_model), env={"PROVENDER_SERVER__API_KEY": "k"})
    assert _ask(listed, str(tiny_model), "k")[0] == 200  # a path the operator listed in server.models
    out = run_cli("serve", "--port", "0", env={"PROVENDER_SERVER__LOCAL_PATHS": "sometimes"})
    assert out.returncode == 2 and "server.local_paths" in out.stderr and "Traceback" not in out.stderr, out.stderr
