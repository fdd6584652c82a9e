"""The ``provender`` command line.

Only click and the plugin manager load before a command runs, so ``provender --help``
stays fast; each command imports what it needs. Errors become one line on stderr
with exit code 2 (usage or configuration) or 1 (failure), never a traceback unless
``--debug`` asks for it. A reader that closes the pipe early (``provender config | head -1``)
ends any command, a plugin's included, quietly: no message, exit 141 (128 + SIGPIPE, as a
shell reports for ``git log | head -1``).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from provender import __version__, _log
from provender._cli._common import EXIT_FAILURE, EXIT_USAGE, is_usage_error, output_closed, quit_on_closed_pipe


class ProvenderGroup(click.Group):
    """Turns provender's errors into one clear line and the right exit code."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        """`provender --help | head -1`: the help is printed here, before any command runs."""
        try:
            return super().make_context(*args, **kwargs)
        except BrokenPipeError:
            if output_closed():
                quit_on_closed_pipe()
            raise

    def invoke(self, ctx: click.Context) -> Any:
        from provender.errors import ProvenderError

        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except ProvenderError as exc:
            if ctx.meta.get("provender.debug"):
                raise
            code = EXIT_USAGE if is_usage_error(exc) else EXIT_FAILURE
            click.echo(f"Error: {exc}", err=True)
            sys.exit(code)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except ImportError as exc:  # a missing optional extra: its message carries the pip command
            if ctx.meta.get("provender.debug"):
                raise
            click.echo(f"Error: {exc}", err=True)
            sys.exit(EXIT_FAILURE)
        except Exception as exc:  # a bug, or a plugin's: still no traceback unless asked
            if isinstance(exc, BrokenPipeError) and output_closed():  # the reader is gone, not an error
                quit_on_closed_pipe()
            if ctx.meta.get("provender.debug"):
                raise
            click.echo(f"Error: unexpected {type(exc).__name__}: {exc} (run with --debug for details)", err=True)
            sys.exit(EXIT_FAILURE)


def _configure_logging(verbose: int, debug: bool) -> None:
    """Configure logging for a command (`_logging.configure_logging`; `--help` never gets here)."""
    from provender._cli._logging import configure_logging

    configure_logging(verbose, debug)


@click.group(cls=ProvenderGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="provender")
@click.option("-v", "--verbose", count=True, help="More output (-vv for debug logs).")
@click.option("--debug", is_flag=True, envvar="PROVENDER_DEBUG", help="Show tracebacks of errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, debug: bool) -> None:
    """Run local ML models through pluggable providers that share one disk cache.

    \b
    Quick start:
      provender cache import ./my-model --name me/my-model
      provender generate -m me/my-model "Hello"
      provender cache ls
    """
    ctx.meta["provender.debug"] = debug
    _configure_logging(verbose, debug)


def _build() -> click.Group:
    from provender._cli import _builtin
    from provender._plugins import get_plugin_manager

    manager = get_plugin_manager()
    # provender's own commands come through the same hook as every plugin's, registered last
    # so that they are added first (pluggy calls the latest registered first).
    manager.register(_builtin, name=_builtin.NAME, default=True)
    # A plugin that fails here is reported, never fatal.
    added = {name for name, _ in manager.call_each("provender_register_commands", cli=cli)}
    for plugin in manager.implementers("provender_register_commands"):
        if plugin not in added:
            click.echo(f"warning: plugin {plugin!r} failed to add its commands", err=True)
    failed = [p.name for p in manager.plugins.values() if p.status == "failed"]
    if failed and not os.environ.get("PROVENDER_QUIET_PLUGIN_ERRORS"):
        click.echo(f"warning: plugin(s) {', '.join(failed)} failed to load (see `provender plugins`)", err=True)
    return cli


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``provender`` script."""
    # Until the options are parsed, library log records are summarised by _build, not printed
    # (without importing logging: `provender --help` never needs it).
    _log.hold_back()
    try:
        _build().main(args=argv, prog_name="provender")
    except BrokenPipeError:  # a warning or an error line written to a closed stderr, outside any command
        if not output_closed():
            raise
        quit_on_closed_pipe()
    finally:  # what print() left buffered is written now, while a closed pipe can still end us quietly
        _flush_output()


def _flush_output() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:
            quit_on_closed_pipe()
        except (AttributeError, ValueError, OSError):  # closed, or not a real stream
            continue


__all__ = ["cli", "main"]
