"""The server under bad input, load, disconnects and SIGKILL: it answers 4xx/5xx and keeps serving."""

from __future__ import annotations

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

openai = pytest.importorskip("openai", reason="the server tests drive it with the openai package (tox installs it)")

USER = [{"role": "user", "content": "hello world"}]


def _chat(model: str = "echo:upper", **extra: Any) -> bytes:
    return json.dumps({"model": model, "messages": USER, **extra}).encode()


BAD_REQUESTS = [
    # (what, path, body, status, code)
    ("malformed JSON", "/v1/chat/completions", b'{"model": "echo:upper", "messages": [', 400, "invalid_json"),
    ("not an object", "/v1/chat/completions", b"[1, 2]", 400, "invalid_body"),
    ("NaN", "/v1/chat/completions", _chat().replace(b"}", b', "temperature": NaN}', 1)[:-1] + b"}", 400, None),
    ("unknown field", "/v1/chat/completions", _chat(frobnicate=True), 400, "unknown_field"),
    (
        "unknown message field",
        "/v1/chat/completions",
        json.dumps({"model": "echo:upper", "messages": [{"role": "user", "content": "x", "x": 1}]}).encode(),
        400,
        "unknown_field",
    ),
    ("wrong type", "/v1/chat/completions", _chat(max_tokens="10"), 400, "invalid_type"),
    ("wrong role", "/v1/chat/completions", _chat().replace(b'"user"', b'"robot"'), 400, "invalid_type"),
    ("no messages", "/v1/chat/completions", json.dumps({"model": "echo:upper", "messages": []}).encode(), 400, None),
    ("missing model", "/v1/chat/completions", json.dumps({"messages": USER}).encode(), 400, "missing_field"),
    ("absurd max_tokens", "/v1/chat/completions", _chat(max_tokens=10**12), 400, "invalid_value"),
    ("zero max_tokens", "/v1/chat/completions", _chat(max_tokens=0), 400, None),
    ("temperature out of range", "/v1/chat/completions", _chat(temperature=7), 400, None),
    ("n > 1", "/v1/chat/completions", _chat(n=3), 400, None),
    ("unknown model", "/v1/chat/completions", _chat("nosuch/model"), 404, "model_not_found"),
    ("unknown provider", "/v1/chat/completions", _chat("nosuch:model"), 404, "model_not_found"),
    ("../ name", "/v1/chat/completions", _chat("../../etc/passwd"), 400, "invalid_model"),
    ("provider ../ name", "/v1/chat/completions", _chat("mlx:a/../../b"), 400, "invalid_model"),
    ("bad keep_alive", "/v1/chat/completions", _chat(keep_alive="soon"), 400, "invalid_value"),
    ("oversized body", "/v1/chat/completions", _chat(pad="x" * 70_000), 413, "too_large"),
    ("embedding tokens", "/v1/embeddings", json.dumps({"model": "echo:upper", "input": [[1, 2]]}).encode(), 400, None),
    (
        "embeddings unsupported",
        "/v1/embeddings",
        json.dumps({"model": "echo:upper", "input": "x"}).encode(),
        400,
        "unsupported",
    ),
    (
        "completion prompt list",
        "/v1/completions",
        json.dumps({"model": "echo:upper", "prompt": ["a", "b"]}).encode(),
        400,
        None,
    ),
]


def test_every_bad_input_gets_its_4xx_and_the_server_keeps_serving(start_server: Any) -> None:
    server = start_server("--max-body", "64KiB")
    client = server.client()
    for what, path, body, status, code in BAD_REQUESTS:
        got, answer = server.raw("POST", path, body, {"Content-Type": "application/json"})
        assert got == status, (what, answer)
        error = answer["error"]
        assert error["message"] and error["type"], what
        if code is not None:
            assert error["code"] == code, (what, error)
        # still serving
        assert (
            client.chat.completions.create(model="echo:upper", messages=USER).choices[0].message.content
            == "HELLO WORLD"
        )
    # the same errors through the openai package raise its typed exceptions
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nosuch/model", messages=USER)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model="echo:upper", messages=USER, max_tokens=10**9)
    with pytest.raises(openai.BadRequestError, match="unknown field"):
        client.chat.completions.create(model="echo:upper", messages=USER, extra_body={"bogus": 1})
    assert server.raw("GET", "/v1/nothing")[0] == 404
    status, answer = server.raw("GET", "/v1/chat/completions")
    assert status == 405 and answer["error"]["message"]
    assert server.proc.poll() is None


def test_a_provider_that_raises_fails_only_its_request(start_server: Any, make_script: Any) -> None:
    broken = make_script([], name="empty")  # indexing an empty script raises IndexError in the provider
    client = start_server().client()
    with pytest.raises(openai.InternalServerError, match="IndexError"):
        client.chat.completions.create(model=broken, messages=USER)
    with pytest.raises(openai.APIError, match="IndexError"):
        list(client.chat.completions.create(model=broken, messages=USER, stream=True))
    assert client.chat.completions.create(model="echo:upper", messages=USER).choices[0].message.content == "HELLO WORLD"


def test_allow_list(start_server: Any) -> None:
    server = start_server(env={"PROVENDER_SERVER__MODELS": "echo:upper,echo:reverse"})
    client = server.client()
    assert client.chat.completions.create(model="echo:upper", messages=USER).choices[0].message.content == "HELLO WORLD"
    with pytest.raises(openai.PermissionDeniedError, match=r"server\.models"):
        client.chat.completions.create(model="echo:lower", messages=USER)
    assert {m.id for m in client.models.list().data} == {"echo:upper", "echo:reverse"}
    assert [r["model"] for r in server.ps()] == ["echo:upper"]  # nothing outside the list was loaded


def test_api_key(start_server: Any) -> None:
    from helpers import run_cli

    server = start_server(env={"PROVENDER_SERVER__API_KEY": "s3cret"})
    with pytest.raises(openai.AuthenticationError):
        server.client().chat.completions.create(model="echo:upper", messages=USER)
    with pytest.raises(openai.AuthenticationError):
        server.client("wrong").models.list()
    assert server.client("s3cret").chat.completions.create(model="echo:upper", messages=USER).choices[0].message.content
    assert server.raw("GET", "/health")[0] == 200  # open, so clients can find the server
    assert server.raw("GET", "/api/ps")[0] == 401
    out = run_cli("generate", "-m", "echo:lower", "THROUGH THE SERVER", env=server.env)  # the CLI sends the key
    assert out.returncode == 0 and out.stdout.strip() == "through the server", out.stderr
    assert "echo:lower" in [r["model"] for r in server.ps()]


def test_keep_alive_unloading_seen_through_ps(start_server: Any, cached_tiny: str) -> None:
    from helpers import run_cli

    server = start_server("--keep-alive", "5s")  # room for two CLI runs on a loaded machine (pytest -n 2)
    client = server.client()
    client.chat.completions.create(model=cached_tiny, messages=USER, max_tokens=2)
    client.chat.completions.create(model="echo:upper", messages=USER, extra_body={"keep_alive": -1})
    out = run_cli("ps", "--json", env=server.env)
    rows = {r["model"]: r for r in json.loads(out.stdout)}
    assert rows[cached_tiny]["provider"] == "mlx" and rows[cached_tiny]["until"] is not None
    assert rows["echo:upper"]["until"] is None  # kept forever, as the request asked
    assert rows[cached_tiny]["prompt_cache_bytes"] > 0  # the chat's KV state, kept for its next turn
    assert rows["echo:upper"]["prompt_cache_bytes"] is None  # echo keeps no prompt cache
    table = run_cli("ps", env=server.env).stdout
    assert "echo:upper" in table and "PROMPT CACHE" in table.splitlines()[0]
    deadline = time.monotonic() + 20
    while cached_tiny in [r["model"] for r in server.ps()]:
        assert time.monotonic() < deadline, "the idle model was not unloaded"
        time.sleep(0.2)
    assert [r["model"] for r in json.loads(run_cli("ps", "--json", env=server.env).stdout)] == ["echo:upper"]
    from provender import CacheManager

    assert not CacheManager().in_use(cached_tiny)  # its lease went with it
    # keep_alive 0 unloads right after the request; `provender stop` unloads on demand
    client.chat.completions.create(model="echo:lower", messages=USER, extra_body={"keep_alive": 0})
    assert "echo:lower" not in [r["model"] for r in server.ps()]
    out = run_cli("stop", "echo:upper", env=server.env)
    assert out.returncode == 0 and "echo:upper" in out.stdout
    assert server.ps() == []
    out = run_cli("stop", "echo:upper", env=server.env)
    assert out.returncode == 1 and "not loaded" in out.stderr


def test_ps_and_stop_say_how_to_find_a_server_on_another_port(start_server: Any) -> None:
    import socket

    from helpers import run_cli

    server = start_server()
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        unused = probe.getsockname()[1]
    elsewhere = {**server.env, "PROVENDER_SERVER__PORT": str(unused)}
    for command in (("ps",), ("stop", "--all")):
        out = run_cli(*command, env=elsewhere)
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        assert "no provender server answers at" in out.stderr and "PROVENDER_SERVER__PORT" in out.stderr
    out = run_cli("ps", env=server.env)  # the server's own port: found
    assert out.returncode == 0 and f":{server.port}" in out.stdout, out.stderr


def test_max_models(start_server: Any) -> None:
    server = start_server("--max-models", "2")
    client = server.client()
    for model in ("echo:upper", "echo:lower", "echo:reverse"):
        client.chat.completions.create(model=model, messages=USER)
    deadline = time.monotonic() + 10
    while len(server.ps()) > 2:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert {r["model"] for r in server.ps()} == {"echo:lower", "echo:reverse"}  # the least recently used went


def test_disconnect_mid_stream_stops_generation(start_server: Any, endless_model: Path) -> None:
    server = start_server("--queue-size", "1", "--max-tokens-limit", "100000000")
    client = server.client()
    model = str(endless_model)
    stream = client.completions.create(model=model, prompt="go", max_tokens=100_000_000, stream=True)
    for n, _ in enumerate(stream):
        if n == 5:
            break
    assert server.ps()[0]["busy"]
    # the queue: one request waits for the busy model, the next one is refused with 503
    waiting: list[Any] = []
    waiter = threading.Thread(
        target=lambda: waiting.append(client.completions.create(model=model, prompt="go", max_tokens=3))
    )
    waiter.start()
    deadline = time.monotonic() + 10
    while server.ps()[0]["queued"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with pytest.raises(openai.APIStatusError) as refused:
        client.completions.create(model=model, prompt="go", max_tokens=3)
    assert refused.value.status_code == 503
    stream.close()  # the client goes away: 10^8 tokens would take days
    waiter.join(timeout=30)
    assert not waiter.is_alive() and waiting[0].choices[0].text, "the generation went on after the disconnect"
    assert not server.ps()[0]["busy"]


def test_eight_concurrent_clients(start_server: Any, cached_tiny: str, make_script: Any) -> None:
    server = start_server("--max-models", "3")  # the three models stay loaded throughout
    client = server.client()
    scripted = make_script(["scripted answer, chunked"])
    prompts = [f"prompt number {i} for the tiny model" for i in range(8)]
    expected = {
        p: client.completions.create(model=cached_tiny, prompt=p, max_tokens=16).choices[0].text for p in prompts
    }

    def work(i: int) -> None:
        c = server.client()
        for round_ in range(3):
            words = f"client {i} round {round_}"
            echo = c.chat.completions.create(model="echo:upper", messages=[{"role": "user", "content": words}])
            assert echo.choices[0].message.content == words.upper()
            prompt = prompts[(i + round_) % 8]
            if (i + round_) % 2:
                text = c.completions.create(model=cached_tiny, prompt=prompt, max_tokens=16).choices[0].text
            else:
                chunks = c.completions.create(model=cached_tiny, prompt=prompt, max_tokens=16, stream=True)
                text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
            assert text == expected[prompt]
            streamed = c.chat.completions.create(model=scripted, messages=USER, stream=True)
            assert (
                "".join(ch.choices[0].delta.content or "" for ch in streamed if ch.choices)
                == "scripted answer, chunked"
            )

    with ThreadPoolExecutor(8) as pool:
        for future in [pool.submit(work, i) for i in range(8)]:
            future.result()
    assert {r["model"]: r["requests"] for r in server.ps()}[cached_tiny] == 8 + 8 * 3


def test_sigkilled_server_leaves_no_lease(start_server: Any, cached_tiny: str) -> None:
    from helpers import run_cli
    from provender import CacheManager

    server = start_server()
    server.client().completions.create(model=cached_tiny, prompt="hi", max_tokens=2)
    assert CacheManager().in_use(cached_tiny)
    out = run_cli("cache", "rm", cached_tiny, "-y")
    assert out.returncode != 0  # in use by the server
    server.stop(signal.SIGKILL)
    assert server.proc.returncode == -signal.SIGKILL
    assert not CacheManager().in_use(cached_tiny)
    assert run_cli("cache", "rm", cached_tiny, "-y").returncode == 0


def test_cli_sends_work_to_a_running_server(start_server: Any, make_script: Any) -> None:
    from helpers import run_cli

    out = run_cli("ps")
    assert out.returncode == 1 and "no provender server" in out.stderr
    server = start_server()
    out = run_cli("generate", "-m", "echo:upper", "via the server", "--stream", env=server.env)
    assert out.returncode == 0 and out.stdout.strip() == "VIA THE SERVER", out.stderr
    out = run_cli("generate", "-m", "echo:lower", "IN PROCESS", "--no-server", env=server.env)
    assert out.returncode == 0 and out.stdout.strip() == "in process"
    assert [r["model"] for r in server.ps()] == ["echo:upper"]  # --no-server did not touch the server
    model = make_script(['<tool_call>{"name": "shout", "arguments": {"text": "hi"}}</tool_call>', "done: HI"])
    out = run_cli("chat", "-m", model, "--once", "shout hi", "--json", env=server.env)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["text"] == "done: HI" and result["steps"][0]["tool_runs"][0]["result"] == "HI"
    assert model in [r["model"] for r in server.ps()]
    out = run_cli("generate", "-m", "nosuch:model", "x", env=server.env)
    assert out.returncode == 1 and out.stderr.count("\n") == 1 and "no provider named" in out.stderr


def test_listening_beyond_loopback_without_a_key_warns(start_server: Any) -> None:
    server = start_server("--host", "0.0.0.0")
    assert "warning" in server.log.read_text() and "api_key" in server.log.read_text()
    busy = start_server("--port", str(server.port), wait=False)
    assert busy.proc.wait(timeout=60) == 1
    assert "cannot listen" in busy.log.read_text() and "Traceback" not in busy.log.read_text()


def test_a_bad_server_port_is_a_configuration_error_for_every_client_command(tmp_path: Path) -> None:
    from helpers import run_cli

    for value in ("99999", "0", "abc"):
        for args in (("ps",), ("stop", "--all")):
            out = run_cli(*args, env={"PROVENDER_SERVER__PORT": value})
            assert out.returncode == 2, (args, value, out.stderr)
            assert "server.port" in out.stderr and "PROVENDER_SERVER__PORT" in out.stderr
            assert "Traceback" not in out.stderr
    config = tmp_path / "bad-port.toml"
    config.write_text("[server]\nport = 70000\n")
    out = run_cli("ps", env={"PROVENDER_CONFIG": str(config)})
    assert out.returncode == 2 and str(config) in out.stderr and "70000" in out.stderr
