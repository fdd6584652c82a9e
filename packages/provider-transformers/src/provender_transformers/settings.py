"""``[transformers]``: provender-transformers' settings section, registered with
``provender_register_settings`` (the same names, environment variables and TOML keys as when
the core held it)."""

from __future__ import annotations

from pydantic import Field

from provender._settings import Section

__all__ = ["TransformersSettings"]


class TransformersSettings(Section):
    """``[transformers]``: how provender-transformers runs models with PyTorch."""

    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$",
        description="auto (CUDA, then Apple MPS, then CPU), cpu, mps, cuda or cuda:N.",
    )
    dtype: str = Field(
        "auto",
        pattern=r"^(auto|float32|float16|bfloat16)$",
        description="auto (float32 on CPU, the checkpoint's dtype on a GPU), float32, float16 or bfloat16.",
    )
    threads: int | None = Field(None, ge=1, description="CPU threads for PyTorch; unset: PyTorch's default.")
