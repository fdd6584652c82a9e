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
DURATION_HINT = 'a duration such as 30s, 5m, 1h, 0 (unload at once) or -1 or "forever" (keep forever)'
FOREVER = -1.0
MAX_DURATION = 3650 * 86400.0  # ten years: longer is "forever"; every timestamp it makes can be shown


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
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{value!r} is not {SIZE_HINT}")
        if value != int(value):
            raise ValueError(f"{value!r} is not a whole number of bytes; expected {SIZE_HINT}")
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
    count = Decimal(number) * factor  # Decimal: exact for large counts
    if count != count.to_integral_value():
        raise ValueError(f"{value!r} is {count.normalize():f} bytes, not a whole number of bytes; expected {SIZE_HINT}")
    return int(count)


def parse_limit(value: object) -> int:
    """`parse_size` for a size limit, which must be at least one byte."""
    size = parse_size(value)
    if size < 1:
        raise ValueError("a limit of 0 bytes leaves no room for any model; give a size such as 50GB")
    return size


def parse_duration(value: object) -> float:
    """Parse ``30s``, ``5m``, ``1h``, ``2d``, a number of seconds, or ``forever``.

    Any negative value, and ``forever``, is `FOREVER` (-1.0: never unloaded, Ollama's
    negative keep_alive). A duration past `MAX_DURATION` (ten years) is refused rather than
    carried into timestamps no clock can show: "forever" says what such a number means.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not {DURATION_HINT}")
    seconds: float | None = None
    if isinstance(value, int):
        seconds = -1.0 if value < 0 else float(min(value, 2 * int(MAX_DURATION)))  # 10**400 included
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not {DURATION_HINT}")
        seconds = value
    elif isinstance(value, str):
        if value.strip().lower() == "forever":
            return FOREVER
        match = _DURATION_RE.match(value)
        if match:
            number, unit = match.groups()
            seconds = float(number) * _DURATION_UNITS[unit]
    if seconds is None:
        raise ValueError(f"{value!r} is not {DURATION_HINT}")
    if seconds < 0:
        return FOREVER
    if seconds > MAX_DURATION:  # an overflowing string ("1" and 400 zeros) included: inf
        shown = _shown_number(value)
        raise ValueError(
            f"{shown} is longer than the longest duration, {format_duration(MAX_DURATION)} (ten years); "
            'for no limit give -1 or "forever"'
        )
    return seconds


def _shown_number(value: object) -> str:
    """A value for an error message, kept short (a 400-digit string, a huge int)."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:36]) + "..."
    if isinstance(value, int):
        return str(value) if value < 10**40 else "a number over 10**40"
    return f"{value:g}"


def format_size(n: int | float) -> str:
    """``1234567`` -> ``"1.2 MB"`` (decimal units, like `hf cache ls`)."""
    n = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")  # pragma: no cover


_EXACT_UNITS = (
    ("PB", 10**15),
    ("PiB", 2**50),
    ("TB", 10**12),
    ("TiB", 2**40),
    ("GB", 10**9),
    ("GiB", 2**30),
    ("MB", 10**6),
    ("MiB", 2**20),
    ("KB", 10**3),
    ("KiB", 2**10),
)


def format_size_exact(n: int) -> str:
    """A size as a person would write it in a setting, without losing a byte.

    ``50000000000`` -> ``"50 GB"``, ``524288000`` -> ``"500 MiB"``, ``1500000000000`` ->
    ``"1.5 TB"``; a count no unit divides to two decimals stays in bytes (``"1234567 B"``).
    `parse_size` reads every result back to the same number.
    """
    for unit, factor in _EXACT_UNITS:
        if n >= factor:
            q = Decimal(n) / factor
            if q == q.quantize(Decimal("0.01")):
                return f"{q.normalize():f} {unit}"
    return f"{n} B"


def format_duration(seconds: float) -> str:
    """A duration as a setting would be written: ``300`` -> ``"5m"``, ``-1`` -> ``"forever"``."""
    if seconds < 0:
        return "forever"
    for unit, factor in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= factor and seconds % factor == 0:
            return f"{int(seconds // factor)}{unit}"
    return f"{seconds:g}s"


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
