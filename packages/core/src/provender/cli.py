"""What a plugin's commands share with provender's own: output helpers and error handling.

A plugin adds commands in ``provender_register_commands(cli)``; inside them::

    from provender.cli import echo_json, echo_table, fail, json_option

Commands added to the ``provender`` group already get its error handling (a
`provender.errors.ProvenderError` becomes one line on stderr and exit code 2 for bad
input or configuration, 1 for a failure, never a traceback unless ``--debug``);
`is_usage_error` tells the two apart for a command that handles errors itself.
"""

from __future__ import annotations

from provender._cli import ProvenderGroup, cli, main
from provender._cli._common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    echo_json,
    echo_table,
    fail,
    get_cache,
    is_usage_error,
    json_option,
)

__all__ = [
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "ProvenderGroup",
    "cli",
    "echo_json",
    "echo_table",
    "fail",
    "get_cache",
    "is_usage_error",
    "json_option",
    "main",
]
