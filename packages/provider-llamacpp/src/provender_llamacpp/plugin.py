"""The llama.cpp plugin's hooks: register the provider, claim GGUF models by content, forget evicted ones.

Kept light: ``provender --help`` and ``provender plugins`` import this module, never llama_cpp.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from provender import hookimpl

if TYPE_CHECKING:
    from provender import CacheEntry
    from provender.hookspecs import RegisterProvider, RegisterSettings


@hookimpl
def provender_register_providers(register: RegisterProvider) -> None:
    from provender_llamacpp._load import require_llama_cpp

    require_llama_cpp()  # without llama-cpp-python, `provender plugins` shows how to install it
    from provender_llamacpp.provider import LlamaCppProvider

    register("llamacpp", LlamaCppProvider, description="llama.cpp: GGUF models on CPU, CUDA, Metal, Vulkan")


@hookimpl
def provender_claim_model(entry: CacheEntry) -> str | None:
    """GGUF files (the magic and a readable header naming an architecture), whatever they are called."""
    from provender._cache._gguf import gguf_architecture, gguf_in

    return "llamacpp" if any(gguf_architecture(p) for p in gguf_in(entry.model_path)[:1]) else None


@hookimpl
def provender_cache_evicted(entry: CacheEntry) -> None:
    if "provender._pool" in sys.modules:  # else nothing was ever loaded in this process
        sys.modules["provender._pool"].model_pool().unload_entry(entry)


@hookimpl
def provender_register_settings(register: RegisterSettings) -> None:
    from provender_llamacpp.settings import LlamaCppSettings

    register("llamacpp", LlamaCppSettings)
