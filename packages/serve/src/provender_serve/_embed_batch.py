"""Embedding requests batched on their model's thread (as text-embeddings-inference does).

Requests for one model with the same options that arrive while a batch runs, or within
`WINDOW` seconds of the first, are joined into one ``Embedder.embed`` call on the model's
thread, at most `MAX_TEXTS` texts (a single larger request still runs whole, alone). Each
request gets exactly its own vectors, in order. Validation stays per request (it happens
before a request is queued), so a bad request never joins a batch; a failure of the batch
itself is the answer of each request in it. Every request is admitted and held on its own
(``ModelRegistry.admit``/``hold``), so the queue limit, keep-alive and served counts mean what
they did.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from provender_serve import _openai as oai
from provender_serve._models import ModelRegistry, Slot
from provender_serve._threads import run_in_thread

#: seconds a fresh batch waits for concurrent requests to join it (requests that arrive while
#: a batch runs join the next one without waiting)
WINDOW = 0.005
#: the most texts one batch takes from several requests
MAX_TEXTS = 64


@dataclass(eq=False)
class _Ticket:
    texts: list[str]
    keep_alive: float | None
    future: Future[tuple[Any, int]] = field(default_factory=Future)


@dataclass
class _Queue:
    slot: Slot
    key: tuple[Any, ...]
    tickets: list[_Ticket] = field(default_factory=list)


class EmbedBatches:
    """The embedding batches of one server, one queue per (model slot, options)."""

    def __init__(self, registry: ModelRegistry, *, window: float = WINDOW, max_texts: int = MAX_TEXTS) -> None:
        self.registry, self.window, self.max_texts = registry, window, max_texts
        self._lock = threading.Lock()
        self._queues: dict[tuple[int, tuple[Any, ...]], _Queue] = {}
        self.batches = 0  # embed calls run
        self.requests = 0  # requests answered by them
        self.joined = 0  # requests that ran in a batch of more than one
        self.largest = 0  # the most requests one batch took

    def stats(self) -> dict[str, int]:
        return {"batches": self.batches, "requests": self.requests, "joined": self.joined, "largest": self.largest}

    async def embed(
        self, name: str, texts: list[str], keep_alive: float | None, key: tuple[Any, ...] = ()
    ) -> tuple[Any, int]:
        """Admit a request for model `name` and embed its `texts` in the model's next batch:
        (its vectors, its prompt tokens). `key`: the options; only equal ones share a batch."""

        def start() -> Future[tuple[Any, int]]:
            slot = self.registry.admit(name)  # 403/404/503 here, for this request alone
            ticket = _Ticket(texts, keep_alive)
            with self._lock:
                queue = self._queues.get((id(slot), key))
                fresh = queue is None
                if queue is None:
                    queue = self._queues[(id(slot), key)] = _Queue(slot, key)
                queue.tickets.append(ticket)
            if fresh:
                slot.submit(lambda: self._drain(queue, wait=True))
            return ticket.future

        return await asyncio.wrap_future(await run_in_thread(start))

    def _take(self, queue: _Queue) -> list[_Ticket]:
        with self._lock:
            taken: list[_Ticket] = []
            count = 0
            while queue.tickets and (not taken or count + len(queue.tickets[0].texts) <= self.max_texts):
                ticket = queue.tickets.pop(0)
                taken.append(ticket)
                count += len(ticket.texts)
            if not taken and self._queues.get((id(queue.slot), queue.key)) is queue:
                del self._queues[(id(queue.slot), queue.key)]  # nothing left: the next request starts afresh
            return taken

    def _drain(self, queue: _Queue, *, wait: bool) -> None:
        """On the model's thread: run one batch, then queue the next behind other work."""
        if wait and self.window > 0:
            time.sleep(self.window)
        taken = self._take(queue)
        if not taken:
            return
        try:
            self._run(queue.slot, taken)
        finally:
            queue.slot.submit(lambda: self._drain(queue, wait=False))

    def _run(self, slot: Slot, taken: list[_Ticket]) -> None:
        from provender_embedding import Embedder

        try:
            with contextlib.ExitStack() as stack:
                for i, ticket in enumerate(taken):  # each request held once; the first takes the lock
                    stack.enter_context(
                        self.registry.hold(slot, keep_alive=ticket.keep_alive, kind="embedding", exclusive=i == 0)
                    )
                texts = [text for ticket in taken for text in ticket.texts]
                vectors: Any = Embedder(slot.provider).embed(texts) if texts else []
                tokens = [sum(oai.count_tokens(slot.provider, t) for t in ticket.texts) for ticket in taken]
        except BaseException as exc:
            for ticket in taken:
                ticket.future.set_exception(exc)
            return
        self.batches += 1
        self.requests += len(taken)
        self.joined += len(taken) if len(taken) > 1 else 0
        self.largest = max(self.largest, len(taken))
        start = 0
        for ticket, count in zip(taken, tokens, strict=True):
            ticket.future.set_result((vectors[start : start + len(ticket.texts)], count))
            start += len(ticket.texts)
