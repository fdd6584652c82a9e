"""The `Provider` base class plugins implement, and the checks of what it is asked.

How a model name finds its provider is `provender._resolve`."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from provender._log import get_logger
from provender._stops import StopCut as StopCut  # re-exported: provender.cut_at_stops and providers' imports
from provender._stops import cut_at_stops as cut_at_stops
from provender.errors import (
    InvalidOptionError,
    UnsupportedError,
)

if TYPE_CHECKING:
    import numpy

    from provender.generation import Chunk, GenerationOptions, GenerationResult

Messages = list[dict[str, Any]]

# A plugin imports this module (`provender.Provider`) at import time, under `provender --help`:
# logging and pathlib load only when used.
logger = get_logger(__name__)
T = TypeVar("T")

DEFAULT_MAX_TOKENS = 256  # what providers generate when max_tokens is not given


class Provider:
    """Base class of a provider: one instance serves one model, the one its factory was given.

    Subclasses set ``name`` and override what they can do; the rest raises
    `UnsupportedError`. A generating provider declares the options it takes in
    ``supported_options`` (names of `provender.generation.GenerationOptions` fields);
    `check_options` validates a call's options against them once, so an option the provider
    does not take is an error naming it, never dropped. `complete` and `stream_complete` return
    the typed result (text, the runtime's finish reason, token counts, logprobs); `generate`,
    `stream`, `chat` and `stream_chat` return text. A provider that implements only the text
    methods gets `stream_complete` from them, with finish reason ``"stop"``.
    """

    name: ClassVar[str] = "provider"
    supports_batching: ClassVar[bool] = False  # True: `batch_session` decodes several requests at once
    #: the generation options this provider takes (`provender.generation.GenerationOptions` fields)
    supported_options: ClassVar[frozenset[str]] = frozenset({"max_tokens", "temperature", "top_p", "seed", "stop"})

    def __init__(self, model: str) -> None:
        self.model = model

    def generate(self, prompt: str, **options: Any) -> str:
        """Complete `prompt`; returns the generated text."""
        raise UnsupportedError(self.name, "generate")

    def stream(self, prompt: str, **options: Any) -> Iterator[str]:
        """Yield the completion in chunks (default: one chunk from `generate`)."""
        yield self.generate(prompt, **options)

    def chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, **options: Any) -> str:
        """Answer a conversation (OpenAI-shaped messages); returns the assistant's raw text,
        tool calls included as the model wrote them."""
        raise UnsupportedError(self.name, "chat")

    def embed(self, texts: list[str], **options: Any) -> numpy.ndarray:
        """Embed `texts`; returns a float array of shape (len(texts), dimension)."""
        raise UnsupportedError(self.name, "embed")

    def rerank(self, query: str, documents: list[str], **options: Any) -> list[float]:
        """Relevance of each of `documents` to `query`, in their order (`provender._rerank`)."""
        raise UnsupportedError(self.name, "rerank")

    def stream_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, **options: Any
    ) -> Iterator[str]:
        """`chat`, chunk by chunk (default: one chunk from `chat`)."""
        yield self.chat(messages, tools=tools, **options)

    def dimension(self) -> int:
        """Length of this model's embeddings (may load the model)."""
        raise UnsupportedError(self.name, "dimension", "it does not embed")

    def count_tokens(self, text: str) -> int:
        """Number of tokens `text` is to this model's tokenizer (may load the model)."""
        raise UnsupportedError(self.name, "count_tokens")

    def unload(self) -> None:
        """Unload this model from memory now (the process's model pool); the disk cache is untouched."""
        raise UnsupportedError(self.name, "unload")

    def batch_session(self) -> BatchSession:
        """A `BatchSession` that decodes several generations together (where ``supports_batching``)."""
        raise UnsupportedError(self.name, "batched generation")

    async def achat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, **options: Any
    ) -> str:
        """`chat` in a worker thread, so an event loop keeps running."""
        import asyncio

        return await asyncio.to_thread(lambda: self.chat(messages, tools=tools, **options))

    async def astream_chat(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, **options: Any
    ) -> AsyncIterator[str]:
        """`stream_chat` on one worker thread, its chunks handed to the event loop as they come."""
        make = lambda: self.stream_chat(messages, tools=tools, **options)  # noqa: E731
        async for chunk in iterate_in_thread(make, name=f"astream-chat-{self.name}"):
            yield chunk

    async def agenerate(self, prompt: str, **options: Any) -> str:
        """`generate` in a worker thread, so an event loop keeps running."""
        import asyncio  # not at module level: plugins import this module, and asyncio costs ~18 ms

        return await asyncio.to_thread(self.generate, prompt, **options)

    async def astream(self, prompt: str, **options: Any) -> AsyncIterator[str]:
        """`stream` run on one worker thread (runtimes such as MLX bind state to a thread),
        its chunks handed to the event loop as they come."""
        async for chunk in iterate_in_thread(lambda: self.stream(prompt, **options), name=f"astream-{self.name}"):
            yield chunk

    def check_options(self, options: dict[str, Any]) -> GenerationOptions:
        """`options` validated against ``supported_options`` (`provender.generation.parse_options`)."""
        from provender.generation import parse_options

        return parse_options(options, self.supported_options, provider=self.name)

    def complete(
        self,
        prompt: str | None = None,
        *,
        messages: Messages | None = None,
        tools: Messages | None = None,
        **options: Any,
    ) -> GenerationResult:
        """Complete `prompt`, or (with `messages`) answer a conversation: a `GenerationResult`."""
        from provender.generation import collect

        return collect(self.stream_complete(prompt, messages=messages, tools=tools, **options))

    def stream_complete(
        self,
        prompt: str | None = None,
        *,
        messages: Messages | None = None,
        tools: Messages | None = None,
        **options: Any,
    ) -> Iterator[Chunk]:
        """`complete`, chunk by chunk; the last `Chunk` carries the finish reason and token counts.

        Default: the chunks of `stream` / `stream_chat`, then an empty one with reason ``"stop"``
        (a provider that knows better overrides this)."""
        from provender.generation import Chunk

        self.check_options(options)
        pieces = self.stream(prompt, **options) if messages is None else self.stream_chat(messages, tools, **options)  # type: ignore[arg-type]
        for piece in pieces:
            yield Chunk(text=piece)
        yield Chunk(text="", finish_reason="stop")

    async def acomplete(
        self,
        prompt: str | None = None,
        *,
        messages: Messages | None = None,
        tools: Messages | None = None,
        **options: Any,
    ) -> GenerationResult:
        """`complete` in a worker thread."""
        import asyncio

        return await asyncio.to_thread(lambda: self.complete(prompt, messages=messages, tools=tools, **options))

    async def astream_complete(
        self,
        prompt: str | None = None,
        *,
        messages: Messages | None = None,
        tools: Messages | None = None,
        **options: Any,
    ) -> AsyncIterator[Chunk]:
        """`stream_complete` on one worker thread, its chunks handed to the event loop as they come."""
        make = lambda: self.stream_complete(prompt, messages=messages, tools=tools, **options)  # noqa: E731
        async for chunk in iterate_in_thread(make, name=f"astream-complete-{self.name}"):
            yield chunk

    def close(self) -> None:
        """Release what the provider holds (loaded weights, cache leases). Idempotent."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}:{self.model}>"


class BatchSession:
    """Several generations decoded together, one token per sequence per `step` (continuous batching).

    A provider with ``supports_batching`` returns one from `Provider.batch_session`; one
    thread drives it. `insert` adds a request, also while others run; `step` advances
    every sequence by one token and returns ``(id, text, finished)`` for each: the pieces
    of a sequence are what `Provider.stream` / `Provider.stream_chat` would yield for the
    same request (one per generated token; ``max_tokens``, stop strings and the
    tokenizer's end of sequence honoured), and a finished sequence leaves the batch.
    `remove` drops sequences (a client that went away); `close` releases the session.
    Greedy output equals the same request generated alone. Options as `stream_complete`
    (constraints and logprobs included), except ``seed`` (the random state is shared by the
    batch), which raises `UnsupportedError`. `step_chunks` is `step` with typed pieces: a
    `provender.generation.Chunk` per sequence (its text, logprobs, and on the last one the
    finish reason and token counts).
    """

    def insert(
        self,
        prompt: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        tools: list[dict[str, Any]] | None = None,
        **options: Any,
    ) -> int:
        """Add a completion of `prompt`, or (with `messages`) a chat answer; returns its id."""
        raise UnsupportedError("provider", "batched generation")

    def step(self) -> list[tuple[int, str, bool]]:
        """Advance every sequence by one token: ``(id, text, finished)`` for each."""
        return [(uid, chunk.text, chunk.finish_reason is not None) for uid, chunk in self.step_chunks()]

    def step_chunks(self) -> list[tuple[int, Chunk]]:
        """Advance every sequence by one token: ``(id, chunk)`` for each; a chunk with a
        ``finish_reason`` is its sequence's last."""
        raise UnsupportedError("provider", "batched generation")

    def remove(self, ids: Iterable[int]) -> None:
        """Drop these sequences from the batch (unknown or finished ids are ignored)."""

    def __len__(self) -> int:
        """Sequences in the batch (inserted, not yet finished or removed)."""
        return 0

    def close(self) -> None:
        """Release what the session holds. Idempotent."""

    def __enter__(self) -> BatchSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def iterate_in_thread(make: Callable[[], Iterable[T]], *, name: str = "worker") -> AsyncIterator[T]:
    """Drive a blocking iterator on one dedicated thread and yield its items to the event loop.

    One thread for the whole iteration (not a pool thread per item), because runtimes such
    as MLX bind streams and state to the thread that created them. Exceptions propagate.
    """
    import asyncio

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def produce() -> None:
        try:
            for item in make():
                loop.call_soon_threadsafe(queue.put_nowait, ("item", item))
        except BaseException as exc:
            loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))
        else:
            loop.call_soon_threadsafe(queue.put_nowait, ("done", None))

    threading.Thread(target=produce, name=f"provender-{name}", daemon=True).start()
    while True:
        kind, value = await queue.get()
        if kind == "item":
            yield value
        elif kind == "error":
            raise value
        else:
            return


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# Embedding options: name -> (valid?, what a valid value is). Generation options are typed by
# `provender.generation.GenerationOptions`, which imports pydantic.
EMBED_OPTION_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "batch_size": (lambda v: _int(v) and v >= 1, "an integer >= 1"),
    "max_length": (lambda v: _int(v) and v >= 2, "an integer >= 2"),
    "normalize": (lambda v: isinstance(v, bool), "true or false"),
}


def check_options(
    options: dict[str, Any], known: Iterable[str], *, provider: str = "provider", what: str = "option"
) -> dict[str, Any]:
    """Reject options not in `known` (UnsupportedError naming them) and values `EMBED_OPTION_CHECKS`
    refuses (InvalidOptionError); None means "the default". Returns `options` unchanged."""
    known = tuple(known)
    unknown = sorted(set(options) - set(known))
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise UnsupportedError(provider, f"{what} {names}", f"known options are {', '.join(known) or 'none'}")
    for key in known:
        value = options.get(key)
        check = EMBED_OPTION_CHECKS.get(key)
        if value is not None and check is not None and not check[0](value):
            raise InvalidOptionError(key, value, check[1])
    return options


def check_generation_options(
    options: dict[str, Any], *, provider: str = "provider", extra: tuple[str, ...] = ()
) -> GenerationOptions:
    """The common generation options (and `extra` ones) validated: `provender.generation.parse_options`
    against ``Provider.supported_options`` plus `extra`. Kept for plugins written against it."""
    from provender.generation import parse_options

    return parse_options(options, Provider.supported_options | set(extra), provider=provider)


def check_embed_input(texts: Any, options: dict[str, Any], known: Iterable[str], *, provider: str) -> None:
    """`embed`'s arguments: `texts` a list of strings, `options` among `known` with valid values."""
    check_options(options, known, provider=provider, what="embedding option")
    if isinstance(texts, str) or not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise InvalidOptionError("texts", type(texts).__name__, "a list of strings")


def check_messages(messages: Any, tools: Any = None) -> None:
    """`chat`'s arguments: OpenAI-shaped messages (dicts with a role) and tools (a list of dicts)."""
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise InvalidOptionError("messages", type(messages).__name__, "a list of {'role': ..., 'content': ...} dicts")
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
        raise InvalidOptionError("tools", type(tools).__name__, "a list of OpenAI-style tool dicts")
