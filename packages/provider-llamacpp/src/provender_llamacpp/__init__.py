"""provender-llamacpp: GGUF models run by llama.cpp, in provender's shared cache.

``LlamaCppProvider("org/repo-GGUF:Q4_K_M")`` or ``provender generate -m llamacpp:me/model``.
Imports are lazy: loading the plugin (``provender --help``) imports neither the provider
nor llama_cpp; loading a model does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["LlamaCppProvider"]


def __getattr__(name: str) -> Any:
    if name == "LlamaCppProvider":
        from provender_llamacpp.provider import LlamaCppProvider

        return LlamaCppProvider
    raise AttributeError(f"module 'provender_llamacpp' has no attribute {name!r}")


if TYPE_CHECKING:
    from provender_llamacpp.provider import LlamaCppProvider
