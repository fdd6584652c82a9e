"""The server's walls against web pages: `Host` and `Origin` checks and CORS, before any route runs.

A web page the user opens can send requests to a server on 127.0.0.1 in two ways:

- **cross-origin** (``fetch("http://127.0.0.1:11435/...")`` from ``https://evil.example``): every
  such request a browser sends carries an ``Origin`` header, "simple" ones (a ``text/plain`` or
  form POST, sent without a preflight) included. A request with an ``Origin`` is refused unless
  that origin is allowed (the server's own origins, app/file/tauri/vscode-webview pages, and
  ``server.origins``), before its body is read.
- **DNS rebinding** (``evil.example`` re-resolved to 127.0.0.1, so the page's requests are
  same-origin and carry no ``Origin``): the browser still sends ``Host: evil.example:PORT``. A
  request whose ``Host`` is not the server's own address (or ``localhost``, a loopback address,
  the machine's name, a name in ``server.allowed_hosts``) is refused.

Requests without an ``Origin`` (curl, SDKs, the command line) pass, whatever their content type.
Refusals are 403 in OpenAI's error shape. Answers to allowed origins carry
``Access-Control-Allow-Origin`` with that origin (never ``*``), and every answer ``Vary: Origin``.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any, Literal

from provender_serve.errors import APIError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Origins allowed on top of the server's own (``http://localhost:PORT`` and the rest): pages of
#: desktop apps and editor extensions, as Ollama allows (its ``OLLAMA_ORIGINS`` defaults).
DEFAULT_ORIGINS = ("app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*")
ALLOW_METHODS = "GET, POST, OPTIONS"
PREFLIGHT_MAX_AGE = "600"
#: server.pull: which requests may download a model they name
Pull = Literal["never", "without-origin", "always"]


def split_host(value: str) -> tuple[str, int | None] | None:
    """``host[:port]`` (``[v6]:port`` for IPv6) -> (lowercase host without brackets, port or None);
    None when it is not a well-formed Host."""
    value = value.strip().lower()
    if not value:
        return None
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text = value.partition(":")
        if not sep:
            port_text = None
        elif ":" in port_text:  # a bare IPv6 address is not a valid Host
            return None
    if port_text is not None and not (port_text.isdigit() and len(port_text) <= 5 and int(port_text) <= 65535):
        return None
    if not host or any(c in host for c in "/@\\ \t"):
        return None
    return host.rstrip("."), int(port_text) if port_text is not None else None


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback_address(host: str) -> bool:
    """Whether `host` (``localhost`` or an IP literal) is this machine only (all of 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def _machine_names() -> set[str]:
    try:
        name = socket.gethostname().lower().rstrip(".")
    except OSError:
        return set()
    return {name, f"{name}.local"} if name else set()


class Walls:
    """ASGI middleware: refuse foreign `Host`s and disallowed `Origin`s, answer CORS for allowed ones.

    `origins` and `allowed_hosts` add to the defaults: ``*`` in an origin is a wildcard
    (``https://*.example.com``, or ``*`` alone for every origin); a host without a port allows
    every port, ``*`` every host (behind a proxy that checks the Host itself).
    """

    def __init__(self, app: ASGIApp, *, origins: Iterable[str] = (), allowed_hosts: Iterable[str] = ()) -> None:
        self.app = app
        self.origins = [o.strip().lower().rstrip("/") for o in origins if o.strip()]
        self.hosts: list[tuple[str, int | None]] = []
        self.any_host = False
        for entry in allowed_hosts:
            if entry.strip() == "*":
                self.any_host = True
                continue
            parsed = split_host(entry)
            if parsed is None:
                raise ValueError(f"server.allowed_hosts: {entry!r} is not a host name or host:port")
            self.hosts.append(parsed)
        self.machine = _machine_names()

    # -- decisions ---------------------------------------------------------------------

    def host_allowed(self, value: str | None, server: tuple[str, int | None] | None) -> bool:
        """Whether a request's Host names this server (`server`: the address the connection reached)."""
        if self.any_host:
            return True
        if value is None:  # HTTP/1.0 without a Host: no browser sends that
            return True
        parsed = split_host(value)
        if parsed is None:
            return False
        host, port = parsed
        own_host, own_port = (server[0].lower(), server[1]) if server else ("", None)
        for name, allowed_port in self.hosts:
            if name == host and (allowed_port is None or allowed_port == port):
                return True
        if own_port is not None and (port if port is not None else 80) != own_port:
            return False
        if is_loopback_address(host) or host == own_host.strip("[]"):
            return True
        # reached on another address of this machine (a wildcard bind): its addresses and its name;
        # an IP literal cannot be rebound, a name other than the machine's can
        if not is_loopback_address(own_host):
            return is_ip(host) or host in self.machine
        return False

    def own_origins(self, server: tuple[str, int | None] | None) -> set[str]:
        port = server[1] if server else None
        names = {"localhost", "127.0.0.1", "[::1]"}
        if server and server[0] and not is_loopback_address(server[0]):
            names.add(f"[{server[0]}]" if ":" in server[0] else server[0])
        suffix = f":{port}" if port not in (None, 80) else ""
        return {f"http://{name}{suffix}" for name in names}

    def origin_allowed(self, origin: str, server: tuple[str, int | None] | None) -> bool:
        origin = origin.strip().lower().rstrip("/")
        if origin in self.own_origins(server):
            return True
        return any(fnmatch.fnmatchcase(origin, pattern) for pattern in (*DEFAULT_ORIGINS, *self.origins))

    # -- ASGI --------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        server = scope.get("server")
        if not self.host_allowed(headers.get("host"), server):
            shown = (headers.get("host") or "")[:100]
            await _refuse(
                send,
                f"Host {shown!r} is not this server's address: a DNS-rebinding page, or a name to add to "
                "server.allowed_hosts",
                "host_not_allowed",
            )
            return
        origin = headers.get("origin")
        fetch_site = headers.get("sec-fetch-site", "")
        if origin is None and fetch_site in ("cross-site", "same-site"):
            # a browser's request without an Origin (a no-cors GET from another site's page)
            await _refuse(send, "cross-site requests from web pages are not allowed (server.origins)", "cross_origin")
            return
        if origin is not None and not self.origin_allowed(origin, server):
            await _refuse(
                send,
                f"requests from web pages at {origin[:100]!r} are not allowed; add the origin to server.origins "
                "to let it use this server",
                "origin_not_allowed",
                vary=True,
            )
            return
        if origin is not None and scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            await _preflight(send, origin, headers.get("access-control-request-headers"))
            return
        extra = [(b"vary", b"Origin")]  # the answer depends on the Origin: caches must key on it
        if origin is not None:
            scope.setdefault("state", {})["origin"] = origin
            extra.append((b"access-control-allow-origin", origin.encode("latin-1")))

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, send_with_cors)


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        key = name.decode("latin-1").lower()
        if key not in out:  # the first of repeated headers, as Starlette reads them
            out[key] = value.decode("latin-1")
    return out


async def _refuse(send: Send, message: str, code: str, *, vary: bool = False) -> None:
    body = json.dumps({"error": {"message": message, "type": "permission_error", "code": code, "param": None}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if vary:
        headers.append((b"vary", b"Origin"))
    await send({"type": "http.response.start", "status": 403, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _preflight(send: Send, origin: str, requested: str | None) -> None:
    headers = [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-methods", ALLOW_METHODS.encode()),
        (b"access-control-max-age", PREFLIGHT_MAX_AGE.encode()),
        (b"vary", b"Origin"),
        (b"content-length", b"0"),
    ]
    if requested:
        names = ", ".join(n.strip() for n in requested.split(",") if n.strip() and n.strip().isascii())
        headers.append((b"access-control-allow-headers", names.encode("latin-1")))
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


# -- downloads (server.pull) -------------------------------------------------------------


def may_pull(pull: Pull, origin: str | None) -> bool:
    """Whether a request (with this Origin, or None) may download a model under `pull`."""
    return pull == "always" or (pull == "without-origin" and origin is None)


def pull_refused(pull: Pull, origin: str | None, model: str) -> APIError:
    who = f"a request from a web page ({origin[:100]!r})" if origin is not None else "a request"
    return APIError(
        403,
        f"model {model!r} is not in the cache and {who} may not download it (server.pull = {pull!r}); "
        f"pull it first: provender pull {model.partition(':')[2] or model}",
        "pull_not_allowed",
        "model",
    )


def needs_download(model: str) -> bool:
    """Whether serving ``PROVIDER:NAME`` would download NAME: it is not a local path, not in the
    cache, and has the shape of a Hub repo id (``owner/name``). A bare name never downloads (it
    must be cached); ``echo:upper`` and other names of a provider's own are not repo ids."""
    from pathlib import Path

    from provender import CacheManager, ProvenderError, parse_model_name

    provider, bare = parse_model_name(model)
    if provider is None or "/" not in bare or bare.startswith(("/", "./", "../", "~", "\\")):
        return False
    try:
        if Path(bare).expanduser().exists():
            return False
        cache = CacheManager()
        candidates = [bare, bare.rsplit(":", 1)[0]] if ":" in bare else [bare]  # org/x-GGUF:Q4_K_M
        return all(cache.find(name) is None for name in candidates)
    except (ProvenderError, OSError, ValueError):
        return False  # the provider reports what is wrong with the name or the cache
