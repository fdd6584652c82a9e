"""What a model directory holds, read cheaply: the helpers providers' claim hooks share.

Only small files are read (``config.json``, sentence-transformers' JSON files, the JSON
header of one safetensors file); nothing here imports a runtime, so claim hooks and
``provender models`` stay fast.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_HEADER = 100 * 1024 * 1024  # a safetensors header is JSON; a larger claim is not a header


def read_json(path: Path, default: Any = None) -> Any:
    """The JSON in `path`, or `default` when it is missing or not JSON."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def read_config(model_dir: Path) -> dict[str, Any] | None:
    """``config.json`` of `model_dir` as a dict, or None."""
    config = read_json(model_dir / "config.json")
    return config if isinstance(config, dict) else None


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


def mlx_weights(model_dir: Path, config: dict[str, Any] | None = None) -> str | None:
    """Why `model_dir` holds MLX weights, or None: MLX quantization in ``config.json``
    (``quantization`` with ``group_size`` and ``bits``) or safetensors written by MLX."""
    config = config if config is not None else read_config(model_dir)
    quant = (config or {}).get("quantization")
    if isinstance(quant, dict) and {"group_size", "bits"} <= set(quant):
        return f"MLX quantization ({quant['bits']}-bit, group size {quant['group_size']}) in config.json"
    for weights in sorted(model_dir.glob("*.safetensors"))[:1]:
        meta = safetensors_metadata(weights)
        if meta and meta.get("format") == "mlx":
            return f"safetensors written by MLX ({weights.name})"
    return None


@dataclass(frozen=True)
class SentenceTransformersConfig:
    """How sentence-transformers runs a model directory (its ``modules.json``, pooling config
    and ``sentence_bert_config.json``): pooling modes, normalisation, maximum sequence length."""

    pooling: dict[str, bool]  # cls, mean, max, mean_sqrt_len
    normalize: bool
    max_seq_length: int | None  # None: the directory does not say


def sentence_transformers_config(model_dir: Path) -> SentenceTransformersConfig | None:
    """The sentence-transformers pipeline `model_dir` describes, or None if it describes none."""
    modules = read_json(model_dir / "modules.json", [])
    modules = [m for m in modules if isinstance(m, dict)] if isinstance(modules, list) else []
    pooling_dir = next((m.get("path") for m in modules if str(m.get("type", "")).endswith("Pooling")), None)
    pool = read_json(model_dir / (pooling_dir or "1_Pooling") / "config.json", {})
    st = read_json(model_dir / "sentence_bert_config.json", {})
    if not (modules or pool or st):
        return None
    pool = pool if isinstance(pool, dict) else {}
    st = st if isinstance(st, dict) else {}
    modes = {"cls": "cls_token", "mean": "mean_tokens", "max": "max_tokens", "mean_sqrt_len": "mean_sqrt_len_tokens"}
    length = st.get("max_seq_length")
    return SentenceTransformersConfig(
        pooling={m: bool(pool.get(f"pooling_mode_{k}", m == "mean" and not pool)) for m, k in modes.items()},
        normalize=any(str(m.get("type", "")).endswith("Normalize") for m in modules),
        max_seq_length=length if isinstance(length, int) and not isinstance(length, bool) and length > 0 else None,
    )
