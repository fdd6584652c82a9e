"""``[llamacpp]``: provender-llamacpp's settings section, registered with ``provender_register_settings``
(the same names, environment variables and TOML keys as when the core held it)."""

from __future__ import annotations

from pydantic import Field

from provender._settings import Section

__all__ = ["LlamaCppSettings"]


class LlamaCppSettings(Section):
    """``[llamacpp]``: how provender-llamacpp runs GGUF models with llama.cpp."""

    n_ctx: int = Field(4096, ge=0, description="Context size in tokens; 0: the model's own training context.")
    threads: int | None = Field(None, ge=1, description="CPU threads for generation; unset: llama.cpp's default.")
    n_gpu_layers: int = Field(-1, ge=-1, description="Layers offloaded to the GPU (-1: all; 0: CPU only).")
