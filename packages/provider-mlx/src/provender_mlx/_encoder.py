"""Sentence embeddings with MLX: a compact BERT encoder on mlx.nn plus sentence-transformers pooling.

Covers the BERT architecture (``model_type: bert``), which is what all-MiniLM-L6/L12-v2,
bge-*-en-v1.5, e5-*-v2 and gte-small/base use. Weights load by their Hugging Face names
from safetensors; pooling (mean, CLS, max, mean-sqrt-len), normalisation and the maximum
sequence length come from the model's sentence-transformers files (``modules.json``,
``1_Pooling/config.json``, ``sentence_bert_config.json``). Tokenisation is the model's own
``tokenizer.json`` through the `tokenizers` library.

Written by hand because the alternative, mlx-embeddings, also installs mlx-vlm, mlx-audio,
opencv and datasets (about 1 GB); this file is the whole encoder.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from provender._detect import sentence_transformers_config


@dataclass
class EncoderConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> EncoderConfig:
        return cls(**{k: config[k] for k in cls.__dataclass_fields__ if k in config})


class _Dense(nn.Module):
    """A linear layer holding its weight transposed and contiguous (in, out).

    On MLX's CPU backend ``x @ W.T`` through a transposed view runs at ~4 GFLOP/s here,
    and the same product with a contiguous (in, out) matrix at ~8: the weights are
    transposed once at load time (see `DENSE_LAYERS`).
    """

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.weight_t = mx.zeros((d_in, d_out))
        self.bias = mx.zeros((d_out,))

    def __call__(self, x: mx.array) -> mx.array:
        return x @ self.weight_t + self.bias


DENSE_LAYERS = ("query", "key", "value", "dense")  # whose Hugging Face ".weight" is stored as ".weight_t"


class _SelfAttention(nn.Module):
    def __init__(self, c: EncoderConfig) -> None:
        super().__init__()
        self.heads = c.num_attention_heads
        self.query = _Dense(c.hidden_size, c.hidden_size)
        self.key = _Dense(c.hidden_size, c.hidden_size)
        self.value = _Dense(c.hidden_size, c.hidden_size)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        b, n, d = x.shape

        def split(t: mx.array) -> mx.array:
            return t.reshape(b, n, self.heads, d // self.heads).transpose(0, 2, 1, 3)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        out = mx.fast.scaled_dot_product_attention(q, k, v, scale=1.0 / math.sqrt(d // self.heads), mask=mask)
        return out.transpose(0, 2, 1, 3).reshape(b, n, d)


class _DenseNorm(nn.Module):
    """dense -> (+ residual) -> LayerNorm, as BERT's attention.output and output blocks."""

    def __init__(self, d_in: int, d_out: int, eps: float) -> None:
        super().__init__()
        self.dense = _Dense(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)

    def __call__(self, x: mx.array, residual: mx.array) -> mx.array:
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self, c: EncoderConfig) -> None:
        super().__init__()
        self.self = _SelfAttention(c)
        self.output = _DenseNorm(c.hidden_size, c.hidden_size, c.layer_norm_eps)


class _Intermediate(nn.Module):
    def __init__(self, c: EncoderConfig) -> None:
        super().__init__()
        self.dense = _Dense(c.hidden_size, c.intermediate_size)
        self.act = nn.gelu if c.hidden_act == "gelu" else nn.gelu_approx


class _Layer(nn.Module):
    def __init__(self, c: EncoderConfig) -> None:
        super().__init__()
        self.attention = _Attention(c)
        self.intermediate = _Intermediate(c)
        self.output = _DenseNorm(c.intermediate_size, c.hidden_size, c.layer_norm_eps)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        h = self.attention.output(self.attention.self(x, mask), x)
        return self.output(self.intermediate.act(self.intermediate.dense(h)), h)


class _Embeddings(nn.Module):
    def __init__(self, c: EncoderConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def __call__(self, ids: mx.array, types: mx.array) -> mx.array:
        positions = mx.arange(ids.shape[1])[None, :]
        x = self.word_embeddings(ids) + self.position_embeddings(positions) + self.token_type_embeddings(types)
        return self.LayerNorm(x)


class _Encoder(nn.Module):
    def __init__(self, c: EncoderConfig) -> None:
        super().__init__()
        self.layer = [_Layer(c) for _ in range(c.num_hidden_layers)]


class BertModel(nn.Module):
    """BERT without its pooler head (sentence-transformers pools the token states itself)."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = _Encoder(config)

    def __call__(self, ids: mx.array, attention_mask: mx.array, types: mx.array) -> mx.array:
        # additive mask: padded keys get a large negative score
        mask = ((1.0 - attention_mask.astype(mx.float32)) * -1e9)[:, None, None, :]
        x = self.embeddings(ids, types)
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return x


@dataclass
class Pooling:
    cls: bool = False
    mean: bool = True
    max: bool = False
    mean_sqrt_len: bool = False

    def __call__(self, states: mx.array, mask: mx.array) -> mx.array:
        m = mask.astype(states.dtype)[:, :, None]
        parts = []
        if self.cls:
            parts.append(states[:, 0])
        if self.max:
            parts.append(mx.max(mx.where(m > 0, states, -1e9), axis=1))
        counts = mx.maximum(m.sum(axis=1), 1e-9)
        if self.mean:
            parts.append((states * m).sum(axis=1) / counts)
        if self.mean_sqrt_len:
            parts.append((states * m).sum(axis=1) / mx.sqrt(counts))
        return mx.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]


@dataclass
class SentenceEncoder:
    """A loaded sentence-embedding model: encoder, tokenizer, pooling, normalisation."""

    model: BertModel
    tokenizer: Any  # tokenizers.Tokenizer
    pooling: Pooling
    normalize: bool
    max_seq_length: int
    dimension: int
    extras: dict[str, Any] = field(default_factory=dict)

    def encode(self, texts: list[str], *, normalize: bool | None = None, batch_size: int = 32) -> np.ndarray:
        """Embed `texts` -> float32 (len(texts), dimension). Batches are formed in the given order."""
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            encodings = self.tokenizer.encode_batch(chunk)
            ids = mx.array(np.array([e.ids for e in encodings], dtype=np.int32))
            mask = mx.array(np.array([e.attention_mask for e in encodings], dtype=np.int32))
            types = mx.array(np.array([e.type_ids for e in encodings], dtype=np.int32))
            pooled = self.pooling(self.model(ids, mask, types), mask)
            if self.normalize if normalize is None else normalize:
                pooled = pooled / mx.maximum(mx.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
            out[start : start + len(chunk)] = np.array(pooled, dtype=np.float32)
        return out


def load_sentence_encoder(model_dir: Path) -> SentenceEncoder:
    """Load weights, tokenizer and the sentence-transformers pipeline description from `model_dir`."""
    from tokenizers import Tokenizer

    config = json.loads((model_dir / "config.json").read_text())
    model = BertModel(EncoderConfig.from_dict(config))
    weights: dict[str, mx.array] = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        weights.update(mx.load(str(path)))  # type: ignore[arg-type]
    # some exports prefix every name with "bert."; the pooler and position_ids are not used
    weights = {k.removeprefix("bert."): v for k, v in weights.items()}
    weights = {k: v for k, v in weights.items() if not k.startswith("pooler.") and not k.endswith("position_ids")}
    for name in [k for k in weights if k.endswith(".weight") and k.split(".")[-2] in DENSE_LAYERS]:
        weights[name + "_t"] = mx.contiguous(weights.pop(name).T)
    model.load_weights(list(weights.items()), strict=True)
    mx.eval(model.parameters())

    st = sentence_transformers_config(model_dir)
    pooling = Pooling(**st.pooling) if st is not None else Pooling()
    normalize = st is not None and st.normalize
    max_len = int(
        st.max_seq_length if st and st.max_seq_length else min(config.get("max_position_embeddings", 512), 512)
    )

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(max_length=max_len)
    pad_id = int(config.get("pad_token_id", 0))
    tokenizer.enable_padding(pad_id=pad_id, pad_token=tokenizer.id_to_token(pad_id) or "[PAD]")  # to the longest
    parts = sum((pooling.cls, pooling.mean, pooling.max, pooling.mean_sqrt_len))
    return SentenceEncoder(
        model=model,
        tokenizer=tokenizer,
        pooling=pooling,
        normalize=normalize,
        max_seq_length=max_len,
        dimension=int(config["hidden_size"]) * max(parts, 1),
    )
