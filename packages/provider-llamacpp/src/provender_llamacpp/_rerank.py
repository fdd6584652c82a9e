"""GGUF rerankers with llama.cpp's rank pooling (``LLAMA_POOLING_TYPE_RANK``).

A pair is laid out as llama.cpp's server lays it out for ``/rerank``: ``[BOS] query [EOS]
[SEP] document [EOS]`` where the vocabulary adds each (for BERT: ``[CLS] query [SEP] document
[SEP]``, what a Hugging Face tokenizer gives a pair). The rank pooling gives one logit per
sequence (CLS row, the model's ``cls`` dense + tanh, then ``cls.output``); the score is its
sigmoid, what sentence-transformers' ``CrossEncoder.predict`` applies for one label.

llama.cpp's BERT sets every token type to zero, where a Hugging Face cross-encoder gives the
document's tokens type 1: on the same weights the scores differ (docs/embedding.md measures it).
Several pairs go in one decode, one sequence id each, as `provender_llamacpp._embed` does.
"""

from __future__ import annotations

import math
from typing import Any


def pair_tokens(llm: Any, query: str, document: str, max_length: int) -> list[int]:
    """The tokens of (query, document), at most `max_length`: the document is cut first, then the query."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    bos = [llama_cpp.llama_vocab_bos(vocab)] if llama_cpp.llama_vocab_get_add_bos(vocab) else []
    eos = [llama_cpp.llama_vocab_eos(vocab)] if llama_cpp.llama_vocab_get_add_eos(vocab) else []
    sep = [llama_cpp.llama_vocab_sep(vocab)] if llama_cpp.llama_vocab_get_add_sep(vocab) else []
    q = llm.tokenize(query.encode("utf-8"), add_bos=False, special=False)
    d = llm.tokenize(document.encode("utf-8"), add_bos=False, special=False)
    fixed = len(bos) + 2 * len(eos) + len(sep)
    room = max(0, max_length - fixed)
    if len(q) + len(d) > room:  # longest first, as a Hugging Face tokenizer truncates a pair
        while len(q) + len(d) > room:
            if len(d) >= len(q):
                d = d[:-1]
            else:
                q = q[:-1]
    return [*bos, *q, *eos, *sep, *d, *eos]


def rank_logits(llm: Any, query: str, documents: list[str]) -> list[float]:
    """llama.cpp's rank-pooled output (one logit) for each (query, document) pair."""
    import llama_cpp

    n_batch = int(llm.n_batch)
    n_seq_max = max(1, int(llm.context_params.n_seq_max))
    out: list[float] = [0.0] * len(documents)
    batch = llama_cpp.llama_batch_init(n_batch, 0, n_seq_max)
    memory = llama_cpp.llama_get_memory(llm.ctx)
    pending: list[int] = []
    try:

        def flush() -> None:
            if not pending:
                return
            llama_cpp.llama_memory_clear(memory, True)
            if llama_cpp.llama_decode(llm.ctx, batch) != 0:
                raise RuntimeError("llama_decode failed while reranking")
            for seq, index in enumerate(pending):
                out[index] = float(llama_cpp.llama_get_embeddings_seq(llm.ctx, seq)[0])
            pending.clear()
            batch.n_tokens = 0

        for index, document in enumerate(documents):
            tokens = pair_tokens(llm, query, document, n_batch)
            if batch.n_tokens + len(tokens) > n_batch or len(pending) >= n_seq_max:
                flush()
            seq = len(pending)
            for pos, token in enumerate(tokens):
                i = batch.n_tokens
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = token, pos, 1, True
                batch.seq_id[i][0] = seq
                batch.n_tokens += 1
            pending.append(index)
        flush()
    finally:
        llama_cpp.llama_batch_free(batch)
    return out


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def rerank_scores(llm: Any, query: str, documents: list[str]) -> list[float]:
    """The sigmoid of each pair's rank logit: 0..1, as ``CrossEncoder.predict`` scores one label."""
    return [sigmoid(x) for x in rank_logits(llm, query, documents)]
