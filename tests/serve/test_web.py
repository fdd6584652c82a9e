"""The web page's routes over HTTP, against a real `provender serve` and a real cache: the token on
every change, the walls in front of it, the CLI's refusals, `serve --open` (the browser: test_web_browser.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from provender import CacheManager

Server = Any  # tests/serve/conftest.py's Server: a real `provender serve` process
StartServer = Any

TOKEN = re.compile(r'<meta name="provender-token" content="([^"]+)">')


def page_token(server: Server) -> str:
    import urllib.request

    page = urllib.request.Request(server.url + "/", headers={"Accept": "text/html"})  # as a browser asks
    with urllib.request.urlopen(page, timeout=30) as response:
        found = TOKEN.search(response.read().decode())
    assert found, "the page carries no token"
    return found.group(1)


def post(server: Server, path: str, body: dict[str, Any], **headers: str) -> tuple[int, Any]:
    merged = {"Content-Type": "application/json", **server._auth(), **headers}
    return server.raw("POST", path, json.dumps(body).encode(), merged)


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provender", *args],
        env={**os.environ, **server.env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def two_entries(make_files: Any, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setenv("PROVENDER_CACHE__DIR", str(cache_dir))
    cm = CacheManager()
    cm.import_model(make_files("a", {"model.bin": 3000, "config.json": b"{}"}), "test/a")
    cm.import_model(make_files("b", {"weights/w.bin": 5000}), "test/b", pin=True)
    return ["test/a", "test/b"]


def test_the_page_and_its_files_are_served_with_a_token_and_a_strict_policy(start_server: StartServer) -> None:
    import urllib.error
    import urllib.request

    server = start_server(env={"PROVENDER_SERVER__API_KEY": "sekrit"})
    page = urllib.request.Request(server.url + "/", headers={"Accept": "text/html"})  # as a browser asks
    with urllib.request.urlopen(page, timeout=30) as response:  # no key: the page asks for it
        html = response.read().decode()
        csp = response.headers["Content-Security-Policy"]
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["X-Frame-Options"] == "DENY"
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    token = TOKEN.search(html)
    assert token and len(token.group(1)) >= 40 and "{{" not in html
    assert page_token(start_server()) != token.group(1)  # one per server
    for name in ("web.js", "web.css"):
        with urllib.request.urlopen(f"{server.url}/web/{name}", timeout=30) as response:
            assert response.read()
    status, body = server.raw("GET", "/web/..%2f_app.py")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body = server.raw("GET", "/api/web/cache")  # the data needs the key
    assert status == 401, body
    status, body = server.raw("GET", "/api/web/cache", headers={"Authorization": "Bearer sekrit"})
    assert status == 200 and body["entries"] == []


def test_changes_need_the_token_and_are_refused_from_another_origin(
    start_server: StartServer, two_entries: list[str]
) -> None:
    server = start_server()
    token = page_token(server)
    for path in ("/api/web/unpin", "/api/web/pin", "/api/web/remove"):
        status, body = post(server, path, {"name": "test/b"})
        assert (status, body["error"]["code"]) == (403, "token_required"), body
        status, body = post(server, path, {"name": "test/b"}, **{"X-Provender-Token": token[:-1] + "x"})
        assert (status, body["error"]["code"]) == (403, "token_required"), body
        status, body = post(
            server, path, {"name": "test/b"}, **{"X-Provender-Token": token, "Origin": "https://evil.example"}
        )
        assert (status, body["error"]["code"]) == (403, "origin_not_allowed"), body
        status, body = post(
            server, path, {"name": "test/b"}, **{"X-Provender-Token": token, "Host": f"evil.example:{server.port}"}
        )
        assert (status, body["error"]["code"]) == (403, "host_not_allowed"), body
    for path, body in (("/api/web/prune", {"evict": []}), ("/api/web/unload", {"model": None})):
        status, answer = post(server, path, body)
        assert (status, answer["error"]["code"]) == (403, "token_required"), answer
    assert CacheManager().get("test/b").pinned and CacheManager().find("test/a") is not None  # nothing changed
    status, body = post(server, "/api/web/unpin", {"name": "test/b"}, **{"X-Provender-Token": token})
    assert (status, body) == (200, {"unpinned": "test/b"})
    assert not CacheManager().get("test/b").pinned


def test_removing_a_pinned_entry_is_refused_as_the_cli_refuses_it(
    start_server: StartServer, two_entries: list[str]
) -> None:
    server = start_server()
    token = {"X-Provender-Token": page_token(server)}
    status, body = post(server, "/api/web/remove", {"name": "test/b"}, **token)
    assert (status, body["error"]["code"]) == (409, "entry_in_use"), body
    rm = cli(server, "cache", "rm", "-y", "test/b")
    assert rm.returncode == 1 and body["error"]["message"] in rm.stderr, (rm.stderr, body)
    status, body = post(server, "/api/web/remove", {"name": "nope/none"}, **token)
    assert (status, body["error"]["code"]) == (404, "entry_not_found"), body
    status, body = post(server, "/api/web/remove", {"name": 7}, **token)
    assert (status, body["error"]["param"]) == (400, "name"), body
    status, body = post(server, "/api/web/remove", {"name": "test/a"}, **token)
    assert (status, body) == (200, {"removed": "test/a", "size": 3002})
    assert CacheManager().find("test/a") is None and server.healthy()


def test_the_cache_view_matches_cache_ls_and_details_list_the_files(
    start_server: StartServer, two_entries: list[str]
) -> None:
    server = start_server()
    status, view = server.raw("GET", "/api/web/cache")
    assert status == 200
    listed = json.loads(cli(server, "cache", "ls", "--json").stdout)
    keep = ("key", "name", "size", "pinned", "providers", "provider", "kind")
    assert [{k: e[k] for k in keep} for e in view["entries"]] == [{k: e[k] for k in keep} for e in listed]
    for row, e in zip(view["entries"], listed, strict=True):
        assert (
            e["last_used"] is None or abs(datetime.fromisoformat(e["last_used"]).timestamp() - row["last_used"]) < 1e-3
        )
    assert view["max_size"] == CacheManager().max_size and view["stats"]["entries"] == 2
    status, info = server.raw("GET", "/api/web/entry?name=test/b")
    assert status == 200 and info["pinned"] and not info["in_use"] and info["loaded"] == []
    assert info["files"] == [{"path": "weights/w.bin", "size": 5000}] and info["file_count"] == 1
    status, body = server.raw("GET", "/api/web/entry?name=missing/one")
    assert status == 404, body


def test_prune_carries_out_the_plan_shown_and_refuses_a_stale_one(
    start_server: StartServer, two_entries: list[str]
) -> None:
    server = start_server(env={"PROVENDER_CACHE__MAX_SIZE": "1000"})
    token = {"X-Provender-Token": page_token(server)}
    status, plan = server.raw("GET", "/api/web/prune")
    assert status == 200 and [e["name"] for e in plan["evict"]] == ["test/a"], plan
    assert [(e["name"], e["reason"]) for e in plan["kept"]] == [("test/b", "pinned")], plan
    status, body = post(server, "/api/web/prune", {"evict": []}, **token)  # not the plan: refused
    assert (status, body["error"]["code"]) == (409, "plan_changed"), body
    assert CacheManager().find("test/a") is not None
    status, body = post(server, "/api/web/prune", {"evict": [e["key"] for e in plan["evict"]]}, **token)
    assert status == 200 and [e["name"] for e in body["evicted"]] == ["test/a"], body
    assert CacheManager().find("test/a") is None and CacheManager().find("test/b") is not None


def test_serve_open_opens_the_page_in_the_browser(start_server: StartServer, tmp_path: Path) -> None:
    opened = tmp_path / "opened"
    browser = tmp_path / "browser"
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(0o755)
    server = start_server("--open", env={"BROWSER": f"{browser} %s"})
    deadline = time.monotonic() + 30
    while not opened.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert opened.read_text().strip() == f"{server.url}/"


def history(server: Server) -> dict[str, Any]:
    status, body = server.raw("GET", "/api/web/history", headers=server._auth())
    assert status == 200, body
    return dict(body)


def wait_for_samples(server: Server, count: int, timeout: float = 60) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while len(samples := history(server)["samples"]) < count:
        assert time.monotonic() < deadline, f"fewer than {count} samples: {samples}"
        time.sleep(0.1)
    return list(samples)


def test_the_server_samples_the_cache_stats_over_time(start_server: StartServer, two_entries: list[str]) -> None:
    server = start_server(env={"PROVENDER_SERVER__STATS_INTERVAL": "0.3", "PROVENDER_SERVER__API_KEY": "k"})
    status, body = server.raw("GET", "/api/web/history")  # behind the key, as every route
    assert status == 401, body
    first = wait_for_samples(server, 1)[0]
    assert (first["entries"], first["size"], first["max_size"]) == (2, 3002 + 5000, CacheManager().max_size)
    cm = CacheManager()
    for _ in range(3):  # three hits and a miss, from another process than the server's
        with cm.acquire("test/a"):
            pass
    with pytest.raises(LookupError):
        cm.acquire("nope/none")
    after = time.time()
    deadline = time.monotonic() + 60
    while (view := history(server))["samples"][-1]["time"] <= after:  # a sample taken after them
        assert time.monotonic() < deadline, view
        time.sleep(0.1)
    assert view["interval"] == 0.3 and view["capacity"] == 360
    samples = view["samples"]
    times = [s["time"] for s in samples]
    assert times == sorted(times) and len(samples) >= 2
    last = samples[-1]
    assert (last["hits"] - first["hits"], last["misses"] - first["misses"]) == (3, 1), (first, last)
    assert sum(s["lookups"] for s in samples[1:]) == 4  # each sample counts its own interval's lookups
    busy = [s for s in samples[1:] if s["lookups"]]
    assert sum(s["hit_rate"] * s["lookups"] for s in busy) == pytest.approx(3)
    assert all(s["hit_rate"] is None for s in samples[1:] if not s["lookups"])


def test_no_history_is_kept_with_stats_interval_0(start_server: StartServer) -> None:
    server = start_server(env={"PROVENDER_SERVER__STATS_INTERVAL": "0"})
    time.sleep(0.5)
    assert history(server) == {"interval": 0.0, "capacity": 360, "samples": []}


def test_the_samples_count_models_and_saved_prompt_caches_apart(two_entries: list[str]) -> None:
    from provender_serve._web_history import sample

    cm = CacheManager()
    saved = cm.prompts.save(
        model="test/a",
        model_id="test/a",
        runtime="test",
        version="1",
        tokens=[1, 2, 3],
        write=lambda folder: (folder / "kv.bin").write_bytes(b"x" * 1000),
    )
    point = sample(cm, None)
    models = cm.entries()  # what the page's cache view lists and sums: the models
    assert (point["entries"], point["size"]) == (len(models), sum(e.size for e in models)) == (2, 8002)
    assert point["prompt_size"] == saved.size > 1000
