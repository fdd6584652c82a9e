"""provender-agent's hooks: its own hook spec (tools from plugins) and the `provender chat` command."""

from __future__ import annotations

import click

from provender import hookimpl
from provender.hookspecs import HookHost


@hookimpl
def provender_addhooks(pluginmanager: HookHost) -> None:
    from provender_agent import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


@hookimpl
def provender_register_commands(cli: click.Group) -> None:
    from provender_agent._cli import chat

    cli.add_command(chat)
