"""Continuous batching for `MLXProvider`: several generations in one forward pass, on
mlx-lm's `BatchGenerator` (the machinery behind ``mlx_lm.server``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from provender import BatchSession, ProvenderError, UnsupportedError
from provender._provider import DEFAULT_MAX_TOKENS, StopCut

if TYPE_CHECKING:
    from provender import LoadedModel
    from provender_mlx.provider import MLXProvider

logger = logging.getLogger(__name__)

Sampler = Callable[[Any], Any]


@dataclass
class _Sequence:
    detokenizer: Any
    cut: StopCut


class MLXBatchSession(BatchSession):
    """A `provender.BatchSession` on `mlx_lm.generate.BatchGenerator`.

    Each request gets its own sampler (``temperature``, ``top_p`` through mlx-lm's
    `make_sampler`; requests with the same settings share one, so greedy requests sample
    in one call), its own detokenizer and stop strings, and stops at the tokenizer's end
    of sequence tokens, as `mlx_lm.stream_generate` does. The model's lock in the pool is
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
        self._samplers: dict[tuple[float, float], Sampler] = {}
        self._sequences: dict[int, _Sequence] = {}
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
        self._provider.check_options(options)
        if options.get("seed") is not None:
            raise UnsupportedError("mlx", "seed in a batch", "a batch shares one random state; generate it alone")
        text = self._provider.render_prompt(self._item, prompt, messages, tools, options.get("system_prompt"))
        tokenizer = self._tokenizer
        bos = tokenizer.bos_token  # as mlx_lm.stream_generate: no second BOS when the prompt has one
        tokens = tokenizer.encode(text, add_special_tokens=bos is None or not text.startswith(bos))
        if not tokens:
            raise ProvenderError("the prompt is empty after tokenization")
        with self._item.lock:
            (uid,) = self._generator.insert(
                [list(tokens)],
                max_tokens=[int(options.get("max_tokens") or DEFAULT_MAX_TOKENS)],
                samplers=[self._sampler(options)],
                stop_sequences=[self._eos],
            )
        self._sequences[int(uid)] = _Sequence(tokenizer.detokenizer, StopCut(options.get("stop")))
        return int(uid)

    def _sampler(self, options: dict[str, Any]) -> Sampler:
        from mlx_lm.sample_utils import make_sampler

        key = (float(options.get("temperature") or 0.0), float(options.get("top_p") or 0.0))
        if key not in self._samplers:
            self._samplers[key] = make_sampler(temp=key[0], top_p=key[1])
        return self._samplers[key]

    def step(self) -> list[tuple[int, str, bool]]:
        if not self._sequences:
            return []
        with self._item.lock:
            responses = self._generator.next_generated()
        out: list[tuple[int, str, bool]] = []
        stopped: list[int] = []
        for r in responses:
            uid = int(r.uid)
            seq = self._sequences.get(uid)
            if seq is None:
                continue
            detokenizer = seq.detokenizer
            if r.finish_reason != "stop":  # an end-of-sequence token is not text
                detokenizer.add_token(r.token)
            if r.finish_reason is not None:
                detokenizer.finalize()
            text, hit = seq.cut.feed(detokenizer.last_segment)
            finished = hit or r.finish_reason is not None
            if finished:
                if not hit:
                    text += seq.cut.flush()
                del self._sequences[uid]
                if r.finish_reason is None:
                    stopped.append(uid)  # a stop string: the generator still holds it
            out.append((uid, text, finished))
        if stopped:
            self.remove(stopped)
        return out

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
