"""`MLXProvider`: text generation with mlx-lm, models resolved through provender's shared cache."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from provender import (
    BatchSession,
    InvalidOptionError,
    ModelNotFoundError,
    ProvenderError,
    Provider,
    UnsupportedError,
    check_generation_options,
    cut_at_stops,
    resolve_model_files,
)
from provender_mlx._detect import encoder_evidence, looks_loadable, mlx_evidence
from provender_mlx._memory import PROVIDER, LoadedModel, LoadedModels, pool_key

if TYPE_CHECKING:
    import numpy

    from provender import CacheManager, Lease

logger = logging.getLogger(__name__)

INSTALL_HINT = 'pip install "provender[mlx]"'
DEFAULT_MAX_TOKENS = 256
EXTRA_OPTIONS = ("system_prompt",)


def require_mlx(*, lm: bool = False) -> None:
    """Import mlx (and with ``lm``, mlx-lm), or raise ImportError saying how to install them.

    Registration checks only ``mlx.core`` (12 ms); mlx-lm imports transformers (seconds),
    so it is imported when a text model is loaded, not on every command.
    """
    try:
        import mlx.core  # noqa: F401

        if lm:
            import mlx_lm  # noqa: F401
    except Exception as exc:  # mlx without a backend raises more than ImportError
        raise ImportError(
            f"MLX is not usable here ({type(exc).__name__}: {exc}); install it with: "
            f"{INSTALL_HINT} (on Linux this brings mlx[cpu]; for NVIDIA GPUs: "
            'pip install "provender-mlx[cuda]")'
        ) from exc


class MLXProvider(Provider):
    """Generates text with mlx-lm. ``model`` is a Hub repo id, a cached model's name, or a directory.

    A Hub repo id is downloaded once into the shared cache (`provender pull` does the
    same); later runs, by any process, find it there. Loaded models stay in the
    process's shared `provender.model_pool()` (seen by name through
    `MLXProvider._model_cache`), an LRU bounded by ``memory.max_models`` and
    ``memory.keep_alive``, and keep their cache entry leased while loaded, so no
    process evicts the files under them.

    Options: ``max_tokens`` (default 256), ``temperature`` (default 0: greedy, the
    same tokens as ``mlx_lm.generate``), ``top_p``, ``seed``, ``stop``, ``system_prompt``
    (applies the model's chat template with that system message).
    """

    name = "mlx"
    supports_batching = True
    _model_cache: ClassVar[LoadedModels] = LoadedModels()

    def __init__(self, model: str, *, cache: CacheManager | None = None, progress: bool = True) -> None:
        super().__init__(model)
        if not isinstance(model, str) or not model.strip():
            raise ModelNotFoundError(str(model), "a model name cannot be empty")
        self._cache = cache
        self._progress = progress

    # -- loading -----------------------------------------------------------------------

    def load_model(self) -> tuple[Any, Any]:
        """(model, tokenizer), from `_model_cache` if loaded, else resolved and loaded."""
        item = self._loaded()
        return item.model, item.tokenizer

    def _loaded(self) -> LoadedModel:
        """The loaded model from the shared pool (two threads asking for one model load it once)."""
        return self._model_cache.pool.load(pool_key(self.model), self._load_now)

    @contextmanager
    def _using(self, kind: str | None = None) -> Iterator[LoadedModel]:
        """The loaded model, its lock held for the block (MLX models are not re-entrant:
        one generation at a time per model; nor can it be unloaded meanwhile)."""
        with self._model_cache.pool.use(pool_key(self.model), self._load_now) as item:
            if kind is not None:
                self._check_kind(item, kind)
            yield item

    def _load_now(self) -> LoadedModel:
        require_mlx()
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
            from mlx_lm.utils import DEFAULT_ALLOW_PATTERNS

            cm.fetch(self.model, allow_patterns=list(DEFAULT_ALLOW_PATTERNS), progress=self._progress)

        return resolve_model_files(self.model, cache=self._cache, fetch=fetch)

    def _load(self, path: Path, lease: Lease | None) -> LoadedModel:
        key = lease.entry.key if lease is not None else None
        if encoder_evidence(path):
            from provender_mlx._encoder import load_sentence_encoder

            try:
                encoder = load_sentence_encoder(path)
            except (ValueError, FileNotFoundError, KeyError, OSError) as exc:
                raise ModelNotFoundError(self.model, f"could not load the encoder in {path}: {exc}") from None
            return LoadedModel(
                name=self.model,
                model=encoder,
                tokenizer=encoder.tokenizer,
                path=str(path),
                lease=lease,
                entry_key=key,
                kind="embedding",
                provider=PROVIDER,
            )
        require_mlx(lm=True)
        problem = looks_loadable(path)
        if problem:
            raise ModelNotFoundError(self.model, f"{path} is not a model mlx-lm can load: {problem}")
        from mlx_lm import load

        try:
            loaded = load(str(path))
            model, tokenizer = loaded[0], loaded[1]
        except (ValueError, FileNotFoundError, KeyError, OSError) as exc:
            raise ModelNotFoundError(self.model, f"mlx-lm could not load {path}: {exc}") from None
        return LoadedModel(
            name=self.model,
            model=model,
            tokenizer=tokenizer,
            path=str(path),
            lease=lease,
            entry_key=key,
            provider=PROVIDER,
        )

    # -- generation --------------------------------------------------------------------

    def generate(self, prompt: str, **options: Any) -> str:
        return "".join(self.stream(prompt, **options))

    def stream(self, prompt: str, **options: Any) -> Iterator[str]:
        check_generation_options(options, provider=self.name, extra=EXTRA_OPTIONS)
        system = options.get("system_prompt")
        text: str = prompt
        with self._using("generation") as item:
            if system is not None:
                messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
                text = self._template(item, messages)
        return self._generate(text, options)

    def chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, **options: Any) -> str:
        return "".join(self.stream_chat(messages, tools=tools, **options))

    def stream_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, **options: Any
    ) -> Iterator[str]:
        """`chat`, chunk by chunk: the conversation rendered with the model's own chat template."""
        check_generation_options(options, provider=self.name, extra=EXTRA_OPTIONS)
        if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise ProvenderError("messages must be a list of {'role': ..., 'content': ...} dicts")
        system = options.get("system_prompt")
        if system is not None and not (messages and messages[0].get("role") == "system"):
            messages = [{"role": "system", "content": system}, *messages]
        with self._using("generation") as item:
            text = self._template(item, messages, tools)
        return self._generate(text, options)

    def batch_session(self) -> BatchSession:
        """Several generations decoded together on mlx-lm's `BatchGenerator` (continuous batching)."""
        from provender_mlx._batch import MLXBatchSession

        require_mlx(lm=True)
        with self._using("generation") as item:
            return MLXBatchSession(self, item)

    def render_prompt(
        self,
        item: LoadedModel,
        prompt: str | None,
        messages: list[dict[str, Any]] | None,
        tools: list[dict[str, Any]] | None,
        system: str | None,
    ) -> str:
        """The text `stream` (a `prompt`) or `stream_chat` (`messages`) generates from."""
        if messages is None:
            if not isinstance(prompt, str):
                raise InvalidOptionError("prompt", type(prompt).__name__, "a string")
            if system is None:
                return prompt
            messages, tools = [{"role": "system", "content": system}, {"role": "user", "content": prompt}], None
        elif not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
            raise ProvenderError("messages must be a list of {'role': ..., 'content': ...} dicts")
        elif system is not None and not (messages and messages[0].get("role") == "system"):
            messages = [{"role": "system", "content": system}, *messages]
        return self._template(item, messages, tools)

    def _check_kind(self, item: LoadedModel, kind: str) -> None:
        if item.kind == kind:
            return
        if kind == "generation":
            raise UnsupportedError(self.name, "text generation", f"{self.model!r} is an embedding model; use embed()")
        raise UnsupportedError(
            self.name,
            "embed",
            f"{self.model!r} is a text-generation model; embeddings need a BERT-family sentence-transformers model",
        )

    def embed(self, texts: list[str], **options: Any) -> numpy.ndarray:
        """Sentence embeddings, float32 (len(texts), dimension), for BERT-family sentence-transformers models.

        Options: ``normalize`` (default: as the model's modules.json says), ``batch_size`` (32).
        Texts longer than the model's max_seq_length are truncated, as sentence-transformers does.
        """
        unknown = set(options) - {"normalize", "batch_size"}
        if unknown:
            raise UnsupportedError(
                self.name, f"embedding option(s) {', '.join(sorted(unknown))}", "known: normalize, batch_size"
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
        """Tokens in `text` as this model sees it (a generation prompt: with the BOS token
        its tokenizer adds; an embedding model: with its special tokens, before truncation)."""
        if not isinstance(text, str):
            raise InvalidOptionError("text", type(text).__name__, "a string")
        with self._using() as item:
            if item.kind == "embedding":
                return len(item.tokenizer.encode(text).ids)
            return len(item.tokenizer.encode(text))

    def unload(self) -> None:
        """Unload this model from the process's memory now (the disk cache is untouched)."""
        self._model_cache.pop(self.model)

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

    def _generate(self, prompt: str, options: dict[str, Any]) -> Iterator[str]:
        import mlx.core as mx
        from mlx_lm import stream_generate
        from mlx_lm.sample_utils import make_sampler

        sampler = make_sampler(temp=float(options.get("temperature") or 0.0), top_p=float(options.get("top_p") or 0.0))
        stops = options.get("stop") or []
        stops = [stops] if isinstance(stops, str) else list(stops)
        max_tokens = options.get("max_tokens") or DEFAULT_MAX_TOKENS

        def run() -> Iterator[str]:
            with self._using("generation") as item:
                if options.get("seed") is not None:
                    mx.random.seed(int(options["seed"]))
                pieces = (
                    r.text
                    for r in stream_generate(item.model, item.tokenizer, prompt, max_tokens=max_tokens, sampler=sampler)
                )
                yield from cut_at_stops(pieces, stops)

        return run()

    # -- the seed's static API -----------------------------------------------------------

    @staticmethod
    def list_cached_models(cache_dir: str | Path | None = None) -> list[dict[str, Any]]:
        """MLX models in the shared disk cache, recognised by content (MLX quantization metadata
        or safetensors written by MLX), with ``name``, ``size``, ``last_used``, ``implementation``."""
        from provender import CacheManager

        cm = CacheManager(cache_dir=cache_dir) if cache_dir is not None else CacheManager()
        rows = []
        for entry in cm.entries(sort="name"):
            evidence = mlx_evidence(entry.model_path)
            if evidence is None:
                continue
            last = entry.last_used
            rows.append(
                {
                    "name": entry.name,
                    "size": entry.size,
                    "implementation": "mlx",
                    "last_used": datetime.fromtimestamp(last, tz=UTC).isoformat() if last else None,
                    "path": str(entry.model_path),
                    "key": entry.key,
                    "evidence": evidence,
                }
            )
        return rows

    @staticmethod
    def clear_model_cache(model_name: str | None = None) -> list[str]:
        """Unload one model (or all) from memory; returns the names unloaded.

        The disk cache is untouched (that is `provender cache rm`'s job).
        """
        if model_name is None:
            return MLXProvider._model_cache.clear()
        return [model_name] if MLXProvider._model_cache.pop(model_name) is not None else []

    def close(self) -> None:
        """Nothing to release per instance: loaded models are shared through `_model_cache`."""


_cut_at_stops = cut_at_stops  # the name this module used before the helper moved to the core
