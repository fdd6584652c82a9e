"""Reranking's contract: what `Provider.rerank` takes and how its arguments are checked.

``provider.rerank(query, documents)`` returns one relevance score per document, in the order
given (a reranker, or cross-encoder, reads the query and each document together). Ranking,
``top_n`` and the documents' text in the answer are `provender_embedding.Reranker`'s and the
server's; a provider only scores.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from provender.errors import InvalidOptionError

#: options every reranking provider takes (`provender._provider.EMBED_OPTION_CHECKS` checks them)
RERANK_OPTIONS: tuple[str, ...] = ("batch_size",)


def check_rerank_input(
    query: Any, documents: Any, options: dict[str, Any], known: Iterable[str] = RERANK_OPTIONS, *, provider: str
) -> None:
    """`rerank`'s arguments: `query` a string, `documents` a non-empty list of strings, `options`
    among `known` with valid values (UnsupportedError / InvalidOptionError, one line each)."""
    from provender._provider import check_options

    check_options(options, known, provider=provider, what="rerank option")
    if not isinstance(query, str):
        raise InvalidOptionError("query", type(query).__name__, "a string")
    if isinstance(documents, str) or not isinstance(documents, list):
        raise InvalidOptionError("documents", type(documents).__name__, "a non-empty list of strings")
    if not documents:
        raise InvalidOptionError("documents", documents, "a non-empty list of strings (nothing to rerank)")
    bad = next((i for i, d in enumerate(documents) if not isinstance(d, str)), None)
    if bad is not None:
        raise InvalidOptionError(f"documents[{bad}]", type(documents[bad]).__name__, "a string")
