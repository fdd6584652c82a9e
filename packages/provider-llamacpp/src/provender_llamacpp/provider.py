"""`LlamaCppProvider`: GGUF models run by llama.cpp (llama-cpp-python), resolved through the shared cache."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provender import LoadedModel, PooledProvider, UnsupportedError
from provender._pooled import POOLED_OPTIONS
from provender_llamacpp._load import inspect_gguf, load_llama, require_llama_cpp, resolve_gguf

if TYPE_CHECKING:
    import numpy

    from provender import CacheManager, Lease
    from provender._pooled import Request
    from provender.generation import Chunk, GenerationOptions

logger = logging.getLogger(__name__)

Messages = list[dict[str, Any]]


def sampling_kwargs(options: GenerationOptions) -> dict[str, Any]:
    """provender's options as `Llama.generate`'s keyword arguments, with llama-cpp-python's own
    defaults for what is not given (those of ``create_completion``: top_k 40, top_p 0.95,
    min_p 0.05). ``temperature`` defaults to 0: greedy."""
    kwargs: dict[str, Any] = {"temp": options.temperature or 0.0}
    for key, value in (("top_k", options.top_k), ("top_p", options.top_p), ("min_p", options.min_p)):
        if value is not None:
            kwargs[key] = value
    if options.repeat_penalty is not None:
        kwargs["repeat_penalty"] = options.repeat_penalty
    return kwargs


def prompt_ids(llm: Any, text: str, chat: bool) -> list[int]:
    """The tokens `Llama.create_completion` (a prompt) or the GGUF's chat handler (a rendered
    conversation, which carries its own special tokens) would feed the model."""
    ids: list[int] = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) if text else []
    if chat:
        return ids
    model = llm._model
    cls, sep = model.token_cls(), model.token_sep()
    head = [cls if cls != -1 else llm.token_bos()]
    head = [] if not model.add_bos_token() or head == [-1] else head
    tail = [] if not model.add_eos_token() and sep == -1 else [sep if sep != -1 else llm.token_eos()]
    return head + ids + tail


class LlamaCppProvider(PooledProvider):
    """Runs GGUF models with llama.cpp. ``model``: a ``.gguf`` path, a cached model's name, or a
    Hub repo id with an optional quantisation tag (``org/repo-GGUF:Q4_K_M``, pulled on first use).

    Loaded models live in the process's shared pool (``provender.model_pool()``, bounded by
    ``memory.max_models`` and ``memory.keep_alive``) and hold a cache lease while loaded.
    ``n_ctx``, ``threads`` and ``n_gpu_layers`` come from the ``[llamacpp]`` settings unless given.

    Generation options: ``max_tokens`` (256), ``temperature`` (0: greedy), ``top_p``, ``seed``,
    ``stop``, and llama.cpp's ``top_k``, ``min_p``, ``repeat_penalty``; ``system_prompt`` renders
    the prompt through the model's chat template. Chat uses the template stored in the GGUF.
    The typed contract's ``constraint`` (or ``schema=``...), ``tool_choice``, ``logprobs`` and
    ``top_logprobs`` work through a logits processor.
    """

    name = "llamacpp"
    supported_options = POOLED_OPTIONS | {"top_k", "min_p", "repeat_penalty"}
    embed_options = ("normalize", "max_length")
    embed_hint = "embeddings need an embedding GGUF"
    rerank_hint = "reranking needs a GGUF reranker (rank pooling: a converted *ForSequenceClassification)"
    rerank_options = ()
    kinds = frozenset({"generation", "embedding", "rerank"})

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
        from provender_llamacpp._prompt import new_prompt_cache

        prompts = None if info.embedding else new_prompt_cache()
        kind = "rerank" if info.rerank else "embedding" if info.embedding else "generation"
        return LoadedModel(self.model, llm, info, kind=kind, on_unload=llm.close, prompt_cache=prompts)

    def load_model(self) -> Any:
        """The `llama_cpp.Llama` serving this model (loaded into the pool if it is not)."""
        return super().load_model()[0]

    # -- generation --------------------------------------------------------------------

    def decode(self, item: LoadedModel, request: Request) -> Iterator[Chunk]:
        """`Llama.generate` token by token, as ``create_completion`` drives it (the same tokens,
        sampler and seed); the request's logits hook is a logits processor, which sees each step's
        logits without ``logits_all``. A system prompt or a conversation goes through the GGUF's
        chat template.

        With the model's prompt cache on, the longest stored prefix of the prompt's ids is put
        back into the context and only the rest is evaluated; the state the generation leaves
        is stored again (`provender_llamacpp._prompt`)."""
        import llama_cpp

        from provender._decoding import Detokenizer
        from provender_llamacpp._prompt import keep, offer, restore

        llm = item.model
        ids = prompt_ids(llm, request.text, request.chat)
        decoding = self.decoding(
            request,
            prompt_tokens=len(ids),
            token_text=lambda t: _text(llm, [t]),
            token_bytes=lambda t: bytes(llm.detokenize([t], special=True)),
        )
        detokenizer = Detokenizer(lambda tokens: _text(llm, tokens, ids))
        seed = request.options.seed
        llm.set_seed(seed if seed is not None else random.getrandbits(31))  # unseeded: a fresh one per call
        hook = [decoding.numpy_hook] if decoding.hooked else None
        prompts = item.prompt_cache
        if prompts is not None and prompts.enabled:
            decoding.cached_tokens = restore(llm, ids, *prompts.fetch(ids))
        tokens = llm.generate(ids, **sampling_kwargs(request.options), logits_processor=hook)
        is_eog = lambda t: bool(llama_cpp.llama_vocab_is_eog(llm._model.vocab, t))  # noqa: E731
        sound = False  # what the context holds matches its ids (not after a failed evaluation)
        try:
            yield from decoding.run(tokens, detokenizer, is_eog)
            sound = True
        except GeneratorExit:  # the caller stopped reading
            sound = True
            raise
        finally:
            tokens.close()
            if sound and prompts is not None and prompts.enabled:
                offer(prompts, llm, ids)  # cache.prompt_cache_auto_tokens: the prompt's state to the disk cache
                keep(prompts, llm)

    def prompt_codec(self, item: LoadedModel) -> Any:
        """Prompt caches on disk: sequence 0's KV cells from llama.cpp's state API (`_prompt.codec`)."""
        from provender_llamacpp._prompt import codec

        return codec(item)

    def constraint_tokenizer(self, item: LoadedModel) -> Any:
        return item.model  # provender._constrain reads a llama_cpp.Llama's vocabulary

    def template(self, item: LoadedModel, messages: Messages, tools: Messages | None = None) -> str:
        """The conversation rendered by the chat template stored in the GGUF, as llama-cpp-python's
        chat handler renders it (tools passed to the template)."""
        if not item.tokenizer.chat_template:
            raise UnsupportedError(
                self.name, "chat", f"{self.model!r} has no chat template; use generate() with a prompt"
            )
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llm = item.model
        eos, bos = llm.token_eos(), llm.token_bos()
        formatter: Any = Jinja2ChatFormatter(  # the formatter llama-cpp-python builds from the GGUF
            template=llm.metadata["tokenizer.chat_template"],
            eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
            bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
        )
        return str(formatter(messages=messages, tools=tools).prompt)

    def chat_prompt(self, messages: Messages, tools: Messages | None = None) -> str:
        """The prompt `chat` sends to the model: the conversation rendered by the GGUF's template."""
        self.conversation(messages, tools, None)
        with self.using("generation") as item:
            return self.template(item, messages, tools)

    # -- embeddings, tokens ------------------------------------------------------------

    def encode(self, item: LoadedModel, texts: list[str], options: dict[str, Any]) -> numpy.ndarray:
        """Embeddings pooled as the GGUF says (mean, CLS, last). Options: ``normalize`` (default False:
        the pooled vectors as they are; provender-embedding's `Embedder` normalises), ``max_length``
        (tokens per text, special tokens included). By default a text is truncated where
        sentence-transformers truncates it, where that is known (the ``max_seq_length`` of its
        sentence-transformers config: 256 for all-MiniLM-L6-v2), else at the model's context; a longer
        text keeps its closing separator, as sentence-transformers does."""
        from provender_llamacpp._embed import embed_texts

        limit = options.get("max_length") or item.tokenizer.max_seq_length or int(item.model.n_ctx())
        vectors: numpy.ndarray = embed_texts(
            item.model, texts, max_length=limit, normalize=bool(options.get("normalize", False))
        )
        return vectors

    def score(self, item: LoadedModel, query: str, documents: list[str], options: dict[str, Any]) -> list[float]:
        """The sigmoid of llama.cpp's rank-pooled logit for ``[CLS] query [SEP] document [SEP]``
        (`provender_llamacpp._rerank`; llama.cpp gives every token type 0). A pair longer than the
        context is cut, longest first."""
        from provender_llamacpp._rerank import rerank_scores

        return rerank_scores(item.model, query, documents)

    def embedding_size(self, item: LoadedModel) -> int:
        return int(item.model.n_embd())

    def tokenize(self, item: LoadedModel, text: str) -> list[int]:
        """As this model's tokenizer splits `text`: special tokens parsed, no BOS added."""
        return list(item.model.tokenize(text.encode("utf-8"), add_bos=False, special=True))


def _text(llm: Any, tokens: list[int], prev: list[int] | None = None) -> str:
    """The text of `tokens` (after `prev`), as ``create_completion`` decodes it."""
    return str(llm.detokenize(tokens, prev_tokens=prev).decode("utf-8", errors="ignore"))
