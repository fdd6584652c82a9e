"""Metadata filters: ``where={"key": value}`` as SQL over the items' JSON metadata.

Every key must match (AND). A value is a string, a number, a bool or None, compared with the
metadata's value of the same JSON type (``2024`` matches the number 2024, not the string
"2024"); a list means any of its values. ``--where key=value`` on the command line matches
the string, or the JSON number, bool or null the text spells (``year=2024`` matches 2024 and
"2024"; ``draft=true`` matches true and "true").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from provender_embedding.errors import CollectionError

Where = Mapping[str, Any]


def where_sql(where: Where | None) -> tuple[str, list[Any]]:
    """``(" AND ...", params)`` to append to a query over ``items``; empty for no filter."""
    if where is None:
        return "", []
    if not isinstance(where, Mapping):
        raise CollectionError(f"where must be a mapping of metadata keys to values, not {type(where).__name__}")
    clauses: list[str] = []
    params: list[Any] = []
    for key, wanted in where.items():
        if not isinstance(key, str) or not key or '"' in key or "\\" in key:
            raise CollectionError(f"where: invalid metadata key {key!r} (a non-empty string without quotes)")
        path = f'$."{key}"'
        options = wanted if isinstance(wanted, list | tuple) else [wanted]
        if not options:
            raise CollectionError(f"where: no values given for {key!r}")
        parts = []
        for value in options:
            sql, values = _match(path, key, value)
            parts.append(sql)
            params.extend(values)
        clauses.append("(" + " OR ".join(parts) + ")")
    return "".join(f" AND {c}" for c in clauses), params


def _match(path: str, key: str, value: Any) -> tuple[str, list[Any]]:
    if value is None:
        return "json_type(metadata, ?) = 'null'", [path]
    if isinstance(value, bool):
        return f"json_type(metadata, ?) = '{'true' if value else 'false'}'", [path]
    if isinstance(value, int | float):
        return "(json_type(metadata, ?) IN ('integer', 'real') AND json_extract(metadata, ?) = ?)", [path, path, value]
    if isinstance(value, str):
        return "(json_type(metadata, ?) = 'text' AND json_extract(metadata, ?) = ?)", [path, path, value]
    raise CollectionError(f"where: {key!r} must be a string, number, bool or None, not {type(value).__name__}")


def parse_where(pairs: Iterable[str]) -> dict[str, list[Any]] | None:
    """``["key=value", ...]`` from the command line as a `where` mapping (None if empty)."""
    where: dict[str, list[Any]] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise CollectionError(f"--where {pair!r}: expected KEY=VALUE")
        options: list[Any] = [text]
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = text
        if parsed is None or isinstance(parsed, bool | int | float):
            options.append(parsed)
        if key in where:
            raise CollectionError(f"--where {key!r} given twice (a key must match one value)")
        where[key] = options
    return where or None
