"""provender-transformers: the PyTorch provider for provender (transformers and sentence-transformers
on CUDA, Apple MPS or CPU).

The package stays light until used: ``from provender_transformers import TransformersProvider``
imports no torch; loading a model does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["TransformersProvider", "__version__"]

if TYPE_CHECKING:
    from provender_transformers.provider import TransformersProvider


def __getattr__(name: str) -> Any:
    if name == "TransformersProvider":
        from provender_transformers.provider import TransformersProvider

        return TransformersProvider
    raise AttributeError(name)
