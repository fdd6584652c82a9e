"""provender-llamacpp: GGUF models run by llama.cpp, in provender's shared cache.

``LlamaCppProvider("org/repo-GGUF:Q4_K_M")`` or ``provender generate -m llamacpp:me/model``.
Importing this package does not import llama_cpp; loading a model does.
"""

from __future__ import annotations

from provender_llamacpp.provider import LlamaCppProvider

__all__ = ["LlamaCppProvider"]
