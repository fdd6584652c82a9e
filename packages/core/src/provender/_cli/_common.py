"""What every command shares: error handling, JSON and table output, the cache."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import click

from provender._log import get_logger

if TYPE_CHECKING:
    from provender._cache import CacheManager

logger = get_logger("provender")

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_PIPE = 141  # 128 + SIGPIPE: what a shell reports for `git log | head -1` or `ls | head -1`


def is_usage_error(exc: BaseException) -> bool:
    """Bad input or configuration (exit 2), as opposed to a failure (exit 1).

    provender's errors that are also ValueErrors are bad values (a setting, a name, an
    option, an input file); an unknown provider or a missing source path is bad input too.
    An error class may say otherwise with ``exit_code`` (a collection that does not exist
    is a failure, exit 1, like a model that is not in the cache).
    """
    from provender.errors import ProvenderError, SourceNotFoundError, UnknownProviderError

    code = exc.exit_code if isinstance(exc, ProvenderError) else None
    if code is not None:
        return code == EXIT_USAGE
    return isinstance(exc, (ValueError, UnknownProviderError, SourceNotFoundError))


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    """Print one line to stderr and exit."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def output_closed() -> bool:
    """True if stdout or stderr is a pipe (or socket) whose reader has gone (`provender config | head -1`).

    This tells a closed output apart from a BrokenPipeError of the command's own (a socket to a
    server that hung up): only the first ends a command quietly.
    """
    fds = []
    for stream in (sys.stdout, sys.stderr):
        try:
            fds.append(stream.fileno())
        except (AttributeError, ValueError, OSError):  # None, closed, or an in-memory stream (CliRunner)
            continue
    if not fds:
        return False
    try:
        import select

        poller = select.poll()
    except (ImportError, AttributeError):  # no poll() (Windows): EPIPE there comes from the output
        return True
    for fd in set(fds):
        poller.register(fd, select.POLLOUT)
    return any(mask & (select.POLLERR | select.POLLHUP) for _fd, mask in poller.poll(0))


def quit_on_closed_pipe() -> NoReturn:
    """End the process quietly because its reader closed the pipe: no message, exit 141 (see docs/cli.md).

    As Python's documentation on SIGPIPE recommends, stdout (and stderr) are pointed at
    devnull first, so the interpreter's final flush of what is still buffered cannot print
    "Exception ignored ... BrokenPipeError" on the way out.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        devnull = -1
    if devnull >= 0:
        for stream in (sys.stdout, sys.stderr):
            try:
                os.dup2(devnull, stream.fileno())
            except (AttributeError, ValueError, OSError):
                continue
        os.close(devnull)
    raise SystemExit(EXIT_PIPE)


def echo_json(data: Any) -> None:
    import json  # here: `provender --help` has no use for it

    click.echo(json.dumps(data, indent=2, default=str))


def echo_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    """A plain aligned table (no dependency, pipes cleanly)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        line = "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        click.echo(click.style(line, bold=True) if n == 0 else line)


def get_cache(max_size: int | None = None) -> CacheManager:
    from provender._cache import CacheManager

    return CacheManager(max_size=max_size)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
