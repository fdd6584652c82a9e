"""The structured-output flags of `provender generate` (and any command that generates).

``--schema FILE_OR_JSON``, ``--choice a,b,c``, ``--regex RE``, ``--grammar FILE``: at most one of
them, turned into a `provender.generation.Constraint` and checked (schema, regex, grammar) before
any model loads; a bad one is one line and exit 2. Nothing here is imported by ``--help``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from provender._cli._common import EXIT_USAGE, fail

F = TypeVar("F", bound=Callable[..., Any])

FLAGS = ("schema", "choice", "regex", "grammar")


def constraint_flags(command: F) -> F:
    """Add the four flags to a click command (its function takes ``schema``, ``choice``, ``regex``, ``grammar``)."""
    for decorator in reversed(
        [
            click.option(
                "--schema",
                metavar="FILE_OR_JSON",
                help="Reply with JSON that fits this JSON Schema (a file, or the schema itself).",
            ),
            click.option("--choice", metavar="A,B,C", help="Reply with exactly one of these comma-separated strings."),
            click.option("--regex", metavar="RE", help="Reply with text that this regular expression matches in full."),
            click.option(
                "--grammar",
                metavar="FILE",
                type=click.Path(dir_okay=False),  # a str: pathlib stays off the --help path
                help="Reply in the language of this grammar (llguidance's Lark dialect).",
            ),
        ]
    ):
        command = decorator(command)
    return command


def _read_json(flag: str, value: str) -> Any:
    import json
    from pathlib import Path

    text = value.strip()
    if not text.startswith(("{", "[")):
        path = Path(value).expanduser()
        if not path.is_file():
            fail(f"{flag}: {value!r} is neither a JSON Schema nor a file", EXIT_USAGE)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"{flag}: cannot read {str(path)!r}: {getattr(exc, 'strerror', None) or exc}", EXIT_USAGE)
        where = str(path)
    else:
        where = "the argument"
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{flag}: {where} is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", EXIT_USAGE)


def constraint_option(schema: str | None, choice: str | None, regex: str | None, grammar: str | None) -> dict[str, Any]:
    """``{"constraint": Constraint}`` for the flag given, ``{}`` for none; exit 2 with one line for
    several flags or a bad value (unreadable file, not JSON, invalid schema, regex or grammar)."""
    given = [f"--{name}" for name, v in zip(FLAGS, (schema, choice, regex, grammar), strict=True) if v is not None]
    if not given:
        return {}
    if len(given) > 1:
        fail(f"{' and '.join(given)}: give one of --schema, --choice, --regex, --grammar", EXIT_USAGE)
    from provender.errors import ProvenderError
    from provender.generation import Constraint

    try:
        if schema is not None:
            constraint = Constraint.json_schema(_read_json("--schema", schema))
        elif choice is not None:
            options = [c.strip() for c in choice.split(",")]
            if not all(options):
                fail(f"--choice: {choice!r} has an empty choice (expected A,B,C)", EXIT_USAGE)
            constraint = Constraint.choice(options)
        elif regex is not None:
            constraint = Constraint.regex(regex)
        else:
            assert grammar is not None
            from pathlib import Path

            try:
                constraint = Constraint.grammar(Path(grammar).expanduser().read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                fail(f"--grammar: cannot read {str(grammar)!r}: {getattr(exc, 'strerror', None) or exc}", EXIT_USAGE)
        from provender._constrain import check_constraint

        check_constraint(constraint)
    except ProvenderError as exc:
        fail(f"{given[0]}: {exc}", EXIT_USAGE)
    return {"constraint": constraint}
