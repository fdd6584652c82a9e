"""provender-embedding's hook: its commands (embed, similar, collections, rerank)."""

from __future__ import annotations

import click

from provender import hookimpl


@hookimpl
def provender_register_commands(cli: click.Group) -> None:
    from provender_embedding._cli import register

    register(cli)
