"""Real GGUF files for tests, benchmarks and offline demos, written with the ``gguf`` package.

No model can be downloaded in CI, so the tests build their own:

- `build_tiny_llama`: a random-weight llama (a few hundred thousand parameters) with a
  byte-level BPE vocabulary (`provender.testing`'s, trained by the ``tokenizers`` library:
  GPT-2's pre-tokenizer, which llama.cpp names ``gpt-2``) and its ChatML chat template
  that also renders tools. Its output is nonsense, but deterministic, printable ASCII, and it
  exercises exactly the code paths of a real model: tokenizer, sampler, chat template.
- `convert_bert`: a sentence-transformers BERT model (all-MiniLM-L6-v2) converted to a
  GGUF embedding model the way llama.cpp's ``convert_hf_to_gguf.py`` does it (same keys,
  tensor names and vocabulary), without torch: safetensors are read with numpy.

Requires ``gguf`` and ``numpy`` (and ``tokenizers`` for the tiny llama):
``pip install "provender-llamacpp[test]"``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from provender._detect import sentence_transformers_config
from provender.testing import CHAT_TEMPLATE, SPECIAL_TOKENS, bpe_vocabulary, train_bpe
from provender_llamacpp._load import MAX_SEQ_LENGTH_KEY

QUANT_TYPES = ("F32", "F16", "Q8_0")  # what build_tiny_llama can write (gguf's numpy quantisers)


def _require() -> Any:
    try:
        import gguf
        import numpy  # noqa: F401
    except ImportError as exc:  # pragma: no cover - a missing test extra
        raise ImportError('building test GGUFs needs gguf and numpy: pip install "provender-llamacpp[test]"') from exc
    return gguf


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte <-> printable-character table, reversed (character -> byte)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def build_tiny_llama(
    path: str | Path,
    *,
    seed: int = 0,
    quant: str = "F32",
    n_embd: int = 64,
    n_layer: int = 2,
    vocab_size: int = 320,
    split_max_tensors: int = 0,
    chat_template: str | None = CHAT_TEMPLATE,
    corpus: str | None = None,
) -> Path:
    """Write a tiny random llama as GGUF at `path` (``.gguf``); returns the path of its (first) file.

    ``quant``: ``F32``, ``F16`` or ``Q8_0`` (the 2-D weights). The same `seed` gives the same
    weights whatever the quant. ``split_max_tensors`` > 0 writes a split GGUF
    (``NAME-00001-of-0000N.gguf``, the parts llama.cpp loads from the first one).
    Greedy output is printable ASCII: one residual dimension is held constant and the output
    layer reads it to favour printable tokens, so streams and stop strings are easy to check.
    ``corpus``: the text the BPE is trained on (`provender.testing.train_bpe`; its own corpus
    gives about 400 tokens whatever `vocab_size` asks).
    """
    gguf = _require()
    import numpy as np

    if quant not in QUANT_TYPES:
        raise ValueError(f"quant must be one of {', '.join(QUANT_TYPES)}, not {quant!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens, merges = bpe_vocabulary(train_bpe(vocab_size, corpus=corpus))
    n_vocab, n_head, n_head_kv, n_ff = len(tokens), 4, 2, n_embd * 2
    head_dim = n_embd // n_head
    rng = np.random.default_rng(seed)

    def w(*shape: int, scale: float = 0.5) -> Any:
        return (rng.standard_normal(shape) * scale / np.sqrt(shape[-1])).astype(np.float32)

    byte_of = _byte_decoder()
    printable = np.zeros(n_vocab, dtype=bool)
    for i, tok in enumerate(tokens):
        if tok in SPECIAL_TOKENS:
            continue
        raw = bytes(byte_of.get(ch, 0) for ch in tok)
        printable[i] = all(32 <= b < 127 for b in raw) or raw == b"\n"
    tensors: dict[str, Any] = {}
    embd = w(n_vocab, n_embd, scale=4.0)
    embd[:, 0] = 1.0  # a constant residual dimension...
    tensors["token_embd.weight"] = embd
    for i in range(n_layer):
        out, down = w(n_embd, n_embd), w(n_embd, n_ff)
        out[0, :] = 0.0  # ...that no layer writes to...
        down[0, :] = 0.0
        tensors |= {
            f"blk.{i}.attn_norm.weight": np.ones(n_embd, dtype=np.float32),
            f"blk.{i}.attn_q.weight": w(n_head * head_dim, n_embd),
            f"blk.{i}.attn_k.weight": w(n_head_kv * head_dim, n_embd),
            f"blk.{i}.attn_v.weight": w(n_head_kv * head_dim, n_embd),
            f"blk.{i}.attn_output.weight": out,
            f"blk.{i}.ffn_norm.weight": np.ones(n_embd, dtype=np.float32),
            f"blk.{i}.ffn_gate.weight": w(n_ff, n_embd),
            f"blk.{i}.ffn_up.weight": w(n_ff, n_embd),
            f"blk.{i}.ffn_down.weight": down,
        }
    tensors["output_norm.weight"] = np.ones(n_embd, dtype=np.float32)
    head = w(n_vocab, n_embd, scale=8.0)
    head[:, 0] = np.where(printable, 4.0, -4.0)  # ...and the output layer reads: printable tokens win
    tensors["output.weight"] = head

    ftype = {"F32": 0, "F16": 1, "Q8_0": 7}[quant]
    qtype = getattr(gguf.GGMLQuantizationType, quant)
    writer = gguf.GGUFWriter(path, "llama", split_max_tensors=split_max_tensors)
    writer.add_name(f"tiny-llama-{quant}")
    writer.add_context_length(2048)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(ftype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if t in SPECIAL_TOKENS else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index("<|endoftext|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_add_bos_token(False)
    if chat_template:
        writer.add_chat_template(chat_template)
    for name, data in tensors.items():
        if data.ndim == 2 and quant != "F32":
            writer.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if split_max_tensors:
        return sorted(path.parent.glob(f"{path.stem}-00001-of-*.gguf"))[0]
    return path


# -- BERT (sentence-transformers) -> GGUF, as convert_hf_to_gguf.py does it ------------------------


def read_safetensors(path: str | Path) -> dict[str, Any]:
    """Every tensor of a safetensors file as a float32 numpy array (no torch, no safetensors package)."""
    import numpy as np

    dtypes = {"F32": np.float32, "F16": np.float16, "BF16": None, "F64": np.float64, "I64": np.int64}
    with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
        data = f.read()
    out: dict[str, Any] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        if info["dtype"] == "BF16":
            raw = np.frombuffer(data[start:end], dtype=np.uint16).astype(np.uint32) << 16
            array = raw.view(np.float32)
        else:
            array = np.frombuffer(data[start:end], dtype=dtypes[info["dtype"]])
        out[name] = array.reshape(info["shape"]).astype(np.float32)
    return out


def convert_bert(
    model_dir: str | Path,
    out: str | Path,
    *,
    outtype: str = "F32",
    record_max_seq_length: bool = True,
    reranker: bool = False,
) -> Path:
    """Convert a sentence-transformers BERT model (``config.json``, ``vocab.txt``, ``model.safetensors``,
    ``1_Pooling/config.json``) to a GGUF embedding model llama.cpp runs; returns `out`.

    Mirrors ``convert_hf_to_gguf.py``'s BertModel: WordPiece vocabulary in "phantom space" form,
    special tokens from the tokenizer config, pooling from the sentence-transformers config.
    ``outtype``: ``F32`` or ``F16`` (2-D weights). With `record_max_seq_length`, the one key
    ``convert_hf_to_gguf.py`` does not write: sentence-transformers' ``max_seq_length``
    (``sentence_transformers.max_seq_length``, which llama.cpp ignores and provender
    truncates at). With `reranker`, a ``BertForSequenceClassification`` with one label (a
    cross-encoder) becomes a GGUF reranker: rank pooling, BERT's pooler as ``cls`` (dense +
    tanh in llama.cpp's rank pooling) and the classifier as ``cls.output``.
    """
    gguf = _require()
    import numpy as np

    model_dir, out = Path(model_dir), Path(out)
    config = json.loads((model_dir / "config.json").read_text())
    tok_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    vocab = (model_dir / "vocab.txt").read_text(encoding="utf-8").splitlines()
    specials = {int(i): v["content"] for i, v in tok_config.get("added_tokens_decoder", {}).items() if v.get("special")}
    if not specials:
        specials = {vocab.index(t): t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if t in vocab}
    n_vocab = max(config.get("vocab_size", len(vocab)), len(vocab))
    vocab += [f"[PAD{i}]" for i in range(len(vocab), n_vocab)]
    types = [gguf.TokenType.CONTROL if i in specials else gguf.TokenType.NORMAL for i in range(n_vocab)]
    tokens = [
        t if types[i] == gguf.TokenType.CONTROL else (t[2:] if t.startswith("##") else "\u2581" + t)
        for i, t in enumerate(vocab)
    ]
    pooling = gguf.PoolingType.MEAN
    pooling_file = model_dir / "1_Pooling" / "config.json"
    if pooling_file.is_file():
        pool = json.loads(pooling_file.read_text())
        if pool.get("pooling_mode_cls_token"):
            pooling = gguf.PoolingType.CLS
        elif pool.get("pooling_mode_lasttoken"):
            pooling = gguf.PoolingType.LAST

    if reranker:
        pooling = gguf.PoolingType.RANK
    n_layer = config["num_hidden_layers"]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_layer)
    weights = read_safetensors(model_dir / "model.safetensors")
    if outtype not in ("F32", "F16"):
        raise ValueError(f"outtype must be F32 or F16, not {outtype!r}")
    writer = gguf.GGUFWriter(out, "bert")
    writer.add_name(model_dir.name)
    writer.add_block_count(n_layer)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_layer_norm_eps(config.get("layer_norm_eps", 1e-12))
    writer.add_file_type({"F32": 0, "F16": 1}[outtype])
    writer.add_causal_attention(False)
    writer.add_pooling_type(pooling)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_token_type_count(config.get("type_vocab_size", 1))
    writer.add_tokenizer_model("bert")
    writer.add_tokenizer_pre("jina-v2-en")  # what convert_hf_to_gguf.py detects for BERT's tokenizer
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    ids = {t: i for i, t in specials.items()}
    cls_id, sep_id = ids.get(tok_config.get("cls_token", "[CLS]")), ids.get(tok_config.get("sep_token", "[SEP]"))
    for add, key in (
        (writer.add_bos_token_id, cls_id),
        (writer.add_eos_token_id, sep_id),
        (writer.add_unk_token_id, ids.get(tok_config.get("unk_token", "[UNK]"))),
        (writer.add_sep_token_id, sep_id),
        (writer.add_pad_token_id, ids.get(tok_config.get("pad_token", "[PAD]"))),
        (writer.add_mask_token_id, ids.get(tok_config.get("mask_token", "[MASK]"))),
    ):
        if key is not None:
            add(key)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(True)
    writer.add_add_sep_token(False)
    writer.add_bool("tokenizer.ggml.normalizer.lowercase", bool(tok_config.get("do_lower_case", True)))
    st = sentence_transformers_config(model_dir)
    if record_max_seq_length and st is not None and st.max_seq_length:
        writer.add_uint32(MAX_SEQ_LENGTH_KEY, st.max_seq_length)
    skip = ("embeddings.position_ids", "cls.") if reranker else ("embeddings.position_ids", "pooler.", "cls.")
    head = {"pooler.dense": "cls", "classifier": "cls.output"} if reranker else {}
    for hf_name, data in weights.items():
        name = hf_name.removeprefix("bert.")
        if name.startswith(skip):
            continue
        module, _, suffix = name.rpartition(".")
        if module in head:
            writer.add_tensor(f"{head[module]}.{suffix}", np.ascontiguousarray(data, dtype=np.float32))
            continue
        name = name.replace(".gamma", ".weight").replace(".beta", ".bias")
        mapped = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise ValueError(f"cannot map tensor {hf_name!r} of {model_dir} to a GGUF name")
        if data.ndim == 2 and outtype != "F32" and not mapped.startswith(("token_types", "position_embd")):
            writer.add_tensor(mapped, data.astype(np.float16))
        else:
            writer.add_tensor(mapped, np.ascontiguousarray(data, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
