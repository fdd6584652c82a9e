"""What every command shares: error handling, JSON and table output, the cache."""

from __future__ import annotations

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
