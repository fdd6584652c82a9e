"""How the command line configures logging (imported when a command runs, never by ``--help``).

Every ``provender*`` logger (the core and every provender package, by name prefix) reports
from the level ``-v``/``-vv``/``--debug`` asks for; other libraries from WARNING, as Python
prints them when nothing is configured.
"""

from __future__ import annotations

import logging
import sys

from provender import _log


class _PrefixFilter(logging.Filter):
    """provender's records (loggers named ``provender``, ``provender.*``, ``provender_*``: the
    core and every provender package, by name prefix) from `level` up; any other library's
    from WARNING up, as Python prints them when nothing is configured."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "provender" or record.name.startswith(("provender.", "provender_")):
            return record.levelno >= self.level
        return record.levelno >= logging.WARNING


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the current sys.stderr (a test runner may swap it between commands)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging(verbose: int, debug: bool) -> None:
    """One stderr handler on the root logger, filtered by `_PrefixFilter`; provender's records flow again."""
    level = logging.DEBUG if debug or verbose > 1 else logging.INFO if verbose else logging.WARNING
    handler = _StderrHandler(sys.stderr)
    handler.set_name("provender")
    handler.addFilter(_PrefixFilter(level))
    handler.setFormatter(
        logging.Formatter("%(levelname)s: %(message)s" if verbose or debug else "warning: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if h.get_name() != "provender"] + [handler]
    if root.getEffectiveLevel() > level:
        root.setLevel(level)
    top = logging.getLogger("provender")  # quiet until now (main): its records reach `handler` again
    top.handlers[:] = [h for h in top.handlers if not isinstance(h, logging.NullHandler)]
    top.propagate = True
    top.setLevel(logging.NOTSET)
    _log.release()
