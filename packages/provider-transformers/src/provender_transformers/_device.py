"""Device, precision and threads from the ``[transformers]`` settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

_threads_applied: int | None = None


@dataclass(frozen=True)
class Placement:
    """Where and in what precision a model runs."""

    device: str  # "cpu", "cuda", "cuda:1", "mps"
    dtype: Any  # a torch.dtype, or "auto" (the checkpoint's)

    @property
    def dtype_name(self) -> str:
        return self.dtype if isinstance(self.dtype, str) else str(self.dtype).removeprefix("torch.")


def pick_device(requested: str) -> str:
    """``auto``: CUDA, then Apple MPS, then CPU. An unavailable device is a clear error."""
    import torch

    from provender import ConfigError

    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"transformers.device is {requested!r} but this torch has no usable CUDA "
            f"(torch {torch.__version__}); install a CUDA build of torch or set it to auto or cpu",
            setting="transformers.device",
            value=requested,
        )
    if requested == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            "transformers.device is 'mps' but Apple MPS is not available here; set it to auto or cpu",
            setting="transformers.device",
            value=requested,
        )
    return requested


def pick_dtype(requested: str, device: str) -> Any:
    """``auto``: float32 on CPU (half precision is slow there), the checkpoint's dtype on a GPU."""
    import torch

    if requested == "auto":
        return torch.float32 if device == "cpu" else "auto"
    return getattr(torch, requested)


def placement(device: str | None = None, dtype: str | None = None) -> Placement:
    """The placement for a model: the arguments, else the settings; applies ``transformers.threads``."""
    from provender import load_settings
    from provender_transformers.settings import TransformersSettings

    settings = load_settings().section("transformers", TransformersSettings)
    apply_threads(settings.threads)
    chosen = pick_device(device or settings.device)
    return Placement(device=chosen, dtype=pick_dtype(dtype or settings.dtype, chosen))


def apply_threads(threads: int | None) -> None:
    """Set PyTorch's CPU threads once per value (a process-wide setting)."""
    global _threads_applied
    if threads is None or threads == _threads_applied:
        return
    import torch

    torch.set_num_threads(threads)
    _threads_applied = threads
    logger.info("PyTorch CPU threads: %d (transformers.threads)", threads)
