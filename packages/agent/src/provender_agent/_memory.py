"""Optional memory: notes from earlier runs, recalled by meaning through provender-embedding."""

from __future__ import annotations

import hashlib

EMBEDDING_HINT = 'pip install "provender[embedding]"'


class Memory:
    """Stores each answered exchange in an embedding collection and recalls the closest ones.

    ``Memory(model="sentence-transformers/all-MiniLM-L6-v2")``; needs provender-embedding
    and a provider that embeds.
    """

    def __init__(self, model: str, *, collection: str = "agent-memory", n: int = 3, min_score: float = 0.35) -> None:
        try:
            from provender_embedding import Collection
        except ImportError:
            raise ImportError(f"agent memory needs provender-embedding: {EMBEDDING_HINT}") from None
        self.collection = Collection(collection, model)
        self.n = n
        self.min_score = min_score

    def recall(self, query: str) -> list[str]:
        if self.collection.count() == 0:
            return []
        return [h.content for h in self.collection.similar(query, self.n) if h.score >= self.min_score and h.content]

    def remember(self, note: str) -> None:
        self.collection.add(hashlib.sha256(note.encode()).hexdigest()[:16], note)
