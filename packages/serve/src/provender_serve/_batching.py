"""Continuous batching in the server: the generation requests for one model whose provider
``supports_batching`` are decoded together by one `provender.BatchSession`.

The session runs on the model's own thread (the driver); each request reads its pieces
from a queue of its own on a thread of its own. Requests that wait together start
together, and requests that arrive while a batch of several runs join it at its next
step (continuous batching). A generation that runs alone past its first token is not
joined: requests behind it wait, as they do for a provider without batching, so the
queue (and its 503) means what it always did. A request whose reader stops (its client
went away) leaves the batch at the next step, and the others go on. When no request is
left, the driver ends and the model's thread is free for other work (embeddings, a
seeded request).

A request with a constraint (``response_format``, a forced ``tool_choice``) or ``logprobs``
joins the batch when the provider takes those options (``supported_options``; a provider
whose batch does less declares ``batch_supported_options``): its session then masks that
sequence's logits alone and gives its logprobs (``BatchSession.step_chunks``: text,
logprobs, the runtime's finish reason). A session without ``step_chunks`` of its own gives
text only, so such a request is refused there (400) rather than answered without its
logprobs; one the provider does not take at all runs alone and gets the provider's own
refusal. Running alone would serialize constrained requests behind each other: measured in
docs/serve.md.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from provender import BatchSession, Provider, UnsupportedError

if TYPE_CHECKING:
    from provender_serve._models import Slot

logger = logging.getLogger(__name__)
T = TypeVar("T")


#: Options a batch must say it honours before a request that sets them may join it.
BATCH_RESULT_OPTIONS = ("constraint", "logprobs", "top_logprobs")


@dataclass
class Piece:
    """A batch's text for one sequence where its session gives text only (``Chunk``'s shape)."""

    text: str
    logprobs: list[Any] | None = None
    finish_reason: str | None = None


def batchable(provider: Provider, options: dict[str, Any]) -> bool:
    """Whether a request with these options can join a batch on `provider`: a seed needs
    the random state to itself (it runs alone), and a constraint or logprobs need a batch
    that honours them (``batch_supported_options``, by default the provider's ``supported_options``)."""
    if not getattr(provider, "supports_batching", False) or options.get("seed") is not None:
        return False
    honoured: frozenset[str] = getattr(
        provider, "batch_supported_options", getattr(provider, "supported_options", frozenset())
    )
    return all(name in honoured for name in BATCH_RESULT_OPTIONS if options.get(name))


def batched(slot: Slot, options: dict[str, Any]) -> bool:
    """Whether this generation joins the model's batch (its provider decodes several at once)."""
    return slot.batcher is not None and batchable(slot.provider, options)


def spawn(fn: Callable[[], T], name: str = "provender-serve-batched") -> Future[T]:
    """`fn()` on a thread of its own, its result or exception in the future: a batched request
    waits there for its pieces while the model's thread runs the batch."""
    future: Future[T] = Future()

    def run() -> None:
        try:
            future.set_result(fn())
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    return future


@dataclass(eq=False)
class Ticket:
    """One request in a batch: what to generate, and the queue its chunks go to."""

    prompt: str | None
    messages: list[dict[str, Any]] | None
    tools: list[dict[str, Any]] | None
    options: dict[str, Any]
    queue: queue.SimpleQueue[tuple[str, Any]] = field(default_factory=queue.SimpleQueue)
    cancelled: bool = False

    def put(self, chunk: Any) -> None:
        self.queue.put(("piece", chunk))

    def finish(self) -> None:
        self.queue.put(("done", None))

    def fail(self, exc: BaseException) -> None:
        self.queue.put(("error", exc))

    def pieces(self) -> Iterator[Any]:
        """The request's chunks (``text``, ``logprobs``, ``finish_reason``); closing it early drops
        the request from the batch."""
        try:
            while True:
                kind, value = self.queue.get()
                if kind == "piece":
                    yield value
                elif kind == "done":
                    return
                else:
                    raise value
        finally:
            self.cancelled = True  # read by the driver: a finished request is gone already


class Batcher:
    """The batch of one model. `pieces` adds a request and returns its text as an iterator;
    `submit` runs a function on the model's thread (where the driver runs)."""

    def __init__(self, provider: Provider, submit: Callable[[Callable[[], None]], Future[None]], lock: Any) -> None:
        self.provider = provider
        self._submit = submit
        self._model_lock = lock  # the slot's lock: held while a batch runs, as a lone request holds it
        self._lock = threading.Lock()
        self._pending: deque[Ticket] = deque()
        self._running = False
        self.batches = 0  # sessions run, for logs and tests
        self.largest = 0  # the most requests decoded together
        self.dropped = 0  # requests dropped from a batch because their client went away

    def pieces(
        self,
        prompt: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        tools: list[dict[str, Any]] | None = None,
        options: dict[str, Any],
    ) -> Iterator[Any]:
        """Queue a generation; it joins the running batch, or starts one on the model's thread.
        Yields the request's chunks (`Piece`, or the session's ``Chunk`` objects)."""
        ticket = Ticket(prompt, messages, tools, dict(options))
        with self._lock:
            self._pending.append(ticket)
            start = not self._running
            self._running = True
        if start:
            self._submit(self._drive)
        return ticket.pieces()

    def _take_pending(self, active: int, joinable: bool) -> list[Ticket] | None:
        """New requests (none unless `joinable`); None (the driver stops) when nothing is left to do."""
        with self._lock:
            new = list(self._pending) if joinable or not active else []
            if new:
                self._pending.clear()
            if not new and not active:
                self._running = False
                return None
            return new

    def _drive(self) -> None:
        tickets: dict[int, Ticket] = {}
        session: BatchSession | None = None
        steps, together = 0, False  # since the batch last emptied; whether it has held several
        try:
            with self._model_lock:
                session = self.provider.batch_session()
                self.batches += 1
                while (new := self._take_pending(len(tickets), together or steps <= 1)) is not None:
                    for ticket in new:
                        if ticket.cancelled:
                            continue
                        asked = [name for name in BATCH_RESULT_OPTIONS if ticket.options.get(name)]
                        if asked and not _gives_chunks(session):  # it would drop them: refuse, never ignore
                            ticket.fail(UnsupportedError(self.provider.name, f"option {asked[0]!r} in a batch"))
                            continue
                        try:
                            uid = session.insert(
                                ticket.prompt, messages=ticket.messages, tools=ticket.tools, **ticket.options
                            )
                        except Exception as exc:  # this request's options or prompt: its error only
                            ticket.fail(exc)
                        else:
                            tickets[uid] = ticket
                    gone = [uid for uid, ticket in tickets.items() if ticket.cancelled]
                    if gone:
                        logger.info("client went away: dropped %d sequence(s) from the batch", len(gone))
                        session.remove(gone)
                        self.dropped += len(gone)
                        for uid in gone:
                            del tickets[uid]
                    self.largest = max(self.largest, len(tickets))
                    together = together or len(tickets) > 1
                    if not tickets:
                        steps, together = 0, False
                        continue
                    steps += 1
                    for uid, chunk, finished in _step(session):
                        member = tickets.get(uid)
                        if member is None:
                            continue
                        member.put(chunk)
                        if finished:
                            member.finish()
                            del tickets[uid]
        except BaseException as exc:  # the session failed: every request in it gets the error
            with self._lock:
                failed = [*tickets.values(), *self._pending]
                self._pending.clear()
                self._running = False
            for ticket in failed:
                ticket.fail(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            if session is not None:
                try:
                    session.close()
                except Exception:
                    logger.exception("closing a batch session failed")


def _gives_chunks(session: BatchSession) -> bool:
    """Whether `session` has a ``step_chunks`` of its own (text, logprobs, finish reasons)."""
    own = getattr(type(session), "step_chunks", None)
    return own is not None and own is not getattr(BatchSession, "step_chunks", None)


def _step(session: BatchSession) -> list[tuple[int, Any, bool]]:
    """One step of `session`: (id, chunk, finished) per sequence; chunks from ``step_chunks``
    where the session has it (a chunk with a finish reason ends its sequence), else `Piece`s."""
    if _gives_chunks(session):
        return [(uid, chunk, chunk.finish_reason is not None) for uid, chunk in session.step_chunks()]
    return [(uid, Piece(text), finished) for uid, text, finished in session.step()]
