"""Can transformers serve a directory? Decided by content, never by a name, and cheaply:
``config.json``, the JSON header of one safetensors file, and the list of architectures
in the installed transformers (found on disk; transformers is not imported).
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path
from typing import Any, Literal

from provender._detect import mlx_weights, read_config, read_json, safetensors_metadata

Kind = Literal["generation", "embedding", "rerank"]

GENERATION_SUFFIXES = ("ForCausalLM", "LMHeadModel")
ENCODER_SUFFIXES = ("Model", "ForMaskedLM")
RERANK_SUFFIX = "ForSequenceClassification"  # a cross-encoder: one relevance logit per (query, document)


@cache
def _architectures_dir() -> Path | None:
    spec = importlib.util.find_spec("transformers")  # locates the package without importing it
    if spec is None or not spec.origin:
        return None
    return Path(spec.origin).parent / "models"


def known_model_type(model_type: str) -> bool:
    """True if the installed transformers has the architecture family `model_type` (built in:
    no remote code is ever run)."""
    root = _architectures_dir()
    return bool(model_type) and root is not None and (root / model_type.replace("-", "_")).is_dir()


def model_kind(model_dir: Path, config: dict[str, Any] | None = None) -> Kind | None:
    """``"generation"`` (a causal LM), ``"embedding"`` (an encoder), ``"rerank"`` (a cross-encoder:
    `is_cross_encoder`), or None."""
    config = config if config is not None else read_config(model_dir)
    if config is None:
        return None
    if is_cross_encoder(model_dir, config):
        return "rerank"
    archs = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    if any(a.endswith(GENERATION_SUFFIXES) for a in archs):
        return "generation"
    if (model_dir / "modules.json").is_file() or any(a.endswith(ENCODER_SUFFIXES) for a in archs):
        return "embedding"
    return None


def is_cross_encoder(model_dir: Path, config: dict[str, Any]) -> bool:
    """A sequence classifier with one label (``*ForSequenceClassification``), or a directory
    sentence-transformers saved as a ``CrossEncoder`` (config_sentence_transformers.json, or the
    ``sentence_transformers``/``sbert_ce_default_activation_function`` keys older versions wrote)."""
    saved = read_json(model_dir / "config_sentence_transformers.json")
    saved = saved if isinstance(saved, dict) else {}
    if saved.get("model_type") == "CrossEncoder" or "sbert_ce_default_activation_function" in config:
        return True
    if isinstance(config.get("sentence_transformers"), dict) and "activation_fn" in config["sentence_transformers"]:
        return True
    archs = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    return any(a.endswith(RERANK_SUFFIX) for a in archs) and labels(config) == 1


def labels(config: dict[str, Any]) -> int:
    """How many labels a classifier's config gives (transformers' default: 2)."""
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        return len(id2label)
    count = config.get("num_labels")
    return count if isinstance(count, int) and not isinstance(count, bool) else 2


def weights_problem(model_dir: Path, config: dict[str, Any]) -> str | None:
    """None if transformers can read the weights, else why not."""
    if mlx_weights(model_dir, config):
        return "MLX weights (serve it with mlx)"
    tensors = sorted(model_dir.glob("*.safetensors"))
    if tensors:
        return None if safetensors_metadata(tensors[0]) is not None else f"{tensors[0].name} is not a safetensors file"
    return None if any(model_dir.glob("pytorch_model*.bin")) else "no .safetensors or pytorch_model.bin weights"


def transformers_evidence(model_dir: Path) -> str | None:
    """Why transformers can serve `model_dir` (for messages and tests), or None."""
    if not model_dir.is_dir():
        return None
    config = read_config(model_dir)
    if config is None:
        return None
    model_type = str(config.get("model_type") or "")
    if not known_model_type(model_type):
        return None
    kind = model_kind(model_dir, config)
    if kind is None or weights_problem(model_dir, config) is not None:
        return None
    if kind == "rerank":
        return f"{model_type} reranker (cross-encoder)"
    st = " (sentence-transformers)" if (model_dir / "modules.json").is_file() else ""
    return f"{model_type} {kind} model{st}"


def load_problem(model_dir: Path) -> str | None:
    """None if `model_dir` looks loadable, else what is wrong, in words."""
    if not model_dir.is_dir():
        return "not a directory"
    config = read_config(model_dir)
    if config is None:
        return "no readable config.json"
    model_type = str(config.get("model_type") or "")
    if not model_type:
        return "config.json has no model_type"
    if not known_model_type(model_type):
        return f"model_type {model_type!r} is not an architecture this transformers knows (no remote code is run)"
    if model_kind(model_dir, config) is None:
        archs = ", ".join(config.get("architectures") or []) or "none"
        if RERANK_SUFFIX in archs:
            return f"{archs} has {labels(config)} labels: a classifier, not a reranker (which scores with one)"
        return f"architectures ({archs}) are neither a causal language model, an encoder nor a cross-encoder"
    return weights_problem(model_dir, config)
