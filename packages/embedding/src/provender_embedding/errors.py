"""provender-embedding's exceptions (``from provender_embedding.errors import CollectionError``;
each is also importable from ``provender_embedding``). All derive from `provender.ProvenderError`::

    ProvenderError
    ├── InputError                (also ValueError) an input file is missing or malformed
    └── CollectionError           (also ValueError) a collection was used wrongly
        └── CollectionNotFoundError   (also LookupError) no collection has this name (exit 1)
"""

from __future__ import annotations

from provender.errors import ProvenderError

__all__ = ["CollectionError", "CollectionNotFoundError", "InputError"]


class InputError(ProvenderError, ValueError):
    """An input file is missing or malformed; names the file and the line."""


class CollectionError(ProvenderError, ValueError):
    """A collection was used wrongly (unknown name, another model, bad item)."""


class CollectionNotFoundError(CollectionError, LookupError):
    """No collection has this name (a failure, exit code 1, like a model not in the cache)."""

    exit_code = 1

    def __init__(self, name: str) -> None:
        super().__init__(f"no collection named {name!r} (see `provender collections ls`)")
        self.name = name
