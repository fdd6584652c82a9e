"""The MLX plugin's hooks: register the provider, claim MLX models, forget evicted ones."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from provender import hookimpl

if TYPE_CHECKING:
    from provender import CacheEntry
    from provender.hookspecs import RegisterProvider


@hookimpl
def provender_register_providers(register: RegisterProvider) -> None:
    from provender_mlx.provider import MLXProvider, require_mlx

    require_mlx()  # on a machine without a usable MLX, `provender plugins` shows why
    import platform

    # the fastest provider on Apple silicon (benchmarks/README.md); elsewhere others go first
    apple = platform.system() == "Darwin" and platform.machine() == "arm64"
    register(
        "mlx", MLXProvider, description="mlx-lm: Apple silicon (Metal), Linux CPU, CUDA", priority=20 if apple else 0
    )


@hookimpl
def provender_claim_model(entry: CacheEntry) -> str | None:
    from provender_mlx._detect import encoder_evidence, mlx_evidence

    path = entry.model_path
    return "mlx" if mlx_evidence(path) or encoder_evidence(path) else None


@hookimpl
def provender_cache_evicted(entry: CacheEntry) -> None:
    if "provender._pool" in sys.modules:  # else nothing was ever loaded in this process
        sys.modules["provender._pool"].model_pool().unload_entry(entry)
