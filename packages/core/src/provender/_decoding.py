"""One request's decoding, shared by every provider's generation loop.

A provider runs its runtime's own loop and, per request, a `Decoding`:

- its logits hook (`Decoding.numpy_hook`, `torch_hook`, `mlx_hook`), installed as the runtime's
  logits processor, sees the model's raw logits for each step before sampling: it records their
  log-softmax when logprobs are asked, feeds the token sampled at the previous step to the
  constraint's matcher, and masks the logits to what the constraint allows;
- `Decoding.feed` takes each generated token and its text and returns the `Chunk` to pass on
  (stop strings cut, logprobs attached); `Decoding.finish` the last chunk, with the finish
  reason the runtime gave (``"length"`` when ``max_tokens`` cut it, ``"stop"`` at the end of
  sequence) and the token counts.

Imported only when a provider generates (it imports pydantic through `provender.generation`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from provender._provider import DEFAULT_MAX_TOKENS
from provender._stops import StopCut
from provender.generation import Chunk, Detokenizer, GenerationOptions, TokenLogprob, hf_token_bytes

if TYPE_CHECKING:
    import numpy

__all__ = ["Decoding", "Detokenizer", "hf_token_bytes"]


class Decoding:
    """The state of one generated sequence: constraint matcher, recorded logprobs, stop strings."""

    def __init__(
        self,
        options: GenerationOptions,
        *,
        token_text: Callable[[int], str],
        token_bytes: Callable[[int], bytes] | None = None,
        prompt_tokens: int = 0,
        matcher: Any = None,
        tool_call: bool = False,
    ) -> None:
        self.options = options
        self.max_tokens = options.max_tokens or DEFAULT_MAX_TOKENS
        self.matcher = matcher
        self.prompt_tokens = prompt_tokens
        # of the prompt's, read from a prompt cache: set by a provider that keeps one (after its fetch);
        # None where none was looked at
        self.cached_tokens: int | None = None
        self.completion_tokens = 0
        self.stopped = False  # a stop string was reached: the caller ends its loop
        self._token_text = token_text
        self._token_bytes = token_bytes or (lambda token: token_text(token).encode("utf-8", "surrogatepass"))
        self._cut = StopCut(options.stop)
        self._rows: deque[numpy.ndarray] = deque()  # log-softmax rows not yet matched to their token
        self._pending: list[TokenLogprob] = []
        self._calls = 0
        self._tool = tool_call  # a forced tool call: a completed one ends with "tool_calls"
        self._accepted = 0  # tokens the matcher has taken (a runtime may run the hook a step ahead: MLX)
        self._closed = False  # the last token was given to the matcher at the end: no hook call takes more

    @property
    def hooked(self) -> bool:
        """Whether the runtime needs the logits hook (a constraint, or logprobs to record)."""
        return self.matcher is not None or self.options.logprobs

    # -- logits hooks: the runtime's logits processor -----------------------------------------

    def _advance(self, last: Callable[[], int]) -> None:
        """A new step: the matcher takes the token sampled at the previous one."""
        if self._calls and self.matcher is not None and not self._closed:
            self.matcher.accept(last())
            self._accepted += 1
        self._calls += 1

    def numpy_hook(self, history: Any, logits: numpy.ndarray) -> numpy.ndarray:
        """For a 1-D numpy row of raw logits (llama.cpp); `history` ends with the last token."""
        import numpy as np

        self._advance(lambda: int(history[-1]))
        if self.options.logprobs:
            row = logits.astype(np.float32)
            self._rows.append(row - np.logaddexp.reduce(row))
        if self.matcher is not None:
            self.matcher.mask_numpy(logits)
        return logits

    def torch_hook(self, history: Any, scores: Any) -> Any:
        """For (1, V) torch scores (transformers' `LogitsProcessor`); `history` the (1, n) input ids."""
        import torch

        self._advance(lambda: int(history[0, -1]))
        if self.options.logprobs:
            self._rows.append(torch.log_softmax(scores[0].float(), dim=-1).cpu().numpy())
        if self.matcher is not None:
            self.matcher.mask_torch(scores)
        return scores

    def mlx_hook(self, history: Any, logits: Any) -> Any:
        """For (1, V) MLX logits (an mlx-lm logits processor); `history` the tokens so far."""
        import mlx.core as mx
        import numpy as np

        self._advance(lambda: int(history[-1].item()))
        if self.options.logprobs:
            row = logits.astype(mx.float32).reshape(-1)
            self._rows.append(np.array(row - mx.logsumexp(row)))
        if self.matcher is not None:
            logits = self.matcher.mask_mlx(logits)
        return logits

    # -- tokens in, chunks out ----------------------------------------------------------------

    def feed(self, token: int, piece: str) -> Chunk | None:
        """A generated token (not the end of sequence) and its text: the chunk to pass on, if any."""
        self.completion_tokens += 1
        if self._rows:
            self._pending.append(self._logprob(token, self._rows.popleft()))
        text, self.stopped = self._cut.feed(piece)
        if not text and not self.stopped:
            return None
        return self._chunk(text, "stop" if self.stopped else None)

    def finish(self, reason: str, tail: str = "") -> Chunk:
        """The last chunk: `tail` (text the runtime flushed at the end) and what is still held
        back, and why generation ended (``"stop"`` or ``"length"``, as the runtime says;
        ``"tool_calls"`` for a completed forced tool call; ``"stop"`` if `tail` reached a stop string)."""
        text = ""
        if not self.stopped:
            text, self.stopped = self._cut.feed(tail)
            text += "" if self.stopped else self._cut.flush()
        reason = "stop" if self.stopped else reason
        return self._chunk(text, "tool_calls" if self._tool and reason == "stop" else reason)

    def run(self, tokens: Iterable[int], detokenizer: Detokenizer, is_end: Callable[[int], bool]) -> Iterator[Chunk]:
        """The chunks of a runtime's token ids, one at a time: an end-of-sequence token (`is_end`)
        or the ids running out ends with ``"stop"``, the ``max_tokens``-th token with ``"length"``,
        a stop string or a completed constraint as `feed` says."""
        for token in tokens:
            if is_end(token):
                yield self.finish("stop", detokenizer.flush())
                return
            piece = detokenizer.add(token)
            if self.completion_tokens + 1 == self.max_tokens:
                yield self.feed_last(token, piece + detokenizer.flush(), "length")
                return
            if (chunk := self.feed(token, piece)) is not None:
                yield chunk
            if self.stopped:
                return
        yield self.finish("stop", detokenizer.flush())

    def feed_last(self, token: int, piece: str, reason: str) -> Chunk:
        """`feed` and `finish` in one chunk: the runtime's last token came with its finish reason.
        A ``max_tokens``-th token that completes the constraint ends with ``"stop"``, not ``"length"``:
        the reply is whole (the matcher takes it here, as no next step will)."""
        chunk = self.feed(token, piece)
        if chunk is not None and chunk.finish_reason is not None:
            return chunk
        if reason == "length" and self.matcher is not None and self._completes(token):
            reason = "stop"
        last = self.finish(reason)
        if chunk is None:
            return last
        logprobs = None if last.logprobs is None else (chunk.logprobs or []) + last.logprobs
        return last.model_copy(update={"text": chunk.text + last.text, "logprobs": logprobs})

    def _completes(self, token: int) -> bool:
        """Whether the constraint is complete once it takes `token`: nothing more allowed, or
        nothing but the end of sequence (what the next step would be forced to)."""
        from provender.errors import ConstraintViolationError

        matcher = self.matcher
        if self._accepted < self.completion_tokens:  # no later hook call took it
            self._closed = True  # nor will one
            try:
                matcher.accept(token)
            except ConstraintViolationError:
                return False
            self._accepted += 1
        if matcher.is_finished():
            return True
        return bool(matcher.is_accepting()) and set(matcher.allowed_ids()) <= set(matcher.info.eos_token_ids)

    def _chunk(self, text: str, reason: str | None) -> Chunk:
        logprobs = self._pending if self.options.logprobs else None
        self._pending = []
        if reason is None:
            return Chunk(text=text, logprobs=logprobs)
        return Chunk(
            text=text,
            logprobs=logprobs,
            finish_reason=reason,  # type: ignore[arg-type]
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cached_tokens=self.cached_tokens,
        )

    def _logprob(self, token: int, row: numpy.ndarray) -> TokenLogprob:
        import numpy as np

        n = self.options.top_logprobs
        best: list[int] = []
        if n:
            part = np.argpartition(-row, min(n, row.size - 1))[:n]
            best = [int(i) for i in part[np.argsort(-row[part], kind="stable")]]
        logprob = float(row[token]) if token < row.size else float("-inf")
        return TokenLogprob(
            token=self._token_text(token),
            token_id=token,
            logprob=logprob,
            top=[(self._token_text(i), float(row[i])) for i in best],
            bytes=list(self._token_bytes(token)),
            top_bytes=[list(self._token_bytes(i)) for i in best],
        )
