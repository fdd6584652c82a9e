"""Embeddings with llama.cpp, truncating each text the way sentence-transformers does.

llama-cpp-python's ``Llama.embed`` cuts a long text's tokens at the batch size, dropping its
closing ``[SEP]``; sentence-transformers keeps it (``[CLS] ... [SEP]`` within the maximum
length). This loop does the same as ``Llama.embed`` otherwise (several texts per decode, one
sequence id each, pooled by llama.cpp as the GGUF says), through llama.cpp's public C API.
"""

from __future__ import annotations

from typing import Any


def tokens_for(llm: Any, text: str, max_length: int) -> list[int]:
    """The model's tokens for `text` (with its special tokens), at most `max_length`, the last kept."""
    tokens: list[int] = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
    if len(tokens) <= max_length:
        return tokens
    import llama_cpp

    closing = tokens[-1]
    sep = llama_cpp.llama_vocab_sep(llama_cpp.llama_model_get_vocab(llm.model))
    if closing in (llm.token_eos(), sep):
        return [*tokens[: max_length - 1], closing]
    return tokens[:max_length]


def embed_texts(llm: Any, texts: list[str], *, max_length: int, normalize: bool) -> Any:
    """Pooled embeddings of `texts`, float32 (len(texts), n_embd)."""
    import llama_cpp
    import numpy as np

    n_embd = int(llm.n_embd())
    n_batch = int(llm.n_batch)
    n_seq_max = max(1, int(llm.context_params.n_seq_max))
    max_length = max(1, min(max_length, n_batch))
    out = np.empty((len(texts), n_embd), dtype=np.float32)
    batch = llama_cpp.llama_batch_init(n_batch, 0, n_seq_max)
    memory = llama_cpp.llama_get_memory(llm.ctx)
    try:
        pending: list[int] = []  # indices of the texts in the batch
        used = 0

        def flush() -> None:
            nonlocal used
            if not pending:
                return
            llama_cpp.llama_memory_clear(memory, True)
            if llama_cpp.llama_decode(llm.ctx, batch) != 0:
                raise RuntimeError("llama_decode failed while embedding")
            for seq, index in enumerate(pending):
                ptr = llama_cpp.llama_get_embeddings_seq(llm.ctx, seq)
                out[index] = np.ctypeslib.as_array(ptr, shape=(n_embd,))
            pending.clear()
            batch.n_tokens = 0
            used = 0

        for index, text in enumerate(texts):
            tokens = tokens_for(llm, text, max_length)
            if used + len(tokens) > n_batch or len(pending) >= n_seq_max:
                flush()
            seq = len(pending)
            for pos, token in enumerate(tokens):
                i = batch.n_tokens
                batch.token[i] = token
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = True
                batch.n_tokens += 1
            used += len(tokens)
            pending.append(index)
        flush()
    finally:
        llama_cpp.llama_batch_free(batch)
    if normalize:
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out
