"""provender-agent's hook: the `provender chat` command."""

from __future__ import annotations

import click

from provender import hookimpl


@hookimpl
def provender_register_commands(cli: click.Group) -> None:
    from provender_agent._cli import chat

    cli.add_command(chat)
