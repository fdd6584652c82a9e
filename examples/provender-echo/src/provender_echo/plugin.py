"""The hook implementations: this module is what the entry point names."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from provender import hookimpl

if TYPE_CHECKING:
    from provender import CacheEntry
    from provender.hookspecs import RegisterProvider


@hookimpl
def provender_register_providers(register: RegisterProvider) -> None:
    from provender_echo.provider import EchoProvider

    register("echo", EchoProvider, description="Echoes the prompt (example plugin).")


@hookimpl
def provender_claim_model(entry: CacheEntry) -> str | None:
    # Claimed by content: a model directory holding an echo.json with {"provider": "echo"}.
    import json  # here, not at the top: `provender --help` imports this module and never claims a model

    try:
        config = json.loads((entry.model_path / "echo.json").read_text())
    except (OSError, ValueError):
        return None
    return "echo" if isinstance(config, dict) and config.get("provider") == "echo" else None


@hookimpl
def provender_register_commands(cli: click.Group) -> None:
    @cli.command("echo-modes")
    def echo_modes() -> None:
        """List the echo provider's models (example plugin)."""
        from provender_echo.provider import MODES

        for mode in sorted(MODES):
            click.echo(mode)
