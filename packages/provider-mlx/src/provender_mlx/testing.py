"""Tiny models for tests and offline demos, built on the spot with mlx-lm's own model classes.

A random-weight llama (a few hundred thousand parameters) with the tokenizer of
`provender.testing` (byte-level BPE, ChatML template): a real model directory that mlx-lm,
and therefore `MLXProvider`, loads like any other.
"""

from __future__ import annotations

import json
from pathlib import Path

from provender.testing import CHATML, SPECIAL_TOKENS, train_tokenizer


def build_tiny_llama(
    path: str | Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    layers: int = 2,
    vocab_size: int = 300,
    constant_token: str | None = None,
) -> Path:
    """Write a random-weight llama model directory that mlx-lm loads (config, safetensors, tokenizer).

    ``constant_token``: the model greedily emits only this token, forever. It gets id 0 and
    the final norm is zeroed, so every logit ties and argmax picks 0. With ``"<tool_call>"``
    it is a real model that never stops calling tools, for testing an agent's step limit.
    """
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import llama

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    specials = [constant_token, *SPECIAL_TOKENS] if constant_token else SPECIAL_TOKENS
    vocab, eos_id = train_tokenizer(path, vocab_size, specials, chat_template=CHATML)
    config = {
        "model_type": "llama",
        "hidden_size": hidden_size,
        "num_hidden_layers": layers,
        "intermediate_size": hidden_size * 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": True,
        "eos_token_id": eos_id,
        "torch_dtype": "float32",
    }
    mx.random.seed(seed)
    model = llama.Model(llama.ModelArgs.from_dict(config))  # type: ignore[no-untyped-call]
    if constant_token:
        model.model.norm.weight = mx.zeros_like(model.model.norm.weight)
    mx.eval(model.parameters())
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(path / "model.safetensors"), weights, metadata={"format": "mlx"})
    (path / "config.json").write_text(json.dumps(config, indent=1))
    return path
