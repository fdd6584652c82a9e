"""Conversations persisted under ``<data.dir>/agent/sessions/<id>.json``, resumable by id."""

from __future__ import annotations

import datetime
import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provender import ProvenderError

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def sessions_dir() -> Path:
    from provender import load_settings

    return load_settings().data.dir / "agent" / "sessions"


@dataclass
class Session:
    """A saved conversation: ``Session.open(id)`` resumes it (or starts it, if new)."""

    id: str
    path: Path
    messages: list[dict[str, Any]] = field(default_factory=list)
    created: float = field(default_factory=time.time)

    @classmethod
    def open(cls, session_id: str | None = None, *, root: Path | None = None) -> Session:
        session_id = session_id or uuid.uuid4().hex[:12]
        if not _ID.fullmatch(session_id):
            raise ProvenderError(f"invalid session id {session_id!r}: use letters, digits, '_' and '-'")
        path = (root or sessions_dir()) / f"{session_id}.json"
        if path.exists():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                raise ProvenderError(f"session {session_id!r} cannot be read ({path}): {exc}") from None
            return cls(session_id, path, list(data.get("messages", [])), float(data.get("created", time.time())))
        return cls(session_id, path)

    @property
    def exists(self) -> bool:
        return self.path.exists()

    def save(self, messages: list[dict[str, Any]]) -> None:
        """Write atomically: a crash leaves the previous version, never half a file."""
        self.messages = list(messages)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(
            json.dumps(
                {"id": self.id, "created": self.created, "updated": time.time(), "messages": self.messages},
                indent=1,
                default=str,
            )
        )
        tmp.replace(self.path)

    @staticmethod
    def list(root: Path | None = None) -> list[dict[str, Any]]:
        """Every saved session: ``id``, ``messages`` (count), ``updated`` (ISO 8601, UTC) and
        ``error`` (why a session file cannot be read; it is listed, not hidden)."""
        folder = root or sessions_dir()
        rows = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                data = json.loads(path.read_text())
                row = {"id": path.stem, "messages": len(data.get("messages", [])), "updated": data.get("updated")}
            except (OSError, ValueError, AttributeError, TypeError) as exc:
                row = {"id": path.stem, "messages": None, "updated": None, "error": f"cannot be read: {exc}"}
            if isinstance(row["updated"], (int, float)):
                row["updated"] = datetime.datetime.fromtimestamp(row["updated"], tz=datetime.UTC).isoformat()
            rows.append(row)
        return rows
