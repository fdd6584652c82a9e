"""Compatibility: the errors live in the public `provender.errors` module."""

from __future__ import annotations

from provender.errors import *  # noqa: F403
from provender.errors import __all__ as __all__
