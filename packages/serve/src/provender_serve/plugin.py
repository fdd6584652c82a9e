"""provender-serve's hooks: the `serve`, `ps` and `stop` commands, and the ``[server]`` settings section."""

from __future__ import annotations

import click

from provender import hookimpl
from provender.hookspecs import RegisterSettings


@hookimpl
def provender_register_commands(cli: click.Group) -> None:
    from provender_serve._cli import ps, serve, stop

    for command in (serve, ps, stop):
        cli.add_command(command)


@hookimpl
def provender_register_settings(register: RegisterSettings) -> None:
    from provender_serve.settings import ServerSettings

    register("server", ServerSettings)
