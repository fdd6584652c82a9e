"""The web page at ``/``: static files shipped in the package (``provender_serve/static``), no
build step and no network. The page is served with the server's token (`WebToken`) in a
``<meta>`` tag, which its script sends with every request that changes state; its JSON comes
from ``/api/web/...`` (`_web_api`; the stats over time: `_web_history`; collection search:
`_web_search`), ``/api/ps`` and ``/v1/chat/completions``.

The page and its files need no API key (the page asks for the key, keeps it in the tab's
session storage and sends it as ``Authorization: Bearer``, never in a URL). Its answers carry a
Content-Security-Policy that allows only this server's own scripts, styles and connections,
and forbid framing (no clickjacking of the buttons).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import urllib.request
import webbrowser
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from provender_serve._web_api import WebAPI, WebToken, warm_claims
from provender_serve._web_history import CacheHistory
from provender_serve._web_search import WebSearch
from provender_serve.errors import APIError

if TYPE_CHECKING:
    from provender_serve._app import Server

logger = logging.getLogger(__name__)
#: the files under /web/ (nothing else is read from the package: no path reaches the disk)
ASSETS = {"web.js": "text/javascript; charset=utf-8", "web.css": "text/css; charset=utf-8"}
TOKEN_PLACEHOLDER = "{{PROVENDER_TOKEN}}"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@cache
def static_text(name: str) -> str:
    """A file of the package's ``static`` folder (read once)."""
    return resources.files("provender_serve").joinpath("static", name).read_text(encoding="utf-8")


class WebPage:
    """The page and its assets, with the server's token."""

    def __init__(self, token: WebToken) -> None:
        self.token = token

    async def page(self, request: Request) -> Response:
        from provender_serve._ollama_models import probe_text

        probe = probe_text(request)  # Ollama's clients probe GET / and HEAD /: a browser gets the page
        if probe is not None:
            return probe
        html = static_text("index.html").replace(TOKEN_PLACEHOLDER, self.token.value)
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-store"}  # the token is per server
        return Response(html, media_type="text/html; charset=utf-8", headers=headers)

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            raise APIError(404, f"GET /web/{name[:100]}: no such file", "not_found")
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
        return Response(static_text(name), media_type=ASSETS[name], headers=headers)


def open_when_up(url: str, timeout: float = 60.0) -> threading.Thread:
    """Open `url`/ in the user's browser (the `webbrowser` module: ``BROWSER`` is honoured) once
    ``/health`` answers there, from a thread of its own; a browser that cannot start is one line."""

    def run() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.1)
        else:
            logger.warning("the server did not answer at %s: not opening a browser", url)
            return
        if not webbrowser.open(f"{url}/"):
            print(f"provender serve: no browser to open; the page is at {url}/", file=sys.stderr)

    thread = threading.Thread(target=run, name="provender-serve-open", daemon=True)
    thread.start()
    return thread


def web_routes(server: Server) -> list[Route]:
    """The page's routes, mounted by `create_app` (reads need the API key when set, changes the token too)."""
    from provender import load_settings
    from provender_serve.settings import ServerSettings

    token = WebToken()
    warm_claims()  # the page's first load then finds every entry's providers known
    history = CacheHistory(load_settings().section("server", ServerSettings).stats_interval)
    server.services.append(history)  # the cache's stats over time (server.stats_interval), while serving
    page, api, e = WebPage(token), WebAPI(server, token), server.endpoint
    search = WebSearch(server, token)

    async def history_view(request: Request) -> Response:
        return JSONResponse(history.view())

    return [
        Route("/", e(page.page, auth=False), methods=["GET"]),
        Route("/web/{name}", e(page.asset, auth=False), methods=["GET"]),
        Route("/api/web/cache", e(api.cache), methods=["GET"]),
        Route("/api/web/entry", e(api.entry), methods=["GET"]),
        Route("/api/web/prune", e(api.plan), methods=["GET"]),
        Route("/api/web/prune", e(api.prune), methods=["POST"]),
        Route("/api/web/pin", e(api.pin), methods=["POST"]),
        Route("/api/web/unpin", e(api.unpin), methods=["POST"]),
        Route("/api/web/remove", e(api.remove), methods=["POST"]),
        Route("/api/web/unload", e(api.unload), methods=["POST"]),
        Route("/api/web/history", e(history_view), methods=["GET"]),
        Route("/api/web/collections", e(search.collections), methods=["GET"]),
        Route("/api/web/search", e(search.search), methods=["POST"]),
    ]
