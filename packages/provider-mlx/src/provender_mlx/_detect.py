"""Is a directory an MLX model? Decided by content (``config.json``, a safetensors header), never by a name."""

from __future__ import annotations

from pathlib import Path

from provender._detect import mlx_weights, read_config

ENCODER_TYPES = ("bert",)  # architectures provender_mlx._encoder runs


def mlx_evidence(model_dir: Path) -> str | None:
    """Why `model_dir` is an MLX model (MLX quantization or MLX-written safetensors), or None."""
    config = read_config(model_dir) if model_dir.is_dir() else None
    return mlx_weights(model_dir, config) if config is not None and "model_type" in config else None


def looks_loadable(model_dir: Path) -> str | None:
    """None if mlx-lm can try to load `model_dir`, else what is missing."""
    config = read_config(model_dir) if model_dir.is_dir() else None
    if config is None:
        return "no readable config.json" if model_dir.is_dir() else "not a directory"
    if "model_type" not in config:
        return "config.json has no model_type"
    return None if any(model_dir.glob("*.safetensors")) else "no .safetensors weights"


def encoder_evidence(model_dir: Path) -> str | None:
    """Why `model_dir` is a sentence-embedding model the MLX encoder runs, or None."""
    config = read_config(model_dir) if model_dir.is_dir() else None
    if config is None or config.get("model_type") not in ENCODER_TYPES:
        return None
    archs = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    if any(a.endswith("ForSequenceClassification") for a in archs):  # a cross-encoder (reranker), not an embedder
        return None
    if not (model_dir / "tokenizer.json").is_file() or not any(model_dir.glob("*.safetensors")):
        return None
    has_st = (model_dir / "modules.json").is_file() or (model_dir / "1_Pooling" / "config.json").is_file()
    return f"{config['model_type']} encoder{' with sentence-transformers pooling' if has_st else ''}"
