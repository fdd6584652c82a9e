"""Keys and names: what may be used, and how they map to paths.

Every path the cache builds from a key or a name goes through these checks, so a
name such as ``../../etc``, an absolute path, a NUL byte or a unicode look-alike
can never address anything outside ``cache.dir``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any

from provender.errors import InvalidNameError

# Cache keys: what generate_cache_key returns (64 hex), or a caller's own safe token.
_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# A model name: one or two ASCII path parts, like a Hub repo id ("org/name").
_PART_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
MAX_NAME_LENGTH = 200


def generate_cache_key(repo: str, filename: str | None = None, metadata: dict[str, Any] | None = None) -> str:
    """sha256 (64 hex chars) over repo, filename and metadata; the same inputs give the same key.

    Metadata is serialised as canonical JSON (sorted keys), so dict order does not matter.
    """
    payload = json.dumps([repo, filename or "", metadata or {}], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def hub_key(repo_id: str, repo_type: str = "model") -> str:
    """The cache key of a Hub repo (deterministic, the same in every process)."""
    return generate_cache_key(repo_id, None, {"source": "hub", "repo_type": repo_type})


def imported_key(name: str) -> str:
    """The cache key of an entry imported under `name` (``cache import ... --name``)."""
    return generate_cache_key(name, None, {"source": "import"})


def check_key(key: str) -> str:
    """Return `key` if it is a safe cache key, else raise InvalidNameError."""
    if not isinstance(key, str):
        raise InvalidNameError(str(key), "a cache key must be a string")
    if "\x00" in key:
        raise InvalidNameError(key, "NUL bytes are not allowed")
    if not _KEY_RE.fullmatch(key) or key in (".", ".."):
        raise InvalidNameError(
            key, "a cache key is 1-128 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return key


def check_name(name: str) -> str:
    """Return `name` if it is a valid model name (``org/name`` or ``name``), else raise InvalidNameError."""
    if not isinstance(name, str):
        raise InvalidNameError(str(name), "a model name must be a string")
    if "\x00" in name:
        raise InvalidNameError(name, "NUL bytes are not allowed")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidNameError(name[:40] + "...", f"longer than {MAX_NAME_LENGTH} characters")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise InvalidNameError(name, "absolute paths are not names")
    parts = name.split("/")
    if len(parts) > 2:
        raise InvalidNameError(name, "a name is 'org/name' or 'name'")
    for part in parts:
        if part in ("", ".", "..") or ".." in part:
            raise InvalidNameError(name, "'..' and empty parts are not allowed")
        if not _PART_RE.fullmatch(part):
            raise InvalidNameError(name, "use ASCII letters, digits, '.', '_' and '-', starting with a letter or digit")
    return name


def within(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> bool:
    """True if `path` lies strictly inside `root`, judged on the names alone (no link is followed)."""
    return os.path.normpath(path).startswith(os.path.normpath(root) + os.sep)
