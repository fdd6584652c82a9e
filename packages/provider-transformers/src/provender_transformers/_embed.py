"""Sentence embeddings: sentence-transformers for its own models, mean pooling for other encoders."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy

    from provender_transformers._device import Placement

MAX_LENGTH = 512  # for encoders that do not say (BERT-family position embeddings)


class Encoder(Protocol):
    """What the provider needs from a loaded embedding model."""

    tokenizer: Any
    dimension: int

    def encode(self, texts: list[str], *, normalize: bool | None, batch_size: int) -> numpy.ndarray: ...


class SentenceTransformersEncoder:
    """A sentence-transformers model (a directory with ``modules.json``), run by sentence-transformers
    itself: pooling, normalisation and truncation are exactly what its users get."""

    def __init__(self, path: Path, place: Placement) -> None:
        from sentence_transformers import SentenceTransformer

        Normalize = _normalize_class()
        self.model = SentenceTransformer(
            str(path), device=place.device, local_files_only=True, model_kwargs={"dtype": place.dtype}
        )
        self.model.eval()
        self.tokenizer = self.model.tokenizer
        size = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dimension = int(size() or 0)
        self.normalizes = any(isinstance(m, Normalize) for m in self.model)
        self._raw: Any = None  # the same modules without Normalize, for normalize=False

    def encode(self, texts: list[str], *, normalize: bool | None, batch_size: int) -> numpy.ndarray:
        import numpy as np

        model = self.model
        if normalize is False and self.normalizes:
            model = self._unnormalized()
        vectors = model.encode(
            texts,
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=bool(normalize) and not self.normalizes,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def _unnormalized(self) -> Any:
        if self._raw is None:
            from sentence_transformers import SentenceTransformer

            modules = [m for m in self.model if not isinstance(m, _normalize_class())]  # shared, not copied
            self._raw = SentenceTransformer(modules=modules, device=str(self.model.device))
        return self._raw


class MeanPoolingEncoder:
    """Any other encoder (``AutoModel``): the mean of the last hidden states over the real tokens
    (padding excluded), truncated to the model's maximum length; normalised only when asked."""

    def __init__(self, path: Path, place: Placement) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True, dtype=place.dtype)
        self.model.to(place.device).eval()
        self.device = place.device
        config = self.model.config
        limits = [getattr(config, "max_position_embeddings", None), self.tokenizer.model_max_length, MAX_LENGTH]
        self.max_length = min(int(n) for n in limits if isinstance(n, int) and n > 0)
        self.dimension = int(config.hidden_size)

    def encode(self, texts: list[str], *, normalize: bool | None, batch_size: int) -> numpy.ndarray:
        import numpy as np
        import torch

        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = texts[start : start + batch_size]
                enc = self.tokenizer(
                    batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
                ).to(self.device)
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                if normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[start : start + len(batch)] = pooled.float().cpu().numpy()
        return out


def _normalize_class() -> type:
    try:  # sentence-transformers >= 6
        from sentence_transformers.sentence_transformer.modules import Normalize
    except ImportError:
        from sentence_transformers.models import Normalize
    return Normalize  # type: ignore[no-any-return]


def load_encoder(path: Path, place: Placement) -> Encoder:
    """sentence-transformers for a directory with ``modules.json``, mean pooling otherwise."""
    if (path / "modules.json").is_file():
        return SentenceTransformersEncoder(path, place)
    return MeanPoolingEncoder(path, place)
