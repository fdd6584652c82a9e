"""`provender serve`, `provender ps` and `provender stop` (imports stay inside the commands)."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    import socket

    from provender._client import ServerClient


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def is_loopback(host: str) -> bool:
    """Whether the address `host` (an IP literal, as a bound socket reports it, or ``localhost``)
    is reachable from this machine only: all of 127.0.0.0/8, ::1, and IPv4-mapped loopback."""
    from provender_serve._walls import is_loopback_address

    return is_loopback_address(host)


def listening_on(address: str, port: int) -> str:
    """What the banner says: the address the socket is bound to, and for a wildcard bind
    (0.0.0.0, ::) the URL this machine reaches it at."""
    from provender._client import server_url

    shown = f"[{address}]" if ":" in address else address
    if address in ("0.0.0.0", "::"):
        which = "every IPv4 address" if address == "0.0.0.0" else "every address"
        return f"http://{shown}:{port} ({which} of this machine; from here: {server_url(address, port)})"
    return f"http://{shown}:{port}"


def _bind(host: str, port: int) -> socket.socket:
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        _fail(f"cannot listen on {host}:{port}: {exc.strerror}", 2)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        hint = " (is a server already running? `provender ps`)" if exc.errno == 98 else ""
        _fail(f"cannot listen on {host}:{port}: {exc.strerror}{hint}")
    sock.set_inheritable(True)
    return sock


def _local_paths(setting: str, host: str, port: int, api_key: str) -> bool:
    """``server.local_paths`` resolved: "auto" allows paths only without an API key on a
    loopback address (the address `_bind` will bind: the first `host` resolves to)."""
    if setting != "auto":
        return setting == "allow"
    if api_key:
        return False
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        return False  # `_bind` says why
    return is_loopback(str(infos[0][4][0]))


def _duration(value: str | None) -> float | None:
    """A duration option, parsed as the settings parse durations (too long: a usage error naming it)."""
    if value is None:
        return None
    from provender._sizes import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.option("--host", help="Address to listen on (default: server.host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), help="Port (default: server.port; 0 picks a free one).")
@click.option("--model", "models", multiple=True, help="Only serve this model (repeatable; default: server.models).")
@click.option("--max-models", type=click.IntRange(min=1), help="Models kept loaded (default: memory.max_models).")
@click.option(
    "--keep-alive",
    callback=lambda ctx, param, value: _duration(value),
    help='Idle time before a model is unloaded, e.g. 5m, at most 3650d; -1 or "forever" = never (memory.keep_alive).',
)
@click.option(
    "--queue-size",
    type=click.IntRange(min=0),
    default=16,
    show_default=True,
    help="Requests that may wait per model before 503.",
)
@click.option("--max-body", default="8MiB", show_default=True, help="Largest request body accepted.")
@click.option(
    "--max-tokens-limit",
    type=click.IntRange(min=1),
    default=32768,
    show_default=True,
    help="Largest max_tokens a request may ask for.",
)
@click.option("--log-requests", is_flag=True, help="Log every request (uvicorn's access log).")
@click.option("--open", "open_page", is_flag=True, help="Open the web page (/) in a browser once it answers.")
def serve(
    host: str | None,
    port: int | None,
    models: tuple[str, ...],
    max_models: int | None,
    keep_alive: float | None,
    queue_size: int,
    max_body: str,
    max_tokens_limit: int,
    log_requests: bool,
    open_page: bool,
) -> None:
    """Serve every installed provider over the OpenAI HTTP API, keeping models loaded.

    \b
    Endpoints: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models,
    /v1/rerank, /v2/rerank and /rerank (Jina's, Cohere's and TEI's reranking),
    /health, and /api/ps, /api/unload (`provender ps`, `provender stop`); a web page at /.
    While it runs, `provender generate`, `chat` and `embed` send their work to it.
    """
    from provender import load_settings
    from provender._sizes import parse_size

    try:
        import uvicorn

        from provender_serve._app import ServerOptions, create_app
    except ImportError as exc:
        _fail(f'{exc}; install the server with: pip install "provender[serve]"')
    from provender_serve._protocol import Guard
    from provender_serve.settings import ServerSettings

    settings = load_settings()
    server_settings = settings.section("server", ServerSettings)
    host = host or server_settings.host
    port = server_settings.port if port is None else port
    api_key = server_settings.api_key.get_secret_value()
    try:
        options = ServerOptions(
            api_key=api_key,
            allowed=list(models) or list(server_settings.models),
            max_models=max_models or settings.memory.max_models,
            keep_alive=settings.memory.keep_alive if keep_alive is None else keep_alive,
            queue_size=queue_size,
            max_body=parse_size(max_body),
            max_tokens_limit=max_tokens_limit,
            origins=list(server_settings.origins),
            allowed_hosts=list(server_settings.allowed_hosts),
            pull=server_settings.pull,
            local_paths=_local_paths(server_settings.local_paths, host, port, api_key),
        )
        guard = Guard(server_settings.header_timeout, server_settings.max_connections)
        app = create_app(options)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    sock = _bind(host, port)
    address, bound = sock.getsockname()[:2]
    if not is_loopback(address) and not api_key:  # the address bound, not the name: 127.1 is loopback
        click.secho(
            f"warning: listening on {address} ({host}), reachable from other machines, without an API key: "
            "anyone who can connect can run models here (set server.api_key)",
            fg="yellow",
            err=True,
        )
    config = uvicorn.Config(
        app,
        http=guard.protocol(),  # h11 with a header timeout and a connection cap (provender_serve._protocol)
        ws="none",
        backlog=guard.backlog,  # also the accept burst: kept within the file limit
        log_level="info" if log_requests else "warning",
        access_log=log_requests,
        timeout_graceful_shutdown=5,
        lifespan="on",
    )
    app.state.guard = guard  # the lifespan installs its flood log on the server's loop

    only = f", models: {', '.join(options.allowed)}" if options.allowed else ""
    click.echo(f"provender serve: listening on {listening_on(address, bound)}{only} (Ctrl-C to stop)", err=True)
    if open_page:
        from provender._client import server_url
        from provender_serve._web import open_when_up

        open_when_up(server_url(address, bound))
    uvicorn.Server(config).run(sockets=[sock])


def _client() -> ServerClient:
    from provender._client import ServerClient

    client = ServerClient()
    if client.health() is None:
        _fail(
            f"no provender server answers at {client.url} (start one with `provender serve`; one started with "
            "--host or --port is found with PROVENDER_SERVER__HOST / PROVENDER_SERVER__PORT set to match)"
        )
    return client


def _when(iso: str | None, now: float) -> str:
    if iso is None:
        return "forever"
    seconds = datetime.fromisoformat(iso).timestamp() - now
    if seconds < 0:
        return "now"
    return f"in {seconds:.0f} s" if seconds < 120 else f"in {seconds / 60:.0f} min"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def ps(as_json: bool) -> None:
    """List the models a running `provender serve` holds, until when, and their prompt caches' size."""
    from provender.errors import ServerError

    client = _client()
    try:
        rows = client.ps()
    except ServerError as exc:
        _fail(str(exc))
    if as_json:
        import json  # here: `provender --help` imports this module and has no use for json

        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"No models loaded ({client.url}).")
        return
    now = time.time()
    from provender._sizes import format_size

    table = [("MODEL", "PROVIDER", "KIND", "SINCE", "UNTIL", "STATE", "PROMPT CACHE")] + [
        (
            r["model"],
            r["provider"],
            r["kind"],
            datetime.fromisoformat(r["since"]).astimezone().strftime("%H:%M:%S"),
            "busy" if r["busy"] else _when(r["until"], now),
            f"busy, {r['queued']} queued" if r["busy"] else "idle",
            "-" if r.get("prompt_cache_bytes") is None else format_size(r["prompt_cache_bytes"]),
        )
        for r in rows
    ]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]))]
    for n, row in enumerate(table):
        line = "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        click.echo(click.style(line, bold=True) if n == 0 else line)


@click.command()
@click.argument("models", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Unload every model.")
def stop(models: tuple[str, ...], everything: bool) -> None:
    """Unload MODELS (or --all) from a running `provender serve`; the disk cache is untouched."""
    from provender.errors import ServerError

    if not models and not everything:
        raise click.UsageError("name a model to unload, or --all")
    client = _client()
    unloaded: list[Any] = []
    try:
        if everything:
            unloaded = client.unload(None)
        for name in models:
            unloaded.extend(client.unload(name))
    except ServerError as exc:
        _fail(str(exc))
    click.echo(f"Unloaded {', '.join(unloaded)}." if unloaded else "Nothing was loaded.")
