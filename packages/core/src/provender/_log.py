"""Loggers that import `logging` only when a record is written.

Every ``provender`` command, ``--help`` included, imports the plugin layer, and a plugin
written in the simplest style imports `provender.Provider`; importing `logging` costs
about 5 ms here, a seventh of importing click. The modules on that path take their logger
from here: ``logger = get_logger(__name__)`` behaves as ``logging.getLogger(__name__)``
(the same logger, the same records, pytest's caplog sees them), and `logging` loads on
the first record.

Until the command line has configured logging, the core's records are held back (a
``NullHandler`` on the ``provender`` logger, which does not propagate): a plugin that
fails to load is then summarised by the CLI in one line, not printed as a log record.
`hold_back` (the CLI's ``main``) asks for that without importing `logging`;
`provender._cli` lifts it when it configures logging.

This module imports nothing from provender: it is the bottom layer.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging

__all__ = ["LazyLogger", "get_logger", "hold_back", "release"]

_holding = False


def hold_back() -> None:
    """Keep the ``provender`` loggers' records quiet until `release` (imports `logging` only if loaded)."""
    global _holding
    _holding = True
    if "logging" in sys.modules:
        _quiet(sys.modules["logging"])


def release() -> None:
    """Records flow again (the command line calls it once it has configured logging)."""
    global _holding
    _holding = False


def _quiet(logging_module: Any) -> None:
    top = logging_module.getLogger("provender")
    if not any(isinstance(h, logging_module.NullHandler) for h in top.handlers):
        top.addHandler(logging_module.NullHandler())
    top.propagate = False


class LazyLogger:
    """``logging.getLogger(name)``, resolved on first use (any attribute: ``warning``, ``debug``...)."""

    __slots__ = ("_logger", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self._logger: logging.Logger | None = None

    def resolve(self) -> logging.Logger:
        """The real logger (imports `logging` the first time)."""
        if self._logger is None:
            import logging

            if _holding:
                _quiet(logging)
            self._logger = logging.getLogger(self.name)
        return self._logger

    def _held(self) -> bool:
        """A record of the core's, held back, while nothing has imported `logging`: nobody can have
        attached a handler, so it could reach only the NullHandler. Dropped without importing it."""
        return (
            _holding
            and "logging" not in sys.modules
            and (self.name == "provender" or self.name.startswith("provender."))
        )

    def __getattr__(self, attr: str) -> Any:
        """`debug`, `info`, `warning`... of the real logger (a record held back is dropped here)."""
        if attr in _RECORDS and self._held():
            return _drop
        return getattr(self.resolve(), attr)

    def __repr__(self) -> str:
        return f"LazyLogger({self.name!r})"


_RECORDS = frozenset({"debug", "info", "warning", "error", "exception", "critical", "log"})


def _drop(*args: object, **kwargs: object) -> None:
    """A record nobody could receive (see `LazyLogger._held`)."""


def get_logger(name: str) -> LazyLogger:
    """A logger named `name` that imports `logging` on first use."""
    return LazyLogger(name)
