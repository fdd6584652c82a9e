"""provender-serve's hook: the `serve`, `ps` and `stop` commands."""

from __future__ import annotations

import click

from provender import hookimpl


@hookimpl
def provender_register_commands(cli: click.Group) -> None:
    from provender_serve._cli import ps, serve, stop

    for command in (serve, ps, stop):
        cli.add_command(command)
