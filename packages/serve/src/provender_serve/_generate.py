"""A reply from a provider, chunk by chunk, and what the OpenAI answers need of it.

`chunks` asks the provider for ``provender.generation.Chunk`` objects (``stream_complete``:
text, the tokens' logprobs, and on the last one the runtime's ``finish_reason``), from the
model's batch or from the provider alone. `Reply` gathers them: the text, the logprobs,
the finish reason the runtime gave, the token count.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from provender import Provider, UnsupportedError
from provender_serve import _openai as oai
from provender_serve._batching import Piece, batched

if TYPE_CHECKING:
    from provender_serve._models import Slot

#: Options a provider from before ``stream_complete`` cannot honour (refused, never dropped).
RESULT_OPTIONS = ("constraint", "logprobs", "top_logprobs")


def _provider_chunks(
    provider: Provider,
    prompt: str | None,
    messages: list[dict[str, Any]] | None,
    tools: list[dict[str, Any]] | None,
    options: dict[str, Any],
) -> Iterator[Any]:
    stream_complete = getattr(provider, "stream_complete", None)
    if callable(stream_complete):
        if messages is not None:
            yield from stream_complete(messages=messages, tools=tools, **options)
        else:
            yield from stream_complete(prompt, **options)
        return
    asked = [name for name in RESULT_OPTIONS if options.get(name)]
    if asked:
        raise UnsupportedError(provider.name, f"option {asked[0]!r}", "this provider gives text only")
    if messages is not None:
        pieces = provider.stream_chat(messages, tools=tools, **options)
    else:
        pieces = provider.stream(prompt or "", **options)
    for piece in pieces:
        yield Piece(piece)


def chunks(
    slot: Slot,
    *,
    prompt: str | None = None,
    messages: list[dict[str, Any]] | None = None,
    tools: list[dict[str, Any]] | None = None,
    options: dict[str, Any],
) -> Iterator[Any]:
    """The reply's chunks: from the model's batch, or from the provider alone."""
    if slot.batcher is not None and batched(slot, options):
        return slot.batcher.pieces(prompt, messages=messages, tools=tools, options=options)
    return _provider_chunks(slot.provider, prompt, messages, tools, options)


@dataclass
class Reply:
    """A reply gathered from its chunks."""

    max_tokens: int | None
    texts: list[str] = field(default_factory=list)
    logprobs: list[Any] | None = None
    finish: str | None = None  # the runtime's, from the last chunk
    generated: int | None = None  # the runtime's count of completion tokens, from the last chunk
    prompt: int | None = None  # the runtime's count of the prompt's tokens (its chat template's), from the last chunk
    cached: int | None = None  # how many of them came from a prompt cache, when the runtime says

    def add(self, chunk: Any) -> None:
        if chunk.text:
            self.texts.append(chunk.text)
        if chunk.logprobs is not None:
            self.logprobs = [*(self.logprobs or []), *chunk.logprobs]
        if chunk.finish_reason is not None:
            self.finish = chunk.finish_reason
            self.generated = getattr(chunk, "completion_tokens", None)
            self.prompt = getattr(chunk, "prompt_tokens", None)
            self.cached = getattr(chunk, "cached_tokens", None)

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def tokens(self, provider: Provider) -> int:
        """Tokens generated: the runtime's count, else one per logprob, else counted."""
        if self.generated:
            return int(self.generated)
        if self.logprobs is not None:
            return len(self.logprobs)
        return oai.completion_tokens(provider, self.text, len(self.texts), self.max_tokens)

    def prompt_tokens(self, provider: Provider, prompt: str | list[dict[str, Any]]) -> int:
        """The prompt's tokens: the runtime's count (the rendered template's), else `prompt` (a text or
        the messages' texts) counted by the provider's tokenizer."""
        if self.prompt:
            return int(self.prompt)
        return oai.count_tokens(provider, prompt if isinstance(prompt, str) else oai.prompt_text(prompt))

    def usage(self, provider: Provider, prompt: str | list[dict[str, Any]]) -> dict[str, Any]:
        """OpenAI's ``usage``, with ``prompt_tokens_details.cached_tokens`` where the runtime counted them."""
        return oai.usage(self.prompt_tokens(provider, prompt), self.tokens(provider), self.cached)

    def finish_reason(self, provider: Provider, tool_calls: list[dict[str, Any]]) -> str:
        """``tool_calls`` when calls were found; else the runtime's reason (a provider from before
        ``stream_complete`` gives none: then "length" when it generated ``max_tokens`` tokens)."""
        if tool_calls:
            return "tool_calls"
        if self.finish in ("stop", "length"):
            return self.finish
        return oai.finish_reason(self.tokens(provider), self.max_tokens, [])
