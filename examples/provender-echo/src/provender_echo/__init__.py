"""provender-echo: an example provender plugin (see plugin.py and provider.py)."""

from __future__ import annotations

from provender_echo.provider import EchoProvider

__all__ = ["EchoProvider"]
