"""provender-echo: an example provender plugin (see plugin.py and provider.py).

Keep a plugin package's ``__init__`` light: the entry point imports it for every
``provender`` command, ``--help`` included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["EchoProvider"]

if TYPE_CHECKING:
    from provender_echo.provider import EchoProvider


def __getattr__(name: str) -> Any:
    if name == "EchoProvider":
        from provender_echo.provider import EchoProvider

        return EchoProvider
    raise AttributeError(name)
