"""`LlamaCppProvider`: GGUF models run by llama.cpp (llama-cpp-python), resolved through the shared cache."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from provender import (
    InvalidOptionError,
    LoadedModel,
    ModelNotFoundError,
    Provider,
    UnsupportedError,
    check_generation_options,
    model_pool,
)
from provender_llamacpp._load import inspect_gguf, load_llama, require_llama_cpp, resolve_gguf

if TYPE_CHECKING:
    import numpy

    from provender import CacheManager

logger = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 256
EXTRA_OPTIONS = ("system_prompt", "top_k", "min_p", "repeat_penalty")


def _check_extra(options: dict[str, Any]) -> None:
    top_k = options.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise InvalidOptionError("top_k", top_k, "an integer >= 0 (0: no limit)")
    min_p = options.get("min_p")
    if min_p is not None and (isinstance(min_p, bool) or not isinstance(min_p, (int, float)) or not 0 <= min_p <= 1):
        raise InvalidOptionError("min_p", min_p, "a number in [0, 1]")
    rp = options.get("repeat_penalty")
    if rp is not None and (isinstance(rp, bool) or not isinstance(rp, (int, float)) or rp <= 0):
        raise InvalidOptionError("repeat_penalty", rp, "a number > 0 (1: none)")
    system = options.get("system_prompt")
    if system is not None and not isinstance(system, str):
        raise InvalidOptionError("system_prompt", system, "a string")


def sampling_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    """provender's options as llama-cpp-python's keyword arguments.

    ``temperature`` defaults to 0 (greedy: exactly the tokens llama-cpp-python gives with
    ``temperature=0``), ``max_tokens`` to 256. Without a ``seed``, each call draws a fresh one.
    """
    stop = options.get("stop")
    kwargs: dict[str, Any] = {
        "max_tokens": options.get("max_tokens") or DEFAULT_MAX_TOKENS,
        "temperature": float(options.get("temperature") or 0.0),
        "seed": options["seed"] if options.get("seed") is not None else random.getrandbits(31),
        "stop": [stop] if isinstance(stop, str) else list(stop or []),
    }
    for key in ("top_p", "min_p", "repeat_penalty"):
        if options.get(key) is not None:
            kwargs[key] = float(options[key])
    if options.get("top_k") is not None:
        kwargs["top_k"] = int(options["top_k"])
    return kwargs


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise InvalidOptionError("messages", type(messages).__name__, "a list of {'role': ..., 'content': ...} dicts")


class LlamaCppProvider(Provider):
    """Runs GGUF models with llama.cpp. ``model``: a ``.gguf`` path, a cached model's name, or a
    Hub repo id with an optional quantisation tag (``org/repo-GGUF:Q4_K_M``, pulled on first use).

    Loaded models live in the process's shared pool (``provender.model_pool()``, bounded by
    ``memory.max_models`` and ``memory.keep_alive``) and hold a cache lease while loaded.
    ``n_ctx``, ``threads`` and ``n_gpu_layers`` come from the ``[llamacpp]`` settings unless given.

    Generation options: ``max_tokens`` (256), ``temperature`` (0: greedy), ``top_p``, ``seed``,
    ``stop``, and llama.cpp's ``top_k``, ``min_p``, ``repeat_penalty``; ``system_prompt`` renders
    the prompt through the model's chat template. Chat uses the template stored in the GGUF.
    """

    name = "llamacpp"

    def __init__(
        self,
        model: str,
        *,
        cache: CacheManager | None = None,
        progress: bool = True,
        n_ctx: int | None = None,
        threads: int | None = None,
        n_gpu_layers: int | None = None,
    ) -> None:
        super().__init__(model)
        if not isinstance(model, str) or not model.strip():
            raise ModelNotFoundError(str(model), "a model name cannot be empty")
        self._cache = cache
        self._progress = progress
        self._overrides = {"n_ctx": n_ctx, "threads": threads, "n_gpu_layers": n_gpu_layers}

    # -- loading -----------------------------------------------------------------------

    @property
    def pool_key(self) -> str:
        """This model's key in the shared pool (with the settings given as arguments, if any)."""
        given = ",".join(f"{k}={v}" for k, v in self._overrides.items() if v is not None)
        return f"{self.name}:{self.model}" + (f"?{given}" if given else "")

    def _load(self) -> LoadedModel:
        require_llama_cpp()
        path, lease = resolve_gguf(self.model, self._cache, progress=self._progress)
        try:
            info = inspect_gguf(path)
            from provender import load_settings

            settings = load_settings().llamacpp
            params = {k: v if v is not None else getattr(settings, k) for k, v in self._overrides.items()}
            llm = load_llama(info, **params)
        except BaseException:
            if lease is not None:
                lease.release()
            raise
        logger.info("loaded %s (%s, %s) from %s", self.model, info.architecture, "embedding" * info.embedding, path)
        return LoadedModel(
            name=self.model,
            model=llm,
            tokenizer=info,
            path=str(path),
            lease=lease,
            kind="embedding" if info.embedding else "generation",
            provider=self.name,
            on_unload=llm.close,
        )

    @contextmanager
    def _using(self, kind: str | None = None) -> Iterator[LoadedModel]:
        """The loaded model, its lock held: one call at a time per model, and no unload under it."""
        with model_pool().use(self.pool_key, self._load) as item:
            if kind is not None and item.kind != kind:
                if kind == "generation":
                    raise UnsupportedError(
                        self.name, "text generation", f"{self.model!r} is an embedding model; use embed()"
                    )
                raise UnsupportedError(
                    self.name, "embed", f"{self.model!r} is a text-generation GGUF; embeddings need an embedding GGUF"
                )
            yield item

    def load_model(self) -> Any:
        """The `llama_cpp.Llama` serving this model (loaded into the pool if it is not)."""
        with self._using() as item:
            return item.model

    # -- generation --------------------------------------------------------------------

    def generate(self, prompt: str, **options: Any) -> str:
        """Complete `prompt` (with ``system_prompt``: rendered through the chat template first).

        One ``Llama.create_completion`` call, exactly as llama-cpp-python is called directly.
        """
        kwargs, messages = self._prepare_completion(prompt, options)
        if messages is not None:
            return self.chat(messages, **options)
        with self._using("generation") as item:
            out = item.model.create_completion(prompt, stream=False, **kwargs)
        return str(out["choices"][0]["text"])

    def stream(self, prompt: str, **options: Any) -> Iterator[str]:
        """`generate`, chunk by chunk as llama.cpp produces them."""
        kwargs, messages = self._prepare_completion(prompt, options)
        if messages is not None:
            return self.stream_chat(messages, **options)

        def run() -> Iterator[str]:
            with self._using("generation") as item:
                for chunk in item.model.create_completion(prompt, stream=True, **kwargs):
                    text = chunk["choices"][0]["text"]
                    if text:
                        yield text

        return run()

    def _prepare_completion(
        self, prompt: str, options: dict[str, Any]
    ) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
        """Check the options (before anything loads); with ``system_prompt`` (popped from `options`),
        the conversation to render instead of a plain prompt."""
        check_generation_options(options, provider=self.name, extra=EXTRA_OPTIONS)
        _check_extra(options)
        if not isinstance(prompt, str):
            raise InvalidOptionError("prompt", type(prompt).__name__, "a string")
        system = options.pop("system_prompt", None)
        if system is not None:
            return {}, [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
        return sampling_kwargs(options), None

    def chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, **options: Any) -> str:
        """Answer a conversation with the chat template stored in the GGUF; tools are passed to the template.

        Returns the assistant's raw text, tool calls included as the model wrote them.
        """
        messages, kwargs = self._prepare_chat(messages, tools, options)
        with self._using("generation") as item:
            self._check_template(item)
            out = item.model.create_chat_completion(messages=messages, tools=tools, stream=False, **kwargs)
        return str(out["choices"][0]["message"].get("content") or "")

    def stream_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, **options: Any
    ) -> Iterator[str]:
        """`chat`, chunk by chunk."""
        messages, kwargs = self._prepare_chat(messages, tools, options)

        def run() -> Iterator[str]:
            with self._using("generation") as item:
                self._check_template(item)
                chunks = item.model.create_chat_completion(messages=messages, tools=tools, stream=True, **kwargs)
                for chunk in chunks:
                    text = chunk["choices"][0]["delta"].get("content")
                    if text:
                        yield text

        return run()

    def _prepare_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, options: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        check_generation_options(options, provider=self.name, extra=EXTRA_OPTIONS)
        _check_extra(options)
        _check_messages(messages)
        if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
            raise InvalidOptionError("tools", type(tools).__name__, "a list of OpenAI-style tool dicts")
        system = options.pop("system_prompt", None)
        if system is not None and not (messages and messages[0].get("role") == "system"):
            messages = [{"role": "system", "content": system}, *messages]
        return messages, sampling_kwargs(options)

    def _check_template(self, item: LoadedModel) -> None:
        if not item.tokenizer.chat_template:
            raise UnsupportedError(
                self.name, "chat", f"{self.model!r} carries no chat template; use generate() with a prompt"
            )

    def chat_prompt(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        """The prompt `chat` sends to the model: the conversation rendered by the GGUF's template."""
        _check_messages(messages)
        with self._using("generation") as item:
            template = item.model.metadata.get("tokenizer.chat_template")
            if not template:
                raise UnsupportedError(self.name, "chat", f"{self.model!r} carries no chat template")
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            eos, bos = item.model.token_eos(), item.model.token_bos()
            formatter: Any = Jinja2ChatFormatter(  # the formatter llama-cpp-python builds from the GGUF
                template=template,
                eos_token=item.model._model.token_get_text(eos) if eos != -1 else "",
                bos_token=item.model._model.token_get_text(bos) if bos != -1 else "",
            )
            return str(formatter(messages=messages, tools=tools).prompt)

    # -- embeddings, tokens ------------------------------------------------------------

    def embed(self, texts: list[str], **options: Any) -> numpy.ndarray:
        """Embeddings of `texts`, float32 (len(texts), dimension), pooled as the GGUF says (mean, CLS, last).

        Options: ``normalize`` (default False: the pooled vectors as they are; provender-embedding's
        `Embedder` normalises), ``max_length`` (tokens per text, special tokens included; default:
        the model's context). A longer text is truncated keeping its closing separator, as
        sentence-transformers does (all-MiniLM-L6-v2 uses ``max_length=256`` there).
        """
        import numpy as np

        from provender_llamacpp._embed import embed_texts

        unknown = set(options) - {"normalize", "max_length"}
        if unknown:
            raise UnsupportedError(
                self.name, f"embedding option(s) {', '.join(sorted(unknown))}", "known: normalize, max_length"
            )
        if isinstance(texts, str) or not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise InvalidOptionError("texts", type(texts).__name__, "a list of strings")
        max_length = options.get("max_length")
        if max_length is not None and (
            isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2
        ):
            raise InvalidOptionError("max_length", max_length, "an integer >= 2")
        with self._using("embedding") as item:
            if not texts:
                return np.zeros((0, int(item.model.n_embd())), dtype=np.float32)
            vectors: numpy.ndarray = embed_texts(
                item.model,
                texts,
                max_length=max_length or int(item.model.n_ctx()),
                normalize=bool(options.get("normalize", False)),
            )
        return vectors

    def dimension(self) -> int:
        """Length of this model's embeddings (loads the model)."""
        with self._using("embedding") as item:
            return int(item.model.n_embd())

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` as this model's tokenizer splits it (special tokens parsed, no BOS added)."""
        if not isinstance(text, str):
            raise InvalidOptionError("text", type(text).__name__, "a string")
        with self._using() as item:
            return len(item.model.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    # -- memory ------------------------------------------------------------------------

    def unload(self) -> None:
        """Unload this model from the process's memory now (the disk cache is untouched)."""
        model_pool().unload(self.pool_key)

    @staticmethod
    def clear_model_cache(model_name: str | None = None) -> list[str]:
        """Unload one model (or every llama.cpp model) from memory; returns the pool keys unloaded."""
        pool = model_pool()
        if model_name is None:
            return pool.clear(provider=LlamaCppProvider.name)
        key = f"{LlamaCppProvider.name}:{model_name}"
        keys = [k for k in pool.keys(LlamaCppProvider.name) if k == key or k.startswith(f"{key}?")]
        return [k for k in keys if pool.unload(k)]

    def close(self) -> None:
        """Nothing to release per instance: loaded models are shared through the pool."""
