"""Rerankers (cross-encoders), run by sentence-transformers' ``CrossEncoder`` itself: the scores
are what ``CrossEncoder.predict`` gives its users on the same weights, with its default
activation (the one the model saved, else a sigmoid for one label), its truncation to the
model's maximum length and its token type ids (0 for the query, 1 for the document)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from provender_transformers._device import Placement

DEFAULT_BATCH_SIZE = 32


class CrossEncoderScorer:
    """A loaded cross-encoder: ``score(query, documents)`` -> one float per document, in order."""

    def __init__(self, path: Path, place: Placement) -> None:
        from sentence_transformers import CrossEncoder

        self.model = CrossEncoder(
            str(path), device=place.device, local_files_only=True, model_kwargs={"dtype": place.dtype}
        )
        self.model.eval()
        self.tokenizer: Any = self.model.tokenizer
        self.labels = int(self.model.num_labels)

    def score(self, query: str, documents: list[str], *, batch_size: int = DEFAULT_BATCH_SIZE) -> list[float]:
        """``CrossEncoder.predict`` on (query, document) pairs, as Python floats."""
        scores = self.model.predict(
            [(query, d) for d in documents], batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True
        )
        return [float(s) for s in scores.reshape(len(documents))]


def load_scorer(path: Path, place: Placement) -> CrossEncoderScorer:
    """The cross-encoder at `path`; one that gives more than one score per pair is refused."""
    from provender import ModelNotFoundError

    scorer = CrossEncoderScorer(path, place)
    if scorer.labels != 1:
        raise ModelNotFoundError(
            str(path), f"it has {scorer.labels} labels: a classifier, not a reranker (which scores with one)"
        )
    return scorer
