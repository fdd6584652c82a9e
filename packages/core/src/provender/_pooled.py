"""`PooledProvider`: the base of providers that load a model into the process's shared pool.

A subclass says how to load the files of its model (`PooledProvider.load_files`); the base
does the rest: it finds the files (a directory, or a cache entry held by a `Lease` while
the model is loaded, downloaded first on a miss), loads them once per process under the
provider's `key` in `provender.model_pool()` (LRU, ``memory.max_models``,
``memory.keep_alive``), hands the loaded model out with its lock held (`using`), checks
that it is the right kind of model for the call, validates options, and unloads. A subclass
writes its runtime's steps on the loaded model: `decode` (one generation's token loop),
`encode` (embeddings), `score` (reranking), `tokenize`; the public calls (`generate`,
`stream_chat`, `embed`, `rerank`, `count_tokens`...) check their input and call them::

    class MyProvider(PooledProvider):
        name = "mine"
        kinds = frozenset({"embedding"})

        def load_files(self, path):
            return LoadedModel(self.model, load_weights(path), kind="embedding")

        def encode(self, item, texts, options):
            return item.model.vectors(texts)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from provender._loaded import LoadedModel
from provender._pool import ModelPool, model_pool
from provender._provider import Provider, check_embed_input, check_messages
from provender._rerank import check_rerank_input
from provender._resolve import resolve_model_files
from provender.errors import InvalidOptionError, ModelNotFoundError, UnsupportedError

if TYPE_CHECKING:
    from pathlib import Path

    import numpy

    from provender._cache import CacheEntry, CacheManager, Lease
    from provender._decoding import Decoding
    from provender._prompt_cache import PromptCache
    from provender._prompt_disk import PromptCodec
    from provender.generation import Chunk, GenerationOptions

Messages = list[dict[str, Any]]
#: the options of every pooled provider's generation (a subclass adds its runtime's own)
POOLED_OPTIONS = Provider.supported_options | {"system_prompt", "constraint", "tool_choice", "logprobs", "top_logprobs"}


@dataclass
class Request:
    """A checked generation request, ready for `PooledProvider.decode`."""

    text: str  # what the model continues: the prompt, or the conversation through the chat template
    chat: bool  # `text` is a rendered chat template (it carries its own special tokens)
    options: GenerationOptions
    compiled: Any = None  # the constraint compiled against the model's tokenizer (provender._constrain)
    tool_call: bool = False  # a forced tool call: the reply is wrapped as <tool_call>...</tool_call>


class PooledProvider(Provider):
    """A provider whose model lives in the shared pool, holding its cache entry while loaded.

    Subclasses set ``name`` and implement `load_files`; they may override `require` (import
    the runtime, or say how to install it), `fetch` (which files a Hub download takes) and
    `resolve` (how a name becomes files). Keyword arguments given to ``__init__`` beyond
    ``cache`` and ``progress`` (a device, a context size) become part of `key`, so the same
    model loaded two ways is two pool entries.
    """

    supported_options: ClassVar[frozenset[str]] = POOLED_OPTIONS
    #: options `embed` takes
    embed_options: ClassVar[tuple[str, ...]] = ("normalize", "batch_size")
    #: said when a text-generation model is asked to embed: which models do
    embed_hint: ClassVar[str] = "embeddings need an embedding model"
    #: options `rerank` takes
    rerank_options: ClassVar[tuple[str, ...]] = ("batch_size",)
    #: said when another kind of model is asked to rerank: which models do
    rerank_hint: ClassVar[str] = "reranking needs a reranker (a cross-encoder)"
    #: the kinds of model this provider loads (``"generation"``, ``"embedding"``, ``"rerank"``):
    #: `embed` and `rerank` refuse at once, before loading anything, where the kind is not here
    kinds: ClassVar[frozenset[str]] = frozenset({"generation"})

    def __init__(self, model: str, *, cache: CacheManager | None = None, progress: bool = True, **given: Any) -> None:
        super().__init__(model)
        if not isinstance(model, str) or not model.strip():
            raise ModelNotFoundError(str(model), "a model name cannot be empty")
        self._cache, self._progress, self.given = cache, progress, given
        args = ",".join(f"{k}={v}" for k, v in given.items() if v is not None)
        self.key = f"{self.name}:{model}" + (f"?{args}" if args else "")  # this model's key in the pool

    # -- loading: what a subclass provides ----------------------------------------------

    def require(self) -> None:
        """Raise ImportError, saying how to install it, if the runtime is missing (default: nothing)."""

    def fetch(self, cache: CacheManager) -> None:
        """Download `model` into `cache` on a miss (default: the whole Hub repo)."""
        cache.fetch(self.model, progress=self._progress)

    def resolve(self) -> tuple[Path, Lease | None]:
        """The model's files: a directory as it is, else a cache entry and its lease (fetched on a miss)."""
        return resolve_model_files(self.model, cache=self._cache, fetch=self.fetch)

    def load_files(self, path: Path) -> LoadedModel:
        """Load the model at `path`: ``LoadedModel(self.model, model, tokenizer, kind=...)``
        (``on_unload`` for what dropping the references does not free). The base fills in
        the path, the lease and the provider."""
        raise NotImplementedError(f"{type(self).__name__}.load_files")

    # -- loading: the base ---------------------------------------------------------------

    def _load(self) -> LoadedModel:
        """The pool's loader: resolve, load, and hand the lease to the loaded model (released on failure)."""
        self.require()
        path, lease = self.resolve()
        try:
            item = self.load_files(path)
        except BaseException:
            if lease is not None:
                lease.release()
            raise
        item.path, item.lease, item.provider = item.path or str(path), lease, self.name
        item.reload = partial(self._reload, item.path)
        if lease is not None and item.entry_key is None:
            item.entry_key = lease.entry.key
        if item.prompt_cache is not None and item.kind == "generation":
            from provender._prompt_disk import attach

            attach(item, self.prompt_codec(item), self._cache)  # saved prompt caches in the shared cache
        return item

    def _reload(self, path: str) -> LoadedModel:
        """`_load` again while the files it loaded from are on disk: never a download."""
        from pathlib import Path

        if not Path(path).exists():
            raise ModelNotFoundError(self.model, f"{path} is no longer on disk")
        return self._load()

    def check_files(self) -> None:
        """Refuse, before the pool unloads anything to make room, a model whose weights file is
        cut short (a safetensors or GGUF header promising more bytes than the file has)."""
        from provender._cache._complete import incomplete_weights

        self.require()
        path, lease = self.resolve()
        try:
            problem = incomplete_weights(path)
        finally:
            if lease is not None:
                lease.release()
        if problem is not None:
            raise ModelNotFoundError(self.model, f"{problem}; pull or import it again")

    @contextmanager
    def using(self, kind: str | None = None) -> Iterator[LoadedModel]:
        """The loaded model (loaded now if it is not), its lock held for the block: one call
        at a time per model, never unloaded meanwhile. With `kind` (``"generation"``,
        ``"embedding"`` or ``"rerank"``), another kind of model raises UnsupportedError (`wrong_kind`)."""
        with model_pool().use(self.key, self._load, check=self.check_files) as item:
            if kind is not None and item.kind != kind:
                raise self.wrong_kind(item.kind, kind)
            yield item

    def wrong_kind(self, loaded: str, wanted: str) -> UnsupportedError:
        """The error for a call that needs a `wanted` model (``"generation"``, ``"embedding"``,
        ``"rerank"``) on a `loaded` model of another kind: it names the model and what it is."""
        what = {"generation": "a text-generation model", "embedding": "an embedding model", "rerank": "a reranker"}
        use = {"generation": "generate() or chat()", "embedding": "embed()", "rerank": "rerank()"}
        if wanted == "rerank":
            return UnsupportedError(
                self.name, "rerank", f"{self.model!r} is {what.get(loaded, loaded)}, not a reranker; {self.rerank_hint}"
            )
        if wanted == "embedding" and loaded == "generation":
            return UnsupportedError(self.name, "embed", f"{self.model!r} is a text-generation model; {self.embed_hint}")
        capability = "embed" if wanted == "embedding" else "text generation"
        detail = f"{self.model!r} is {what.get(loaded, loaded)}; use {use.get(loaded, 'another call')}"
        return UnsupportedError(self.name, capability, detail)

    def prompt_codec(self, item: LoadedModel) -> PromptCodec | None:
        """The runtime's machinery to prefill, write and read prompt states (`provender._prompt_disk`),
        so `item`'s prompt cache reads and saves them in the shared disk cache; None (the default): none."""
        return None

    def save_prompt(self, text: str) -> CacheEntry:
        """Process `text` as a prompt (its token ids as `generate` makes them) and save its prompt cache
        into the shared disk cache (``provender cache prompt``): any process that loads this model and gets
        a prompt starting with `text` then reads it instead of computing it. Returns its cache entry."""
        from provender.errors import ProvenderError

        self.check_text(text, "text")
        with self.using("generation") as item:
            disk = getattr(item.prompt_cache, "disk", None)
            if disk is None:
                raise UnsupportedError(self.name, "saved prompt caches", "this provider keeps no prompt cache on disk")
            if not disk.enabled:
                raise ProvenderError("cache.prompt_cache_max_size is 0: no prompt cache is saved (raise it)")
            ids = disk.codec.encode(text)
            if len(ids) < 2:
                raise ProvenderError("the text is shorter than 2 tokens: there is nothing worth saving")
            entry: CacheEntry = disk.saved_as(ids) or disk.compute_and_save(ids)  # the same again: kept, not redone
            return entry

    def load_model(self) -> tuple[Any, Any]:
        """(model, tokenizer), from the pool if loaded, else resolved and loaded."""
        item = model_pool().load(self.key, self._load, check=self.check_files)
        return item.model, item.tokenizer

    def prompt_cache(self) -> PromptCache | None:
        """The loaded model's prompt caches (`provender._prompt_cache.PromptCache`: ``stats``,
        ``nbytes``, ``resize``) when its provider keeps them, else None (or not loaded)."""
        item = model_pool().peek(self.key)
        return item.prompt_cache if item is not None else None

    def unload(self) -> None:
        """Unload this model from the process's memory now (the disk cache is untouched)."""
        model_pool().unload(self.key)

    def close(self) -> None:
        """Nothing to release per instance: loaded models are shared through the pool."""

    @classmethod
    def clear_model_cache(cls, model_name: str | None = None) -> list[str]:
        """Unload one model (however it was loaded) or all of this provider's; returns their names."""
        return LoadedModels(cls.name).clear(model_name)

    # -- generation: what a subclass provides ------------------------------------------------

    def decode(self, item: LoadedModel, request: Request) -> Iterator[Chunk]:
        """Generate from ``request.text`` with the loaded model (its lock held): the chunks of
        `Decoding.feed` as tokens come, then `Decoding.finish` with the runtime's finish reason.
        Build the `Decoding` with `decoding` and install its logits hook in the runtime."""
        raise UnsupportedError(self.name, "text generation")

    def constraint_tokenizer(self, item: LoadedModel) -> Any:
        """What `provender._constrain.tokenizer_info` reads the vocabulary from (default: the tokenizer)."""
        return item.tokenizer

    # -- generation: the base ---------------------------------------------------------------

    def generate(self, prompt: str, **options: Any) -> str:
        return self.complete(prompt, **options).text

    def stream(self, prompt: str, **options: Any) -> Iterator[str]:
        return _texts(self.stream_complete(prompt, **options))

    def chat(self, messages: Messages, tools: Messages | None = None, **options: Any) -> str:
        return self.complete(messages=messages, tools=tools, **options).text

    def stream_chat(self, messages: Messages, tools: Messages | None = None, **options: Any) -> Iterator[str]:
        return _texts(self.stream_complete(messages=messages, tools=tools, **options))

    def stream_complete(
        self,
        prompt: str | None = None,
        *,
        messages: Messages | None = None,
        tools: Messages | None = None,
        **options: Any,
    ) -> Iterator[Chunk]:
        """The chunks of `decode`; options, messages and the constraint are checked now, before the
        first chunk is asked for (a bad one raises here, not while iterating), and options and
        messages before the model loads."""
        opts = self.check_options(options)
        if messages is None:
            self.check_text(prompt, "prompt")
        else:
            check_messages(messages, tools)
        with self.using("generation") as item:
            request = self.request(item, prompt, messages, tools, opts)
        return self._decode(request)

    def request(
        self,
        item: LoadedModel,
        prompt: str | None,
        messages: Messages | None,
        tools: Messages | None,
        options: dict[str, Any] | GenerationOptions,
    ) -> Request:
        """A checked `Request`: the text to continue (a conversation through the chat template, a
        ``system_prompt`` making a prompt one), the options, and the constraint compiled; with
        ``tool_choice`` ``"required"`` or a named function, the constraint is a call of a tool."""
        from provender.generation import tool_call_constraint

        opts = options if not isinstance(options, dict) else self.check_options(options)
        if opts.tool_choice == "none":
            tools = None
        if messages is None:
            prompt = self.check_text(prompt, "prompt")
            if opts.system_prompt is not None:
                messages, tools = self.prompt_conversation(prompt, opts.system_prompt), None
        else:
            messages = self.conversation(messages, tools, opts.system_prompt)
        tool_call = bool(tools) and opts.forced_tool() is not None and opts.constraint is None
        if tool_call:
            opts = opts.model_copy(update={"constraint": tool_call_constraint(tools or [], opts.tool_choice)})
        text = self.template(item, messages, tools) if messages is not None else str(prompt)
        compiled = None
        if opts.constraint is not None:
            from provender._constrain import compile_constraint, tokenizer_info

            compiled = compile_constraint(opts.constraint, tokenizer_info(self.constraint_tokenizer(item)))
        return Request(text, messages is not None, opts, compiled, tool_call)

    def decoding(self, request: Request, *, prompt_tokens: int, token_text: Any, token_bytes: Any = None) -> Decoding:
        """The `Decoding` of one sequence of `request` (its own constraint matcher); `token_bytes`
        gives a token's own bytes for logprobs (default: its text's UTF-8)."""
        from provender._decoding import Decoding

        matcher = request.compiled.matcher() if request.compiled is not None else None
        return Decoding(
            request.options,
            token_text=token_text,
            token_bytes=token_bytes,
            prompt_tokens=prompt_tokens,
            matcher=matcher,
            tool_call=request.tool_call,
        )

    def _decode(self, request: Request) -> Iterator[Chunk]:
        from provender.generation import Chunk

        with self.using("generation") as item:
            if request.tool_call:
                yield Chunk(text="<tool_call>")
            for chunk in self.decode(item, request):
                if request.tool_call and chunk.finish_reason == "tool_calls":
                    chunk = chunk.model_copy(update={"text": chunk.text + "</tool_call>"})
                yield chunk

    # -- embeddings, reranking, tokens ----------------------------------------------------

    def embed(self, texts: list[str], **options: Any) -> numpy.ndarray:
        """Embeddings of `texts`, float32 (len(texts), dimension): the texts and `embed_options`
        checked, then `encode` on the loaded embedding model."""
        self._require_kind("embedding", "embed")
        self.check_embed(texts, options)
        with self.using("embedding") as item:
            return self.encode(item, texts, options)

    def rerank(self, query: str, documents: list[str], **options: Any) -> list[float]:
        """The relevance of each document to `query`, in their order: the input and
        `rerank_options` checked, then `score` on the loaded reranker."""
        self._require_kind("rerank", "rerank")
        self.check_rerank(query, documents, options)
        with self.using("rerank") as item:
            return self.score(item, query, documents, options)

    def dimension(self) -> int:
        """Length of this model's embeddings (loads the model): `embedding_size`."""
        self._require_kind("embedding", "dimension")
        with self.using("embedding") as item:
            return self.embedding_size(item)

    def count_tokens(self, text: str) -> int:
        """Tokens in `text` as the loaded model sees it: the length of `tokenize`."""
        self.check_text(text)
        with self.using() as item:
            return len(self.tokenize(item, text))

    def _require_kind(self, kind: str, capability: str) -> None:
        if kind not in self.kinds:
            raise UnsupportedError(self.name, capability)

    # -- embeddings, reranking, tokens: what a subclass provides ---------------------------
    # The defaults fit a loaded model shaped as provender's sentence-transformers wrappers are
    # (``encode(texts, normalize=, batch_size=)``, ``dimension``, ``score(query, documents,
    # batch_size=)``) and a Hugging Face tokenizer; override them for another runtime.

    def encode(self, item: LoadedModel, texts: list[str], options: dict[str, Any]) -> numpy.ndarray:
        """`texts` embedded by the loaded model (its lock held), float32 (len(texts), dimension)."""
        vectors: numpy.ndarray = item.model.encode(
            texts, normalize=options.get("normalize"), batch_size=options.get("batch_size") or 32
        )
        return vectors

    def score(self, item: LoadedModel, query: str, documents: list[str], options: dict[str, Any]) -> list[float]:
        """Each document's relevance to `query` by the loaded reranker (its lock held)."""
        scores: list[float] = item.model.score(query, documents, batch_size=options.get("batch_size") or 32)
        return scores

    def embedding_size(self, item: LoadedModel) -> int:
        """The loaded embedding model's dimension."""
        return int(item.model.dimension)

    def tokenize(self, item: LoadedModel, text: str) -> list[int]:
        """`text`'s token ids by the loaded model's tokenizer (a Hugging Face one, or a `tokenizers.Tokenizer`)."""
        if item.tokenizer is None:
            raise UnsupportedError(self.name, "count_tokens", "the model has no tokenizer")
        ids = item.tokenizer.encode(text)
        return list(getattr(ids, "ids", ids))

    # -- checks ---------------------------------------------------------------------------

    def check_embed(self, texts: list[str], options: dict[str, Any]) -> None:
        """Validate `embed`'s texts and options (`embed_options`)."""
        check_embed_input(texts, options, self.embed_options, provider=self.name)

    def check_rerank(self, query: str, documents: list[str], options: dict[str, Any]) -> None:
        """Validate `rerank`'s query, documents and options (`rerank_options`)."""
        check_rerank_input(query, documents, options, self.rerank_options, provider=self.name)

    def conversation(self, messages: Messages, tools: Messages | None, system: str | None) -> Messages:
        """Checked `messages`, the ``system_prompt`` option first unless they start with a system message."""
        check_messages(messages, tools)
        if system is not None and not (messages and messages[0].get("role") == "system"):
            return [{"role": "system", "content": system}, *messages]
        return messages

    @staticmethod
    def prompt_conversation(prompt: str, system: str) -> Messages:
        """A plain prompt with a ``system_prompt``, as a conversation for the chat template."""
        return [{"role": "system", "content": system}, {"role": "user", "content": prompt}]

    @staticmethod
    def check_text(text: Any, name: str = "text") -> str:
        if not isinstance(text, str):
            raise InvalidOptionError(name, type(text).__name__, "a string")
        return text

    def template(self, item: LoadedModel, messages: Messages, tools: Messages | None = None) -> str:
        """The conversation rendered by the tokenizer's chat template (Hugging Face tokenizers)."""
        tokenizer = item.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise UnsupportedError(
                self.name, "chat", f"{self.model!r} has no chat template; use generate() with a prompt"
            )
        kwargs: dict[str, Any] = {"add_generation_prompt": True, "tokenize": False}
        if tools:
            kwargs["tools"] = tools
        return str(tokenizer.apply_chat_template(messages, **kwargs))


def _texts(chunks: Iterator[Chunk]) -> Iterator[str]:
    return (chunk.text for chunk in chunks if chunk.text)


class LoadedModels:
    """One provider's models in the shared pool, by model name, least recently used first
    (`MLXProvider._model_cache` is MLX's)."""

    def __init__(self, provider: str, pool: ModelPool | None = None) -> None:
        self.provider = provider
        self._pool = pool

    @property
    def pool(self) -> ModelPool:
        """The pool this view looks into (the process's, unless one was given)."""
        return self._pool if self._pool is not None else model_pool()

    def configure(self, max_models: int | None = None, keep_alive: float | None = None) -> None:
        """Set the pool's limits (None: from the settings) and apply them now. The pool is
        shared, so this sets them for every provider in the process."""
        self.pool.configure(max_models=max_models, keep_alive=keep_alive)

    def _keys(self, name: str | None = None) -> list[str]:
        prefix = f"{self.provider}:{name}"
        keys = self.pool.keys(provider=self.provider)
        return keys if name is None else [k for k in keys if k == prefix or k.startswith(f"{prefix}?")]

    def get(self, name: str) -> LoadedModel | None:
        return self.pool.get(f"{self.provider}:{name}")

    def put(self, item: LoadedModel) -> None:
        item.provider = self.provider
        self.pool.put(f"{self.provider}:{item.name}", item)

    def pop(self, name: str) -> LoadedModel | None:
        return self.pool.pop(f"{self.provider}:{name}")

    def clear(self, name: str | None = None) -> list[str]:
        """Unload every model (or every copy of `name`); returns their names."""
        items = [self.pool.pop(k) for k in self._keys(name)]
        return list(dict.fromkeys(item.name for item in items if item is not None))

    def names(self) -> list[str]:
        items = [self.pool.peek(k) for k in self._keys()]
        return list(dict.fromkeys(item.name for item in items if item is not None))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self._keys(name))

    def __len__(self) -> int:
        return len(self.names())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
