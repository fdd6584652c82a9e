"""Human sizes and durations: parsing settings and formatting tables.

Decimal units (KB, MB, GB, TB) are powers of 1000, binary units (KiB, MiB...) powers
of 1024, as in `hf cache ls` and Ollama. A bare number is bytes (or seconds).
"""

from __future__ import annotations

import math
import re
import time
from decimal import Decimal

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "kib": 2**10,
    "m": 10**6,
    "mb": 10**6,
    "mib": 2**20,
    "g": 10**9,
    "gb": 10**9,
    "gib": 2**30,
    "t": 10**12,
    "tb": 10**12,
    "tib": 2**40,
    "p": 10**15,
    "pb": 10**15,
    "pib": 2**50,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-zA-Z]*)\s*$")
_DURATION_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([smhd]?)\s*$")

SIZE_HINT = "a size such as 50GB, 500MiB, 1.5TB or a number of bytes"
DURATION_HINT = "a duration such as 30s, 5m, 1h, 0 (unload at once) or -1 (keep forever)"


def parse_size(value: object) -> int:
    """Parse ``50GB``, ``500MiB``, ``"1.5 TB"`` or an integer into a number of bytes.

    Raises ValueError (with a message fit for a user) for negative, fractional-byte,
    non-finite or unknown-unit values.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not {SIZE_HINT}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value} is negative; expected {SIZE_HINT}")
        return value
    if isinstance(value, float):
        if not math.isfinite(value) or value < 0 or value != int(value):
            raise ValueError(f"{value!r} is not {SIZE_HINT}")
        return int(value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not {SIZE_HINT}")
    match = _SIZE_RE.match(value)
    if not match:
        detail = " (sizes cannot be negative)" if value.strip().startswith("-") else ""
        raise ValueError(f"{value!r} is not {SIZE_HINT}{detail}")
    number, unit = match.groups()
    factor = _SIZE_UNITS.get(unit.lower())
    if factor is None:
        raise ValueError(f"{value!r} has an unknown unit {unit!r}; expected {SIZE_HINT}")
    return int((Decimal(number) * factor).to_integral_value())  # Decimal: exact for large counts


def parse_duration(value: object) -> float:
    """Parse ``30s``, ``5m``, ``1h``, ``2d`` or a number of seconds; negative means forever."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not {DURATION_HINT}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not {DURATION_HINT}")
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            number, unit = match.groups()
            return float(number) * _DURATION_UNITS[unit]
    raise ValueError(f"{value!r} is not {DURATION_HINT}")


def format_size(n: int | float) -> str:
    """``1234567`` -> ``"1.2 MB"`` (decimal units, like `hf cache ls`)."""
    n = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


def format_ago(timestamp: float | None, now: float | None = None) -> str:
    """A timestamp as ``"3 minutes ago"`` (``"never"`` for None)."""
    if timestamp is None:
        return "never"
    delta = (time.time() if now is None else now) - timestamp
    if delta < 0:
        return "in the future"
    if delta < 45:
        return "just now"
    for seconds, name in (
        (86400 * 365, "year"),
        (86400 * 30, "month"),
        (86400 * 7, "week"),
        (86400, "day"),
        (3600, "hour"),
        (60, "minute"),
    ):
        if delta >= seconds:
            count = int(delta // seconds)
            return f"{count} {name}{'s' if count != 1 else ''} ago"
    return "1 minute ago"  # 45..59 s
