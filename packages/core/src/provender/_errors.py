"""Compatibility: the errors live in the public `provender.errors` module."""

from __future__ import annotations

from typing import Any

from provender import errors


def __getattr__(name: str) -> Any:
    return getattr(errors, name)
