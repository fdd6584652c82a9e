"""provender's own commands, registered as a default plugin (as simonw/llm registers its
default plugins): the command line is built by one hook, ``provender_register_commands``,
whoever brings the commands.
"""

from __future__ import annotations

import click

from provender._hooks import hookimpl

NAME = "provender.commands"


@hookimpl
def provender_register_commands(cli: click.Group) -> None:
    from provender._cli import cache, core, remote

    core.register(cli)
    cli.add_command(cache.cache)
    cli.add_command(remote.remote)
