"""provender-serve: ``provender serve``, every provender provider behind the OpenAI HTTP API.

Models stay loaded between requests (within ``memory.max_models`` and ``memory.keep_alive``),
one request at a time per model, different models in parallel. ``create_app()`` returns
the ASGI application; ``provender serve`` runs it with uvicorn. Starlette and uvicorn are
imported only by the command and `create_app`, so ``provender --help`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ServerOptions", "create_app"]

if TYPE_CHECKING:
    from provender_serve._app import ServerOptions, create_app


def __getattr__(name: str) -> Any:
    if name in __all__:
        from provender_serve import _app

        return getattr(_app, name)
    raise AttributeError(f"module 'provender_serve' has no attribute {name!r}")
