"""provender-mlx: the MLX provider for provender (mlx-lm on Apple silicon, Linux CPU and CUDA).

The package stays light until used: ``from provender_mlx import MLXProvider`` imports
no MLX; loading a model does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["MLXProvider", "__version__"]

if TYPE_CHECKING:
    from provender_mlx.provider import MLXProvider


def __getattr__(name: str) -> Any:
    if name == "MLXProvider":
        from provender_mlx.provider import MLXProvider

        return MLXProvider
    raise AttributeError(name)
