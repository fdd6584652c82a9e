"""Continuous batching for `MLXProvider`: several generations in one forward pass, on
mlx-lm's `BatchGenerator` (the machinery behind ``mlx_lm.server``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from provender import BatchSession, ProvenderError, UnsupportedError
from provender_mlx.provider import encode, sampler, token_text

if TYPE_CHECKING:
    from provender import LoadedModel
    from provender._decoding import Decoding
    from provender.generation import Chunk
    from provender_mlx.provider import MLXProvider

logger = logging.getLogger(__name__)

Sampler = Callable[[Any], Any]


@dataclass
class _Sequence:
    detokenizer: Any
    decoding: Decoding


class MLXBatchSession(BatchSession):
    """A `provender.BatchSession` on `mlx_lm.generate.BatchGenerator`.

    Each request gets its own sampler (``temperature``, ``top_p``, ``top_k``, ``min_p``
    through mlx-lm's `make_sampler`; requests with the same settings share one, so greedy
    requests sample in one call), its own detokenizer, stop strings and `Decoding` (its
    constraint's mask and its logprobs through a per-request logits processor), and stops
    at the tokenizer's end of sequence tokens, as `mlx_lm.stream_generate` does. The model's lock in the pool is
    held for each step, not between steps, so other work on the model can interleave.
    """

    def __init__(
        self,
        provider: MLXProvider,
        item: LoadedModel,
        *,
        completion_batch_size: int = 32,
        prefill_batch_size: int = 8,
    ) -> None:
        from mlx_lm.generate import BatchGenerator, StopSequences

        self._provider = provider
        self._item = item
        self._tokenizer = item.tokenizer
        with item.lock:
            self._generator: Any = BatchGenerator(
                item.model, completion_batch_size=completion_batch_size, prefill_batch_size=prefill_batch_size
            )
        self._eos = StopSequences([[int(t)] for t in self._tokenizer.eos_token_ids])
        self._samplers: dict[tuple[float, float, float, int], Sampler] = {}
        self._sequences: dict[int, _Sequence] = {}
        self._prompts = item.prompt_cache  # the model's prompt cache: reused at insert, kept at the end
        self._closed = False

    def insert(
        self,
        prompt: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        tools: list[dict[str, Any]] | None = None,
        **options: Any,
    ) -> int:
        if self._closed:
            raise ProvenderError("this batch session is closed")
        if options.get("seed") is not None:
            raise UnsupportedError("mlx", "seed in a batch", "a batch shares one random state; generate it alone")
        request = self._provider.request(self._item, prompt, messages, tools, options)
        tokens = encode(self._tokenizer, request.text)
        if not tokens:
            raise ProvenderError("the prompt is empty after tokenization")
        from provender.generation import hf_token_bytes

        decoding = self._provider.decoding(
            request,
            prompt_tokens=len(tokens),
            token_text=token_text(self._tokenizer),
            token_bytes=hf_token_bytes(self._tokenizer),
        )
        prompts = self._prompts if self._prompts is not None and self._prompts.enabled else None
        state, reused = prompts.fetch(tokens) if prompts is not None else (None, 0)
        decoding.cached_tokens = reused if prompts is not None else None
        steps = [tokens[reused:]]
        if messages is not None:  # a first visit's system prompt is a prefill step of its own, as in mlx_lm.server
            from provender_mlx._prompt import segments

            conversation = self._provider.conversation(messages, tools, request.options.system_prompt)
            shown = tools if request.options.tool_choice != "none" else None
            steps = segments(self._tokenizer, conversation, shown, tokens, reused)
        with self._item.lock:
            (uid,) = self._generator.insert_segments(
                [steps],
                caches=[state] if state is not None else None,
                all_tokens=[tokens[:reused]],
                max_tokens=[decoding.max_tokens],
                samplers=[self._sampler(request.options)],
                logits_processors=[[decoding.mlx_hook] if decoding.hooked else []],
                stop_sequences=[self._eos],
            )
        self._sequences[int(uid)] = _Sequence(self._tokenizer.detokenizer, decoding)
        return int(uid)

    def _sampler(self, options: Any) -> Sampler:
        key = (options.temperature or 0.0, options.top_p or 0.0, options.min_p or 0.0, options.top_k or 0)
        if key not in self._samplers:
            self._samplers[key] = sampler(options)
        return self._samplers[key]

    def step_chunks(self) -> list[tuple[int, Chunk]]:
        from provender.generation import Chunk

        if not self._sequences:
            return []
        with self._item.lock:
            responses = self._generator.next_generated()
        out: list[tuple[int, Chunk]] = []
        stopped: list[int] = []
        for r in responses:
            uid = int(r.uid)
            seq = self._sequences.get(uid)
            if seq is None:
                continue
            detokenizer, decoding = seq.detokenizer, seq.decoding
            if r.finish_reason != "stop":  # an end-of-sequence token is not text
                detokenizer.add_token(r.token)
            if r.finish_reason is not None:
                detokenizer.finalize()
            if r.finish_reason == "stop":
                chunk: Chunk | None = decoding.finish("stop", detokenizer.last_segment)
            elif r.finish_reason is not None:
                chunk = decoding.feed_last(r.token, detokenizer.last_segment, r.finish_reason)
            else:
                chunk = decoding.feed(r.token, detokenizer.last_segment)
            if chunk is not None and chunk.finish_reason is not None:
                del self._sequences[uid]
                self._keep(r)
                if r.finish_reason is None:
                    stopped.append(uid)  # a stop string: the generator still holds it
            out.append((uid, chunk or Chunk(text="")))
        if stopped:
            self.remove(stopped)
        return out

    def _keep(self, r: Any) -> None:
        """Store a finished sequence's state in the model's prompt cache (mlx-lm hands it over at the end)."""
        state, fed = getattr(r, "prompt_cache", None), getattr(r, "all_tokens", None)
        if self._prompts is not None and self._prompts.enabled and state and fed:
            from provender_mlx._prompt import keep

            keep(self._prompts, list(fed), state)

    def remove(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        for uid in ids:
            self._sequences.pop(uid, None)
        if ids and not self._closed:
            with self._item.lock:
                self._generator.remove(ids)

    def __len__(self) -> int:
        return len(self._sequences)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._sequences.clear()
        with self._item.lock:
            self._generator.close()
        self._generator = None
