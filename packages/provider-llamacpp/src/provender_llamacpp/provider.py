"""`LlamaCppProvider`: GGUF models run by llama.cpp (llama-cpp-python), resolved through the shared cache."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provender import LoadedModel, PooledProvider, UnsupportedError
from provender._provider import DEFAULT_MAX_TOKENS
from provender_llamacpp._load import inspect_gguf, load_llama, require_llama_cpp, resolve_gguf

if TYPE_CHECKING:
    import numpy

    from provender import CacheManager, Lease

logger = logging.getLogger(__name__)

Messages = list[dict[str, Any]]


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


class LlamaCppProvider(PooledProvider):
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
    extra_options = ("system_prompt", "top_k", "min_p", "repeat_penalty")
    embed_options = ("normalize", "max_length")
    embed_hint = "embeddings need an embedding GGUF"

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
        super().__init__(model, cache=cache, progress=progress, n_ctx=n_ctx, threads=threads, n_gpu_layers=n_gpu_layers)
        self._root: Path | None = None

    # -- loading -----------------------------------------------------------------------

    def require(self) -> None:
        require_llama_cpp()

    def resolve(self) -> tuple[Path, Lease | None]:
        path, lease = resolve_gguf(self.model, self._cache, progress=self._progress)
        self._root = lease.entry.model_path if lease is not None else None
        return path, lease

    def load_files(self, path: Path) -> LoadedModel:
        from provender import load_settings
        from provender_llamacpp.settings import LlamaCppSettings

        info = inspect_gguf(path, self._root)
        settings = load_settings().section("llamacpp", LlamaCppSettings)
        llm = load_llama(info, **{k: v if v is not None else getattr(settings, k) for k, v in self.given.items()})
        logger.info("loaded %s (%s, %s) from %s", self.model, info.architecture, "embedding" * info.embedding, path)
        return LoadedModel(
            self.model, llm, info, kind="embedding" if info.embedding else "generation", on_unload=llm.close
        )

    def load_model(self) -> Any:
        """The `llama_cpp.Llama` serving this model (loaded into the pool if it is not)."""
        return super().load_model()[0]

    # -- generation --------------------------------------------------------------------

    def generate(self, prompt: str, **options: Any) -> str:
        """Complete `prompt` (with ``system_prompt``: rendered through the chat template first).

        One ``Llama.create_completion`` call, exactly as llama-cpp-python is called directly.
        """
        kwargs, messages = self._prepare_completion(prompt, options)
        if messages is not None:
            return self.chat(messages, **options)
        with self.using("generation") as item:
            out = item.model.create_completion(prompt, stream=False, **kwargs)
        return str(out["choices"][0]["text"])

    def stream(self, prompt: str, **options: Any) -> Iterator[str]:
        """`generate`, chunk by chunk as llama.cpp produces them."""
        kwargs, messages = self._prepare_completion(prompt, options)
        if messages is not None:
            return self.stream_chat(messages, **options)

        def run() -> Iterator[str]:
            with self.using("generation") as item:
                for chunk in item.model.create_completion(prompt, stream=True, **kwargs):
                    if text := chunk["choices"][0]["text"]:
                        yield text

        return run()

    def _prepare_completion(self, prompt: str, options: dict[str, Any]) -> tuple[dict[str, Any], Messages | None]:
        """Check the options (before anything loads); with ``system_prompt`` (popped from `options`),
        the conversation to render instead of a plain prompt."""
        self.check_options(options)
        self.check_text(prompt, "prompt")
        system = options.pop("system_prompt", None)
        if system is not None:
            return {}, self.prompt_conversation(prompt, system)
        return sampling_kwargs(options), None

    def chat(self, messages: Messages, tools: Messages | None = None, **options: Any) -> str:
        """Answer a conversation with the chat template stored in the GGUF; tools are passed to the template.

        Returns the assistant's raw text, tool calls included as the model wrote them.
        """
        messages, kwargs = self._prepare_chat(messages, tools, options)
        with self.using("generation") as item:
            self._check_template(item)
            out = item.model.create_chat_completion(messages=messages, tools=tools, stream=False, **kwargs)
        return str(out["choices"][0]["message"].get("content") or "")

    def stream_chat(self, messages: Messages, tools: Messages | None = None, **options: Any) -> Iterator[str]:
        """`chat`, chunk by chunk."""
        messages, kwargs = self._prepare_chat(messages, tools, options)

        def run() -> Iterator[str]:
            with self.using("generation") as item:
                self._check_template(item)
                chunks = item.model.create_chat_completion(messages=messages, tools=tools, stream=True, **kwargs)
                for chunk in chunks:
                    if text := chunk["choices"][0]["delta"].get("content"):
                        yield text

        return run()

    def _prepare_chat(
        self, messages: Messages, tools: Messages | None, options: dict[str, Any]
    ) -> tuple[Messages, dict[str, Any]]:
        self.check_options(options)
        messages = self.conversation(messages, tools, options.pop("system_prompt", None))
        return messages, sampling_kwargs(options)

    def _check_template(self, item: LoadedModel) -> None:
        if not item.tokenizer.chat_template:
            raise UnsupportedError(
                self.name, "chat", f"{self.model!r} has no chat template; use generate() with a prompt"
            )

    def chat_prompt(self, messages: Messages, tools: Messages | None = None) -> str:
        """The prompt `chat` sends to the model: the conversation rendered by the GGUF's template."""
        self.conversation(messages, tools, None)
        with self.using("generation") as item:
            self._check_template(item)
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            llm = item.model
            eos, bos = llm.token_eos(), llm.token_bos()
            formatter: Any = Jinja2ChatFormatter(  # the formatter llama-cpp-python builds from the GGUF
                template=llm.metadata["tokenizer.chat_template"],
                eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
                bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
            )
            return str(formatter(messages=messages, tools=tools).prompt)

    # -- embeddings, tokens ------------------------------------------------------------

    def embed(self, texts: list[str], **options: Any) -> numpy.ndarray:
        """Embeddings of `texts`, float32 (len(texts), dimension), pooled as the GGUF says (mean, CLS, last).

        Options: ``normalize`` (default False: the pooled vectors as they are; provender-embedding's
        `Embedder` normalises), ``max_length`` (tokens per text, special tokens included). By default
        a text is truncated where sentence-transformers truncates it, where that is known (the
        ``max_seq_length`` of its sentence-transformers config: 256 for all-MiniLM-L6-v2), else at
        the model's context; a longer text keeps its closing separator, as sentence-transformers does.
        """
        import numpy as np

        from provender_llamacpp._embed import embed_texts

        self.check_embed(texts, options)
        with self.using("embedding") as item:
            if not texts:
                return np.zeros((0, int(item.model.n_embd())), dtype=np.float32)
            limit = options.get("max_length") or item.tokenizer.max_seq_length or int(item.model.n_ctx())
            vectors: numpy.ndarray = embed_texts(
                item.model, texts, max_length=limit, normalize=bool(options.get("normalize", False))
            )
        return vectors

    def dimension(self) -> int:
        """Length of this model's embeddings (loads the model)."""
        with self.using("embedding") as item:
            return int(item.model.n_embd())

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` as this model's tokenizer splits it (special tokens parsed, no BOS added)."""
        self.check_text(text)
        with self.using() as item:
            return len(item.model.tokenize(text.encode("utf-8"), add_bos=False, special=True))
