"""`TransformersProvider`: PyTorch models (transformers, sentence-transformers) through provender's shared cache."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from provender import (
    InvalidOptionError,
    LoadedModel,
    ModelNotFoundError,
    ProvenderError,
    Provider,
    UnsupportedError,
    check_generation_options,
    model_pool,
    resolve_model_files,
)
from provender_transformers._detect import load_problem, model_kind

if TYPE_CHECKING:
    import numpy

    from provender import CacheManager, Lease
    from provender_transformers._device import Placement

logger = logging.getLogger(__name__)

PROVIDER = "transformers"
INSTALL_HINT = 'pip install "provender[transformers]"'
EXTRA_OPTIONS = ("system_prompt",)
EMBED_OPTIONS = ("normalize", "batch_size")
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


class TransformersProvider(Provider):
    """Runs a model with PyTorch. ``model`` is a Hub repo id, a cached model's name, or a directory.

    Causal language models generate and chat (``AutoModelForCausalLM``, the tokenizer's chat
    template, tools passed to it); encoders embed (sentence-transformers for repos with
    ``modules.json``, mean pooling for others). A Hub repo id is downloaded once into the
    shared cache; the same snapshot files serve MLX too. Loaded models live in the process's
    `provender.model_pool()` under ``"transformers:<model>"``, holding a cache lease.

    Device and precision come from the ``[transformers]`` settings (``device`` auto: CUDA,
    then MPS, then CPU; ``dtype``; ``threads``), or from the `device` and `dtype` arguments.
    Options: ``max_tokens`` (256), ``temperature`` (0: greedy, the tokens ``model.generate``
    gives), ``top_p``, ``seed``, ``stop``, ``system_prompt``; for embed ``normalize``, ``batch_size``.
    """

    name: ClassVar[str] = PROVIDER

    def __init__(
        self,
        model: str,
        *,
        cache: CacheManager | None = None,
        progress: bool = True,
        device: str | None = None,
        dtype: str | None = None,
    ) -> None:
        super().__init__(model)
        if not isinstance(model, str) or not model.strip():
            raise ModelNotFoundError(str(model), "a model name cannot be empty")
        self._cache = cache
        self._progress = progress
        self._device, self._dtype = device, dtype
        self.key = f"{PROVIDER}:{model}" + (f"@{device or ''}/{dtype or ''}" if device or dtype else "")

    # -- loading -----------------------------------------------------------------------

    def load_model(self) -> tuple[Any, Any]:
        """(model, tokenizer), from the pool if loaded, else resolved and loaded."""
        item = model_pool().load(self.key, self._load_now)
        return item.model, item.tokenizer

    @property
    def placement(self) -> Placement:
        """Where this provider's model runs (device, dtype), from the arguments or the settings."""
        from provender_transformers._device import placement

        return placement(self._device, self._dtype)

    @contextmanager
    def _using(self, kind: str | None = None) -> Iterator[LoadedModel]:
        """The loaded model, its lock held for the block (one use at a time; never unloaded meanwhile)."""
        with model_pool().use(self.key, self._load_now) as item:
            if kind is not None and item.kind != kind:
                if kind == "generation":
                    raise UnsupportedError(self.name, "text generation", f"{self.model!r} is an embedding model")
                raise UnsupportedError(self.name, "embed", f"{self.model!r} is a text-generation model")
            yield item

    def _load_now(self) -> LoadedModel:
        require_torch()
        path, lease = self._resolve()
        try:
            return self._load(path, lease)
        except BaseException:
            if lease is not None:
                lease.release()
            raise

    def _resolve(self) -> tuple[Path, Lease | None]:
        """A directory as it is; otherwise a cache entry (downloaded first if it is a Hub repo id)."""

        def fetch(cm: CacheManager) -> None:
            entry = cm.fetch(self.model, allow_patterns=ALLOW_PATTERNS, progress=self._progress)
            if not any(entry.model_path.glob("*.safetensors")):
                cm.fetch(self.model, allow_patterns=LEGACY_WEIGHTS, progress=self._progress)

        return resolve_model_files(self.model, cache=self._cache, fetch=fetch)

    def _load(self, path: Path, lease: Lease | None) -> LoadedModel:
        problem = load_problem(path)
        if problem:
            raise ModelNotFoundError(self.model, f"{path} is not a model transformers can serve: {problem}")
        place = self.placement
        kind = model_kind(path) or "generation"
        logger.info("loading %s (%s) on %s, %s", self.model, kind, place.device, place.dtype_name)
        try:
            if kind == "embedding":
                from provender_transformers._embed import load_encoder

                encoder = load_encoder(path, place)
                model, tokenizer = encoder, encoder.tokenizer
            else:
                from transformers import AutoModelForCausalLM, AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
                model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=place.dtype)
                model.to(place.device).eval()
        except (ValueError, OSError, KeyError, RuntimeError) as exc:
            raise ModelNotFoundError(self.model, f"transformers could not load {path}: {exc}") from None
        return LoadedModel(
            name=self.model,
            model=model,
            tokenizer=tokenizer,
            path=str(path),
            lease=lease,
            kind=kind,
            provider=PROVIDER,
            on_unload=lambda: _free(place.device),
        )

    # -- generation --------------------------------------------------------------------

    def generate(self, prompt: str, **options: Any) -> str:
        from provender_transformers._generate import generate_text

        text, options = self._prompt(prompt, options)
        with self._using("generation") as item:
            return generate_text(item.model, item.tokenizer, self._encode(item, text, options), options)

    def stream(self, prompt: str, **options: Any) -> Iterator[str]:
        text, options = self._prompt(prompt, options)
        return self._stream(text, options)

    def chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, **options: Any) -> str:
        from provender_transformers._generate import generate_text

        check_generation_options(options, provider=self.name, extra=EXTRA_OPTIONS)
        with self._using("generation") as item:
            text = self._template(item, self._messages(messages, options), tools)
            options = {**options, "_chat": True}
            return generate_text(item.model, item.tokenizer, self._encode(item, text, options), _public(options))

    def stream_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, **options: Any
    ) -> Iterator[str]:
        """`chat`, chunk by chunk, as transformers' streamer decodes them."""
        check_generation_options(options, provider=self.name, extra=EXTRA_OPTIONS)
        with self._using("generation") as item:
            text = self._template(item, self._messages(messages, options), tools)
        return self._stream(text, {**options, "_chat": True})

    def _prompt(self, prompt: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        check_generation_options(options, provider=self.name, extra=EXTRA_OPTIONS)
        if not isinstance(prompt, str):
            raise InvalidOptionError("prompt", type(prompt).__name__, "a string")
        system = options.get("system_prompt")
        if system is None:
            return prompt, options
        with self._using("generation") as item:
            text = self._template(item, [{"role": "system", "content": system}, {"role": "user", "content": prompt}])
        return text, {**options, "_chat": True}

    def _messages(self, messages: list[dict[str, Any]], options: dict[str, Any]) -> list[dict[str, Any]]:
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise ProvenderError("messages must be a list of {'role': ..., 'content': ...} dicts")
        system = options.get("system_prompt")
        if system is not None and not (messages and messages[0].get("role") == "system"):
            return [{"role": "system", "content": system}, *messages]
        return messages

    def _template(
        self, item: LoadedModel, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> str:
        tokenizer = item.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise ProvenderError(f"model {self.model!r} has no chat template; use generate() with a plain prompt")
        kwargs: dict[str, Any] = {"add_generation_prompt": True, "tokenize": False}
        if tools:
            kwargs["tools"] = tools
        return str(tokenizer.apply_chat_template(messages, **kwargs))

    def _encode(self, item: LoadedModel, text: str, options: dict[str, Any]) -> dict[str, Any]:
        """Token ids on the model's device. A rendered chat template carries its own special tokens."""
        enc = item.tokenizer(text, return_tensors="pt", add_special_tokens=not options.get("_chat"))
        return dict(enc.to(item.model.device))

    def _stream(self, text: str, options: dict[str, Any]) -> Iterator[str]:
        from provender_transformers._generate import stream_text

        with self._using("generation") as item:
            inputs = self._encode(item, text, options)
            yield from stream_text(item.model, item.tokenizer, inputs, _public(options))

    # -- embeddings ----------------------------------------------------------------------

    def embed(self, texts: list[str], **options: Any) -> numpy.ndarray:
        """Sentence embeddings, float32 (len(texts), dimension).

        A sentence-transformers model embeds as ``SentenceTransformer.encode`` does (its pooling,
        normalisation and truncation); another encoder by mean pooling. Options: ``normalize``
        (default: as the model says; mean pooling: no), ``batch_size`` (32).
        """
        unknown = set(options) - set(EMBED_OPTIONS)
        if unknown:
            raise UnsupportedError(
                self.name, f"embedding option(s) {', '.join(sorted(unknown))}", f"known: {', '.join(EMBED_OPTIONS)}"
            )
        if isinstance(texts, str) or not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise InvalidOptionError("texts", type(texts).__name__, "a list of strings")
        batch_size = options.get("batch_size", 32)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidOptionError("batch_size", batch_size, "an integer >= 1")
        with self._using("embedding") as item:
            vectors: numpy.ndarray = item.model.encode(texts, normalize=options.get("normalize"), batch_size=batch_size)
        return vectors

    def dimension(self) -> int:
        """Length of this model's embeddings (loads the model)."""
        with self._using("embedding") as item:
            return int(item.model.dimension)

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` as the model sees it (with the special tokens its tokenizer adds)."""
        if not isinstance(text, str):
            raise InvalidOptionError("text", type(text).__name__, "a string")
        with self._using() as item:
            return len(item.tokenizer(text)["input_ids"])

    def unload(self) -> None:
        """Unload this model from the process's memory now (the disk cache is untouched)."""
        model_pool().unload(self.key)

    def close(self) -> None:
        """Nothing to release per instance: loaded models are shared through the pool."""


def _public(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if not k.startswith("_")}


def _free(device: str) -> None:
    """Give memory back after a model is dropped (GPU caches keep it otherwise)."""
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device == "mps" and torch.backends.mps.is_available():
        torch.mps.empty_cache()
