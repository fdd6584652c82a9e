"""Is a directory an MLX model? Decided by content, never by "mlx" in a name.

Reads only small things: ``config.json`` and the JSON header of one safetensors file.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

MAX_HEADER = 100 * 1024 * 1024
ENCODER_TYPES = (
    "bert",
)  # architectures provender_mlx._encoder runs  # a safetensors header is JSON; a larger claim is not a header


def safetensors_metadata(path: Path) -> dict[str, Any] | None:
    """The ``__metadata__`` of a safetensors file (its header), or None if it is not one."""
    try:
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if not 0 < size <= MAX_HEADER:
                return None
            header = json.loads(f.read(size))
    except (OSError, struct.error, ValueError):
        return None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta if isinstance(meta, dict) else {}


def read_config(model_dir: Path) -> dict[str, Any] | None:
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def mlx_evidence(model_dir: Path) -> str | None:
    """Why `model_dir` is an MLX model (for messages and tests), or None if it is not one.

    MLX models carry MLX quantization metadata in ``config.json`` (``quantization``
    with ``group_size`` and ``bits``), or safetensors written by MLX (``format: mlx``).
    """
    if not model_dir.is_dir():
        return None
    config = read_config(model_dir)
    if config is None or "model_type" not in config:
        return None
    quant = config.get("quantization")
    if isinstance(quant, dict) and {"group_size", "bits"} <= set(quant):
        return f"MLX quantization ({quant['bits']}-bit, group size {quant['group_size']}) in config.json"
    for weights in sorted(model_dir.glob("*.safetensors"))[:1]:
        meta = safetensors_metadata(weights)
        if meta and meta.get("format") == "mlx":
            return f"safetensors written by MLX ({weights.name})"
    return None


def looks_loadable(model_dir: Path) -> str | None:
    """None if mlx-lm can try to load `model_dir`, else what is missing."""
    if not model_dir.is_dir():
        return "not a directory"
    config = read_config(model_dir)
    if config is None:
        return "no readable config.json"
    if "model_type" not in config:
        return "config.json has no model_type"
    if not any(model_dir.glob("*.safetensors")):
        return "no .safetensors weights"
    return None


def encoder_evidence(model_dir: Path) -> str | None:
    """Why `model_dir` is a sentence-embedding model the MLX encoder runs, or None."""
    config = read_config(model_dir) if model_dir.is_dir() else None
    if config is None or config.get("model_type") not in ENCODER_TYPES:
        return None
    if not (model_dir / "tokenizer.json").is_file() or not any(model_dir.glob("*.safetensors")):
        return None
    has_st = (model_dir / "modules.json").is_file() or (model_dir / "1_Pooling" / "config.json").is_file()
    return f"{config['model_type']} encoder{' with sentence-transformers pooling' if has_st else ''}"
