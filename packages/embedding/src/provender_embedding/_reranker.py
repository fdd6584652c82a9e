"""`Reranker`: documents ordered by a reranker's (cross-encoder's) relevance to a query."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from provender import InvalidOptionError, Provider, UnsupportedError, get_provider

DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True)
class RerankResult:
    """One document of a `Reranker.rerank` answer: its position in the documents given, its
    relevance ``score`` (the provider's; a cross-encoder's sigmoid is in 0..1, higher is more
    relevant) and its text."""

    index: int
    score: float
    document: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "score": self.score, "document": self.document}


class Reranker:
    """Reranks documents with the provider serving `model` (a name, or a `provender.Provider`
    that reranks: provider-transformers' cross-encoders, provider-llamacpp's GGUF rerankers).

    ``rerank(query, documents, top_n)`` scores every document against the query, read
    together by the model, and returns them most relevant first (ties in the order given),
    the first `top_n` of them when it is given; ``scores`` returns the scores in the
    documents' own order. The empty string is a valid document; no documents is an error.
    """

    def __init__(self, model: str | Provider, *, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.provider = model if isinstance(model, Provider) else get_provider(model)
        self.model = self.provider.model if isinstance(model, Provider) else model
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidOptionError("batch_size", batch_size, "an integer >= 1")
        self.batch_size = batch_size

    def scores(self, query: str, documents: Sequence[str]) -> list[float]:
        """The relevance of each document to `query`, in the documents' order."""
        if isinstance(documents, str):
            raise InvalidOptionError("documents", "str", "a non-empty list of strings")
        docs = list(documents)
        # the default is the provider's own: a provider (a server's) that takes no options gets none
        options = {} if self.batch_size == DEFAULT_BATCH_SIZE else {"batch_size": self.batch_size}
        scores = self.provider.rerank(query, docs, **options)
        if len(scores) != len(docs):
            raise UnsupportedError(
                self.provider.name, "rerank", f"it returned {len(scores)} scores for {len(docs)} documents"
            )
        return [float(s) for s in scores]

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None) -> list[RerankResult]:
        """`documents` most relevant to `query` first (at most `top_n` of them)."""
        if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
            raise InvalidOptionError("top_n", top_n, "an integer >= 1")
        scores = self.scores(query, documents)
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
        return [RerankResult(i, scores[i], documents[i]) for i in order[:top_n]]

    def __repr__(self) -> str:
        return f"Reranker({self.model!r})"
