"""`TransformersProvider`: PyTorch models (transformers, sentence-transformers) through provender's shared cache."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from provender import LoadedModel, ModelNotFoundError, PooledProvider
from provender._pooled import POOLED_OPTIONS
from provender_transformers._detect import load_problem, model_kind

if TYPE_CHECKING:
    from provender import CacheManager
    from provender._pooled import Request
    from provender.generation import Chunk
    from provender_transformers._device import Placement

logger = logging.getLogger(__name__)

PROVIDER = "transformers"
INSTALL_HINT = 'pip install "provender[transformers]"'
# what a Hub download fetches: configs (sentence-transformers' module folders included), safetensors
# weights, tokenizer files; pytorch_model.bin only when a repo has no safetensors
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja", "tokenizer*"]
LEGACY_WEIGHTS = ["pytorch_model*.bin"]


def require_torch() -> None:
    """Import torch and transformers, or raise ImportError saying how to install them."""
    try:
        import torch  # noqa: F401

        import transformers  # noqa: F401
    except Exception as exc:
        raise ImportError(
            f"PyTorch/transformers are not usable here ({type(exc).__name__}: {exc}); install them with: "
            f"{INSTALL_HINT} (CPU-only torch: see docs/transformers.md)"
        ) from exc


class TransformersProvider(PooledProvider):
    """Runs a model with PyTorch. ``model`` is a Hub repo id, a cached model's name, or a directory.

    Causal language models generate and chat (``AutoModelForCausalLM``, the tokenizer's chat
    template, tools passed to it); encoders embed (sentence-transformers for repos with
    ``modules.json``, mean pooling for others); cross-encoders (``*ForSequenceClassification``
    with one label, or a sentence-transformers ``CrossEncoder``) rerank, as ``CrossEncoder.predict``.
    A Hub repo id is downloaded once into the shared cache; the same snapshot files serve MLX
    too. Loaded models live in the process's `provender.model_pool()` under
    ``"transformers:<model>"``, holding a cache lease.

    Device and precision come from the ``[transformers]`` settings (``device`` auto: CUDA,
    then MPS, then CPU; ``dtype``; ``threads``), or from the `device` and `dtype` arguments.
    Options: ``max_tokens`` (256), ``temperature`` (0: greedy, the tokens ``model.generate``
    gives), ``top_p``, ``top_k``, ``min_p``, ``seed``, ``stop``, ``system_prompt``, and the typed
    contract's ``constraint`` (or ``schema=``...), ``tool_choice``, ``logprobs``, ``top_logprobs``
    (the constraint masks the logits in a `LogitsProcessor`); for embed ``normalize``, ``batch_size``;
    for rerank ``batch_size``.
    """

    name: ClassVar[str] = PROVIDER
    rerank_hint = "reranking needs a cross-encoder (*ForSequenceClassification with one label)"
    supported_options = POOLED_OPTIONS | {"top_k", "min_p"}
    kinds = frozenset({"generation", "embedding", "rerank"})

    def __init__(
        self,
        model: str,
        *,
        cache: CacheManager | None = None,
        progress: bool = True,
        device: str | None = None,
        dtype: str | None = None,
    ) -> None:
        super().__init__(model, cache=cache, progress=progress, device=device, dtype=dtype)

    @property
    def placement(self) -> Placement:
        """Where this provider's model runs (device, dtype), from the arguments or the settings."""
        from provender_transformers._device import placement

        return placement(self.given["device"], self.given["dtype"])

    def require(self) -> None:
        require_torch()

    def fetch(self, cache: CacheManager) -> None:
        entry = cache.fetch(self.model, allow_patterns=ALLOW_PATTERNS, progress=self._progress)
        if not any(entry.model_path.glob("*.safetensors")):
            cache.fetch(self.model, allow_patterns=LEGACY_WEIGHTS, progress=self._progress)

    def load_files(self, path: Path) -> LoadedModel:
        problem = load_problem(path)
        if problem:
            raise ModelNotFoundError(self.model, f"{path} is not a model transformers can serve: {problem}")
        place = self.placement
        kind = model_kind(path) or "generation"
        logger.info("loading %s (%s) on %s, %s", self.model, kind, place.device, place.dtype_name)
        try:
            model: Any
            if kind == "embedding":
                from provender_transformers._embed import load_encoder

                model = load_encoder(path, place)
                tokenizer = model.tokenizer
            elif kind == "rerank":
                from provender_transformers._rerank import load_scorer

                model = load_scorer(path, place)
                tokenizer = model.tokenizer
            else:
                from transformers import AutoModelForCausalLM, AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
                model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=place.dtype)
                model.to(place.device).eval()
        except (ValueError, OSError, KeyError, RuntimeError) as exc:
            raise ModelNotFoundError(self.model, f"transformers could not load {path}: {exc}") from None
        prompts = None
        if kind == "generation":
            from provender_transformers._prompt import new_prompt_cache

            prompts = new_prompt_cache()
        return LoadedModel(
            self.model, model, tokenizer, kind=kind, on_unload=lambda: _free(place.device), prompt_cache=prompts
        )

    # -- generation --------------------------------------------------------------------

    def decode(self, item: LoadedModel, request: Request) -> Iterator[Chunk]:
        """``model.generate``'s tokens, chunk by chunk (`provender_transformers._generate.decode_tokens`)."""
        from provender_transformers._generate import decode_tokens

        return decode_tokens(self, item, request)

    def prompt_codec(self, item: LoadedModel) -> Any:
        """Prompt caches on disk: a `DynamicCache`'s per-layer tensors in safetensors (`_prompt.codec`)."""
        from provender_transformers._prompt import codec

        return codec(item)


def _free(device: str) -> None:
    """Give memory back after a model is dropped (GPU caches keep it otherwise)."""
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device == "mps" and torch.backends.mps.is_available():
        torch.mps.empty_cache()
