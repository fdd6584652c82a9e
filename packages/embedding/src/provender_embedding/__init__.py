"""provender-embedding: sentence embeddings, persistent collections, similarity search and
reranking over any provender provider that embeds (or reranks).

    from provender_embedding import Embedder, Collection
    Embedder("sentence-transformers/all-MiniLM-L6-v2").embed(["a text"])   # (1, 384) float32
    Reranker("cross-encoder/ms-marco-MiniLM-L6-v2").rerank("a query", ["doc", "doc"], top_n=1)
    embed_dataset(ray.data.read_parquet("corpus/"), "sentence-transformers/all-MiniLM-L6-v2")  # on Ray

Imports stay light until used (numpy loads with the first embedding, ray with embed_dataset).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "AddResult",
    "Collection",
    "CollectionError",
    "CollectionNotFoundError",
    "Embedder",
    "Hit",
    "InputError",
    "RerankResult",
    "Reranker",
    "__version__",
    "embed_dataset",
]

_LAZY = {
    "Embedder": "provender_embedding._embedder",
    "Collection": "provender_embedding._collection",
    "CollectionError": "provender_embedding.errors",
    "CollectionNotFoundError": "provender_embedding.errors",
    "Hit": "provender_embedding._collection",
    "AddResult": "provender_embedding._collection",
    "InputError": "provender_embedding.errors",
    "Reranker": "provender_embedding._reranker",
    "RerankResult": "provender_embedding._reranker",
    "embed_dataset": "provender_embedding._ray",  # needs the `ray` extra
}

if TYPE_CHECKING:
    from provender_embedding._collection import AddResult, Collection, Hit
    from provender_embedding._embedder import Embedder
    from provender_embedding._ray import embed_dataset
    from provender_embedding._reranker import Reranker, RerankResult
    from provender_embedding.errors import CollectionError, CollectionNotFoundError, InputError


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
