"""`MLXProvider`: text generation and embeddings with MLX, models resolved through provender's shared cache."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from provender import BatchSession, LoadedModel, ModelNotFoundError, PooledProvider
from provender._pooled import POOLED_OPTIONS, LoadedModels
from provender_mlx._detect import encoder_evidence, looks_loadable, mlx_evidence

if TYPE_CHECKING:
    from provender import CacheManager
    from provender._pooled import Request
    from provender.generation import Chunk, GenerationOptions

INSTALL_HINT = 'pip install "provender[mlx]"'
LOAD_ERRORS = (ValueError, FileNotFoundError, KeyError, OSError)
#: each loaded text model's prompt caches, dropped with the model (cleared by its on_unload)


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


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of `text`, as `mlx_lm.stream_generate` makes them (no second BOS when it has one)."""
    bos = tokenizer.bos_token
    return list(tokenizer.encode(text, add_special_tokens=bos is None or not text.startswith(bos)))


def token_text(tokenizer: Any) -> Callable[[int], str]:
    return lambda token: str(tokenizer.decode([token]))


def sampler(options: GenerationOptions) -> Callable[[Any], Any]:
    """mlx-lm's sampler for the options (temperature 0, the default, is greedy)."""
    from mlx_lm.sample_utils import make_sampler

    return make_sampler(  # type: ignore[no-any-return]
        temp=options.temperature or 0.0,
        top_p=options.top_p or 0.0,
        min_p=options.min_p or 0.0,
        top_k=options.top_k or 0,
    )


class MLXProvider(PooledProvider):
    """Generates text with mlx-lm, and embeds with BERT-family sentence-transformers models.
    ``model`` is a Hub repo id, a cached model's name, or a directory.

    A Hub repo id is downloaded once into the shared cache (`provender pull` does the
    same); later runs, by any process, find it there. Loaded models stay in the
    process's shared `provender.model_pool()` (seen by name through
    `MLXProvider._model_cache`), an LRU bounded by ``memory.max_models`` and
    ``memory.keep_alive``, and keep their cache entry leased while loaded, so no
    process evicts the files under them.

    Options: ``max_tokens`` (default 256), ``temperature`` (default 0: greedy, the
    same tokens as ``mlx_lm.generate``), ``top_p``, ``top_k``, ``min_p``, ``seed``, ``stop``,
    ``system_prompt`` (applies the model's chat template with that system message), and the
    typed contract's ``constraint`` (or ``schema=``...), ``tool_choice``, ``logprobs``,
    ``top_logprobs``: the constraint masks the logits in an mlx-lm logits processor. Embedding
    options: ``normalize`` (default: as the model's modules.json says), ``batch_size`` (32); a text
    longer than the model's max_seq_length is truncated, as sentence-transformers does.
    """

    name = "mlx"
    supported_options = POOLED_OPTIONS | {"top_k", "min_p"}
    supports_batching = True
    kinds = frozenset({"generation", "embedding"})
    embed_hint = "embeddings need a BERT-family sentence-transformers model"
    _model_cache: ClassVar[LoadedModels] = LoadedModels("mlx")

    def __init__(self, model: str, *, cache: CacheManager | None = None, progress: bool = True) -> None:
        super().__init__(model, cache=cache, progress=progress)

    def require(self) -> None:
        require_mlx()

    def fetch(self, cache: CacheManager) -> None:
        from mlx_lm.utils import DEFAULT_ALLOW_PATTERNS

        cache.fetch(self.model, allow_patterns=list(DEFAULT_ALLOW_PATTERNS), progress=self._progress)

    def load_files(self, path: Path) -> LoadedModel:
        if encoder_evidence(path):
            from provender_mlx._encoder import load_sentence_encoder

            try:
                encoder = load_sentence_encoder(path)
            except LOAD_ERRORS as exc:
                raise ModelNotFoundError(self.model, f"could not load the encoder in {path}: {exc}") from None
            return LoadedModel(self.model, encoder, encoder.tokenizer, kind="embedding")
        require_mlx(lm=True)
        problem = looks_loadable(path)
        if problem:
            raise ModelNotFoundError(self.model, f"{path} is not a model mlx-lm can load: {problem}")
        from mlx_lm import load

        try:
            model, tokenizer = load(str(path))[:2]
        except LOAD_ERRORS as exc:
            raise ModelNotFoundError(self.model, f"mlx-lm could not load {path}: {exc}") from None
        from provender_mlx._prompt import new_prompt_cache

        return LoadedModel(self.model, model, tokenizer, prompt_cache=new_prompt_cache())

    # -- generation --------------------------------------------------------------------

    def decode(self, item: LoadedModel, request: Request) -> Iterator[Chunk]:
        """`mlx_lm.stream_generate`, the request's logits hook among its logits processors.

        With the model's prompt cache on, the longest stored prefix of the prompt's ids is
        reused and only the rest is prefilled; the state the generation leaves is stored again."""
        import mlx.core as mx
        from mlx_lm import stream_generate
        from mlx_lm.models.cache import make_prompt_cache

        from provender.generation import hf_token_bytes

        ids = encode(item.tokenizer, request.text)
        decoding = self.decoding(
            request,
            prompt_tokens=len(ids),
            token_text=token_text(item.tokenizer),
            token_bytes=hf_token_bytes(item.tokenizer),
        )
        if request.options.seed is not None:
            mx.random.seed(request.options.seed)
        processors = [decoding.mlx_hook] if decoding.hooked else None
        prompts = item.prompt_cache
        state, reused = prompts.fetch(ids) if prompts is not None and prompts.enabled else (None, 0)
        decoding.cached_tokens = reused if prompts is not None and prompts.enabled else None
        if state is None:
            state = make_prompt_cache(item.model)
        fed = list(ids)  # what the state holds once the generation has run: the prompt, then the reply
        steps = stream_generate(
            item.model,
            item.tokenizer,
            ids[reused:],
            max_tokens=decoding.max_tokens,
            sampler=sampler(request.options),
            logits_processors=processors,
            prompt_cache=state,
        )
        try:
            for r in steps:
                fed.append(r.token)
                if r.finish_reason is not None:  # "stop": r.token is the end of sequence, not text
                    last = decoding.finish("stop", r.text) if r.finish_reason == "stop" else None
                    yield last or decoding.feed_last(r.token, r.text, r.finish_reason)
                    return
                if (chunk := decoding.feed(r.token, r.text)) is not None:
                    yield chunk
                if decoding.stopped:
                    return
        finally:
            steps.close()
            if prompts is not None and prompts.enabled:
                from provender_mlx._prompt import keep, offer

                offer(prompts, ids, state)  # cache.prompt_cache_auto_tokens: the prompt's state to the disk cache
                keep(prompts, fed, state)

    def prompt_codec(self, item: LoadedModel) -> Any:
        """Prompt caches on disk with mlx-lm's ``save_prompt_cache`` / ``load_prompt_cache`` (`_prompt.codec`)."""
        from provender_mlx._prompt import codec

        return codec(item)

    def batch_session(self) -> BatchSession:
        """Several generations decoded together on mlx-lm's `BatchGenerator` (continuous batching)."""
        from provender_mlx._batch import MLXBatchSession

        require_mlx(lm=True)
        with self.using("generation") as item:
            return MLXBatchSession(self, item)

    # -- the seed's static API -----------------------------------------------------------

    @staticmethod
    def list_cached_models(cache_dir: str | Path | None = None) -> list[dict[str, Any]]:
        """MLX models in the shared disk cache, recognised by content (MLX quantization metadata
        or safetensors written by MLX), with ``name``, ``size``, ``last_used``, ``implementation``."""
        from provender import CacheManager

        rows = []
        for entry in CacheManager(cache_dir=cache_dir).entries(sort="name"):
            evidence = mlx_evidence(entry.model_path)
            if evidence is not None:
                last = datetime.fromtimestamp(entry.last_used, tz=UTC).isoformat() if entry.last_used else None
                rows.append(
                    {
                        "name": entry.name,
                        "size": entry.size,
                        "implementation": "mlx",
                        "last_used": last,
                        "path": str(entry.model_path),
                        "key": entry.key,
                        "evidence": evidence,
                    }
                )
        return rows
