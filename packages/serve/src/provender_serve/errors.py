"""provender-serve's exceptions (``from provender_serve.errors import APIError``)::

    Exception
    └── APIError   an error answered to an HTTP client, with its status, in the OpenAI shape

`APIError` is the server's, not a `provender.ProvenderError`: it never reaches a command line.
Errors of the layers below (`provender.errors`) are turned into one where a request meets them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["APIError"]


class APIError(Exception):
    """An error answered as ``{"error": {"message", "type", "code", "param"}}`` with `status`."""

    TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 413: "invalid_request_error"}

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param

    @property
    def type(self) -> str:
        if self.status >= 500:
            return "server_error"
        return self.TYPES.get(self.status, "invalid_request_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "code": self.code, "param": self.param}}
