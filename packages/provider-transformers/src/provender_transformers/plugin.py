"""The transformers plugin's hooks: register the provider, claim models by content, forget evicted ones."""

from __future__ import annotations

import importlib.util
import sys
from typing import TYPE_CHECKING

from provender import hookimpl

if TYPE_CHECKING:
    from provender import CacheEntry
    from provender.hookspecs import RegisterProvider, RegisterSettings


@hookimpl
def provender_register_providers(register: RegisterProvider) -> None:
    from provender_transformers.provider import INSTALL_HINT, TransformersProvider

    # importing torch takes seconds: check it is there without importing it (loading a model imports it)
    missing = [name for name in ("torch", "transformers") if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"{' and '.join(missing)} not installed; install with: {INSTALL_HINT}")
    # the fastest provider off Apple silicon (benchmarks/README.md)
    register(
        "transformers", TransformersProvider, description="PyTorch: transformers, sentence-transformers", priority=10
    )


@hookimpl
def provender_claim_model(entry: CacheEntry) -> str | None:
    from provender_transformers._detect import transformers_evidence

    return "transformers" if transformers_evidence(entry.model_path) else None


@hookimpl
def provender_cache_evicted(entry: CacheEntry) -> None:
    if "provender._pool" in sys.modules:  # else nothing was ever loaded in this process
        sys.modules["provender._pool"].model_pool().unload_entry(entry)


@hookimpl
def provender_register_settings(register: RegisterSettings) -> None:
    from provender_transformers.settings import TransformersSettings

    register("transformers", TransformersSettings)
