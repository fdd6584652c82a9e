"""Talking to a running ``provender serve`` from the command line and the libraries (stdlib only).

When a server answers at the configured address (``server.host``/``server.port``, the
``[server]`` section provender-serve registers; its defaults are `DEFAULT_HOST`/`DEFAULT_PORT` here),
`provender generate`, `chat` and `embed` send their work to it, so a second call
loads nothing. `find_server` looks for one (a refused connection costs microseconds);
`RemoteProvider` is a `provender.Provider` whose calls go over HTTP, so the embedding
library and the agent use a server without knowing it.

The address is read from the environment and the config file directly, without
building the full settings (pydantic costs ~200 ms): the point is a fast second call.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from provender import ProvenderError, Provider
from provender.errors import ConfigError, ServerError, ServerRequestError

if TYPE_CHECKING:
    import numpy

logger = logging.getLogger(__name__)

# The one place of the server's default address: provender-serve's ``[server]`` section
# (`provender_serve.settings.ServerSettings`) takes its defaults from here.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11435
NO_SERVER_ENV = "PROVENDER_NO_SERVER"
SERVICE = "provender"


def server_settings_fast() -> tuple[str, int, str]:
    """(host, port, api_key) of `provender serve`: environment > config file > defaults.

    Reads only what a client needs, without the full settings. A port that is not a
    port number raises ConfigError naming the setting and where it came from.
    """
    from provender._config_files import config_file_path, find_env, read_config_file

    path = config_file_path()
    try:
        section = read_config_file(path).get("server", {})
    except ProvenderError:
        section = {}
    if not isinstance(section, dict):
        section = {}

    def value(key: str, default: Any) -> tuple[Any, str]:
        found = find_env(f"server.{key}")
        if found:
            return found[1], f"environment variable {found[0]}"
        return (section[key], str(path)) if key in section else (default, "default")

    host = str(value("host", DEFAULT_HOST)[0]).strip() or DEFAULT_HOST
    raw_port, source = value("port", DEFAULT_PORT)
    try:
        port = int(raw_port)
    except (TypeError, ValueError):
        port = -1
    if not 0 < port < 65536:
        raise ConfigError(
            f"invalid setting server.port from {source}: {raw_port!r} is not a port number (1-65535)",
            setting="server.port",
            source=source,
            value=raw_port,
        )
    return host, port, str(value("api_key", "")[0] or "")


def server_url(host: str | None = None, port: int | None = None) -> str:
    """``http://HOST:PORT`` for connecting (a wildcard bind address is reached on loopback)."""
    default_host, default_port, _ = server_settings_fast()
    host = host or default_host
    port = port or default_port
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


class ServerClient:
    """A small JSON client of one server: ``request``, ``stream`` (server-sent events), ``ps``, ``unload``."""

    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 600.0) -> None:
        self.url = (url or server_url()).rstrip("/")
        self.api_key = server_settings_fast()[2] if api_key is None else api_key
        self.timeout = timeout

    def _open(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            return urllib.request.urlopen(req, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            raise _server_error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServerError(f"cannot reach the provender server at {self.url}: {reason}") from None

    def request(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        """Send a JSON request; returns the decoded JSON answer. Raises ServerError."""
        with self._open(method, path, body, timeout) as response:
            return json.loads(response.read() or b"null")

    def stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST with ``stream: true``; yields each server-sent event's JSON until ``[DONE]``."""
        with self._open("POST", path, {**body, "stream": True}) as response:
            for raw in response:
                line = raw.decode("utf-8").strip()
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    return
                event = json.loads(payload)
                if "error" in event:
                    error = event["error"] or {}
                    raise ServerError(str(error.get("message", error)), 500, error.get("code"))
                yield event

    def health(self, timeout: float = 2.0) -> dict[str, Any] | None:
        """The server's /health answer, or None when no provender server answers."""
        try:
            answer = self.request("GET", "/health", timeout=timeout)
        except (ServerError, ValueError):
            return None
        return answer if isinstance(answer, dict) and answer.get("service") == SERVICE else None

    def ps(self) -> list[dict[str, Any]]:
        """The models the server has loaded (model, provider, kind, since, until...)."""
        return list(self.request("GET", "/api/ps")["models"])

    def unload(self, model: str | None = None) -> list[str]:
        """Unload `model` (None: every model) from the server; returns the names unloaded."""
        return list(self.request("POST", "/api/unload", {"model": model})["unloaded"])


def _server_error(exc: urllib.error.HTTPError) -> ServerError:
    try:
        error = json.loads(exc.read() or b"{}").get("error") or {}
        message, code = str(error.get("message") or exc.reason), error.get("code")
    except (ValueError, AttributeError, OSError):
        message, code = str(exc.reason), None
    kind = ServerRequestError if exc.code in (400, 413, 422) else ServerError
    return kind(f"the provender server answered {exc.code}: {message}", exc.code, code)


def find_server(timeout: float = 2.0) -> ServerClient | None:
    """A client of the server at the configured address if one answers, else None.

    ``PROVENDER_NO_SERVER=1`` makes this return None (work runs in-process).
    """
    if os.environ.get(NO_SERVER_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return None
    client = ServerClient()
    if client.health(timeout) is None:
        logger.debug("no provender server at %s: running in-process", client.url)
        return None
    logger.debug("using the provender server at %s", client.url)
    return client


class RemoteProvider(Provider):
    """A `Provider` whose work runs on a `provender serve` (the model stays loaded there).

    ``model`` is sent as it is, except that a local directory is sent as its absolute path.
    ``chat`` returns tool calls the way Hermes/Qwen templates write them
    (``<tool_call>{"name": ..., "arguments": ...}</tool_call>``), so the agent's parser reads them.
    """

    name = "server"

    def __init__(self, model: str, client: ServerClient | None = None) -> None:
        super().__init__(model)
        from pathlib import Path

        local = Path(model).expanduser()
        self.remote_model = str(local.absolute()) if local.is_dir() else model
        self.client = client or ServerClient()

    def _options(self, options: dict[str, Any]) -> dict[str, Any]:
        body = {k: v for k, v in options.items() if v is not None}
        if isinstance(body.get("stop"), tuple):
            body["stop"] = list(body["stop"])
        return body

    def _completion_body(self, prompt: str, options: dict[str, Any]) -> dict[str, Any]:
        return {"model": self.remote_model, "prompt": prompt, **self._options(options)}

    def generate(self, prompt: str, **options: Any) -> str:
        answer = self.client.request("POST", "/v1/completions", self._completion_body(prompt, options))
        return str(answer["choices"][0]["text"])

    def stream(self, prompt: str, **options: Any) -> Iterator[str]:
        for event in self.client.stream("/v1/completions", self._completion_body(prompt, options)):
            for choice in event.get("choices") or []:
                if choice.get("text"):
                    yield str(choice["text"])

    def _chat_body(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, options: dict[str, Any]
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.remote_model, "messages": messages, **self._options(options)}
        if tools:
            body["tools"] = tools
        return body

    def chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, **options: Any) -> str:
        answer = self.client.request("POST", "/v1/chat/completions", self._chat_body(messages, tools, options))
        message = answer["choices"][0]["message"]
        return str(message.get("content") or "") + _render_tool_calls(message.get("tool_calls") or [])

    def stream_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, **options: Any
    ) -> Iterator[str]:
        calls: dict[int, dict[str, Any]] = {}
        for event in self.client.stream("/v1/chat/completions", self._chat_body(messages, tools, options)):
            for choice in event.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    yield str(delta["content"])
                for call in delta.get("tool_calls") or []:
                    slot = calls.setdefault(int(call.get("index", len(calls))), {"function": {"arguments": ""}})
                    function = call.get("function") or {}
                    slot["id"] = call.get("id") or slot.get("id")
                    slot["function"]["name"] = function.get("name") or slot["function"].get("name")
                    slot["function"]["arguments"] += function.get("arguments") or ""
        if calls:
            yield _render_tool_calls([calls[i] for i in sorted(calls)])

    def embed(self, texts: list[str], **options: Any) -> numpy.ndarray:
        import numpy as np

        if options:
            from provender import UnsupportedError

            raise UnsupportedError(self.name, f"embedding option(s) {', '.join(sorted(options))} through a server")
        answer = self.client.request(
            "POST", "/v1/embeddings", {"model": self.remote_model, "input": list(texts), "encoding_format": "float"}
        )
        rows = sorted(answer["data"], key=lambda row: row["index"])
        return np.asarray([row["embedding"] for row in rows], dtype=np.float32).reshape(len(texts), -1)

    def rerank(self, query: str, documents: list[str], **options: Any) -> list[float]:
        """The server's scores (``POST /v1/rerank``), in the documents' order."""
        from provender._rerank import check_rerank_input

        check_rerank_input(query, documents, options, (), provider=self.name)
        answer = self.client.request(
            "POST", "/v1/rerank", {"model": self.remote_model, "query": query, "documents": documents}
        )
        scores = {int(row["index"]): float(row["relevance_score"]) for row in answer["results"]}
        return [scores[i] for i in range(len(documents))]

    def dimension(self) -> int:
        return int(self.embed([""]).shape[1])

    def unload(self) -> None:
        self.client.unload(self.remote_model)


def _render_tool_calls(calls: list[dict[str, Any]]) -> str:
    out = []
    for call in calls:
        function = call.get("function") or {}
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except ValueError:
            arguments = function.get("arguments")
        payload = {"name": function.get("name"), "arguments": arguments}
        if call.get("id"):
            payload["id"] = call["id"]
        out.append(f"<tool_call>{json.dumps(payload)}</tool_call>")
    return "".join(out)


def provider_for(model: str, *, use_server: bool = True) -> Provider:
    """The provider for `model`: through a running server when one answers (and `use_server`),
    else resolved and run in this process."""
    if use_server:
        client = find_server()
        if client is not None:
            return RemoteProvider(model, client)
    from provender._resolve import resolve_provider

    return resolve_provider(model)
