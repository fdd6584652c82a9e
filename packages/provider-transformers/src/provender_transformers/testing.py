"""Tiny models for tests and offline demos, built on the spot with transformers' own classes.

A random-weight llama (a few hundred thousand parameters) made by ``LlamaForCausalLM``, with
the tokenizer of `provender.testing` (byte-level BPE, a ChatML template that renders tools),
saved by ``save_pretrained``: a real model directory that transformers, and
`TransformersProvider`, load like any Hub repo.
"""

from __future__ import annotations

from pathlib import Path

from provender.testing import train_tokenizer


def build_tiny_llama(path: str | Path, *, seed: int = 0, hidden_size: int = 64, layers: int = 2) -> Path:
    """Write a random-weight llama directory (config, safetensors, tokenizer) with transformers' classes."""
    import torch

    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab, eos_id = train_tokenizer(path)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        eos_token_id=eos_id,
        pad_token_id=0,
        bos_token_id=None,
        initializer_range=0.5,  # wide random weights: varied text, not one token repeated
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=0)
    model.save_pretrained(str(path))
    return path
