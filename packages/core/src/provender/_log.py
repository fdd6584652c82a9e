"""The core's loggers: stdlib `logging`, plus holding the core's records back until the CLI
has configured logging.

``get_logger(__name__)`` is ``logging.getLogger(__name__)``. Until the command line has
configured logging, the core's records are held back (a ``NullHandler`` on the
``provender`` logger, which does not propagate): a plugin that fails to load is then
summarised by the CLI in one line, not printed as a log record. `hold_back` (the CLI's
``main``) asks for that; `provender._cli._logging` lifts it when it configures logging.

A lazy wrapper that imported `logging` on the first record stood here until issue 20
item 3: measured against stdlib logging it saved 3-4 ms of ``provender --help`` (about 5%
of ``import click``), which does not decide the 2x goal.

This module imports nothing from provender: it is the bottom layer.
"""

from __future__ import annotations

import logging

__all__ = ["get_logger", "hold_back", "release"]


def hold_back() -> None:
    """Keep the ``provender`` loggers' records quiet until the CLI configures logging."""
    top = logging.getLogger("provender")
    if not any(isinstance(h, logging.NullHandler) for h in top.handlers):
        top.addHandler(logging.NullHandler())
    top.propagate = False


def release() -> None:
    """Records flow again (`provender._cli._logging.configure_logging` restores the logger itself)."""


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)``."""
    return logging.getLogger(name)
