"""Tiny models for tests and offline demos, built on the spot with transformers' own classes.

A random-weight llama (a few hundred thousand parameters) made by ``LlamaForCausalLM``, with
the tokenizer of `provender.testing` (byte-level BPE, a ChatML template that renders tools),
saved by ``save_pretrained``: a real model directory that transformers, and
`TransformersProvider`, load like any Hub repo. A random-weight cross-encoder (a reranker) on a
real BERT tokenizer, made by ``BertForSequenceClassification`` (`build_tiny_cross_encoder`).
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


def build_tiny_cross_encoder(
    path: str | Path,
    tokenizer_dir: str | Path,
    *,
    seed: int = 0,
    hidden_size: int = 32,
    layers: int = 2,
    sentence_transformers: bool = False,
) -> Path:
    """Write a random-weight cross-encoder (``BertForSequenceClassification``, one label) with the
    tokenizer found in `tokenizer_dir` (a BERT WordPiece one, e.g. all-MiniLM-L6-v2's). With
    `sentence_transformers`, saved by ``CrossEncoder.save_pretrained`` (``modules.json`` and
    ``config_sentence_transformers.json`` beside the weights), else by transformers alone."""
    import torch

    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden_size * 2,
        max_position_embeddings=512,
        type_vocab_size=2,  # the query's segment and the document's
        num_labels=1,
        initializer_range=0.2,  # wide enough that documents get scores far apart
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    if sentence_transformers:
        from sentence_transformers import CrossEncoder

        raw = path.with_name(path.name + ".raw")
        model.save_pretrained(str(raw))
        tokenizer.save_pretrained(str(raw))
        CrossEncoder(str(raw), local_files_only=True).save_pretrained(str(path))
        import shutil

        shutil.rmtree(raw)
    else:
        model.save_pretrained(str(path))
        tokenizer.save_pretrained(str(path))
    return path
