"""``[server]``: provender-serve's settings section, registered with ``provender_register_settings``.

The same names, environment variables (``PROVENDER_SERVER__PORT``...) and TOML keys as when
the core held it. The default address is the core client's (`provender._client`: the one
place that knows where a server listens by default, read by ``generate``, ``ps``, ``stop``...
without building the settings).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from provender._client import DEFAULT_HOST, DEFAULT_PORT
from provender._settings import NameList, Seconds, Section

__all__ = ["ServerSettings"]


class ServerSettings(Section):
    """``[server]``: where `provender serve` listens and what it may load."""

    host: str = Field(
        DEFAULT_HOST, min_length=1, description="Address `provender serve` binds (127.0.0.1: local only)."
    )
    port: int = Field(DEFAULT_PORT, ge=1, le=65535, description="Port of `provender serve`.")
    api_key: SecretStr = Field(SecretStr(""), description="Bearer token clients must send; empty: none required.")
    models: NameList = Field(default_factory=list, description="Models the server may load; empty: any cached.")
    # The server's walls (docs/serve.md, "Security"); read only by provender_serve.
    origins: NameList = Field(
        default_factory=list,
        description="Web-page origins allowed besides the server's own and app://, file://, tauri://, "
        "vscode-webview:// ones (https://app.example, * wildcards).",
    )
    allowed_hosts: NameList = Field(
        default_factory=list,
        description="Host header names allowed besides the server's addresses, localhost and this machine's name "
        "(name or name:port; *: any, behind a proxy).",
    )
    pull: Literal["never", "without-origin", "always"] = Field(
        "without-origin",
        description="Which requests may download a model they name: never, without-origin (not web pages), always.",
    )
    local_paths: Literal["auto", "allow", "refuse"] = Field(
        "auto",
        description="Whether a request may name a model by a path on the server's disk (/models/m, ./m, ~/m): "
        "allow, refuse, or auto (refuse with an API key or off loopback, else allow).",
    )
    header_timeout: Seconds = Field(
        10.0, gt=0, description="Seconds a connection has to send a complete request head before it is closed."
    )
    max_connections: int = Field(
        0, ge=0, description="Open connections at most; 0: half the file-descriptor limit, 16 to 1024."
    )
    stats_interval: Seconds = Field(
        10.0,
        ge=0,
        description="Seconds between the samples of the cache's stats the web page charts (360 kept); 0: none.",
    )
