"""`Embedder`: sentence embeddings from any provider that embeds."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from provender import InvalidOptionError, Provider, UnsupportedError, get_provider

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32


class Embedder:
    """Embeds texts with the provider serving `model` (a name, or a `provender.Provider`).

    ``embed(texts)`` returns float32 ``(len(texts), dimension)``, L2-normalised by
    default. Texts are batched by length (the shortest together), so a long text does not
    pad a whole batch; results come back in the order given. Texts longer than the
    model's maximum sequence length are truncated by the provider; the empty string is a
    valid text.
    """

    def __init__(self, model: str | Provider, *, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.provider = model if isinstance(model, Provider) else get_provider(model)
        self.model = self.provider.model if isinstance(model, Provider) else model
        self.batch_size = _check_batch_size(batch_size)
        self._dimension: int | None = None

    @property
    def dimension(self) -> int:
        """Length of the vectors (asks the provider, or embeds one empty text)."""
        if self._dimension is None:
            try:
                self._dimension = int(self.provider.dimension())
            except UnsupportedError:  # a provider that embeds without saying its size
                self._dimension = int(self._call([""], normalize=True).shape[1])
        return self._dimension

    def embed(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        normalize: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> np.ndarray:
        """Embed `texts`; `progress(n)` is called after each batch with the number just embedded."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise InvalidOptionError("texts", type(texts).__name__, "a sequence of strings")
        size = _check_batch_size(batch_size or self.batch_size)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        out: np.ndarray | None = None
        for idx in _length_batches(texts, size):
            vectors = self._call([texts[i] for i in idx], normalize=normalize)
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
                self._dimension = int(vectors.shape[1])
            out[idx] = vectors
            if progress is not None:
                progress(len(idx))
        assert out is not None
        return out

    def embed_one(self, text: str, *, normalize: bool = True) -> np.ndarray:
        vector: np.ndarray = self.embed([text], normalize=normalize)[0]
        return vector

    def _call(self, batch: list[str], *, normalize: bool) -> np.ndarray:
        options: dict[str, Any] = {} if normalize else {"normalize": False}
        try:
            vectors = np.asarray(self.provider.embed(batch, **options), dtype=np.float32)
        except UnsupportedError as exc:
            if options and "option" in str(exc):
                raise UnsupportedError(self.provider.name, "unnormalised embeddings", str(exc)) from None
            raise
        if vectors.ndim != 2 or vectors.shape[0] != len(batch):
            raise UnsupportedError(
                self.provider.name, "embed", f"it returned shape {vectors.shape} for {len(batch)} texts"
            )
        if normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        return vectors

    def __repr__(self) -> str:
        return f"Embedder({self.model!r})"


def _length_batches(texts: Sequence[str], size: int) -> list[list[int]]:
    """Indices of `texts` in batches of similar length, shortest first.

    A batch is padded to its longest text, so a batch closes when it is full, or when
    the next (longer) text would make padding more than half of its work. Length in
    characters stands in for tokens.
    """
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    batches: list[list[int]] = []
    batch: list[int] = []
    total = 0
    for i in order:
        cost = len(texts[i]) + 8  # + the special tokens every text gets
        if batch and (len(batch) >= size or (len(batch) + 1) * cost > 2 * (total + cost)):
            batches.append(batch)
            batch, total = [], 0
        batch.append(i)
        total += cost
    if batch:
        batches.append(batch)
    return batches


def _check_batch_size(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidOptionError("batch_size", value, "an integer >= 1")
    return value
