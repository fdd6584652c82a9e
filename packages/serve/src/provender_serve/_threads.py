"""Running a request on its model's own thread: `on_model` for one answer, `stream_from_model`
for a streamed one (produced on that thread, handed to the event loop chunk by chunk, stopped
at the next chunk when the client goes away), and the small pieces they share."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from starlette.responses import JSONResponse, Response, StreamingResponse

from provender_serve import _openai as oai
from provender_serve._batching import spawn
from provender_serve._models import ModelRegistry, Slot, api_error
from provender_serve.errors import APIError

T = TypeVar("T")
READY = b""  # what a stream's producer yields once its model is acquired: errors after it go in-band


@contextlib.contextmanager
def closing(iterable: Iterable[T]) -> Iterator[Iterator[T]]:
    """Iterate `iterable`, closing it (running a generator's ``finally`` blocks) on the way out."""
    iterator = iter(iterable)
    try:
        yield iterator
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def error_response(error: APIError) -> JSONResponse:
    headers = {"Retry-After": "1"} if error.status == 503 else None
    if error.status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


async def run_in_thread(fn: Callable[[], T]) -> T:
    """`fn()` on a new thread: blocking work (creating a provider, listing the cache) off the event loop."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            future.set_result(value) if ok else future.set_exception(value)

    def target() -> None:
        try:
            result = fn()
        except BaseException as exc:
            outcome: tuple[bool, Any] = (False, exc)
        else:
            outcome = (True, result)
        with contextlib.suppress(RuntimeError):  # the loop closed (shutdown)
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=target, name="provender-serve-request", daemon=True).start()
    return await future


async def on_model(
    registry: ModelRegistry, name: str, work: Callable[[Slot], T], alone: Callable[[Slot], bool] = lambda slot: True
) -> T:
    """Admit a request for model `name`, then run `work(slot)` on that model's thread (or,
    when not `alone(slot)`, a request of the model's batch, on a thread of its own)."""

    def start() -> Future[T]:  # admission and submission together: no admitted request is lost
        slot = registry.admit(name)
        return slot.submit(lambda: work(slot)) if alone(slot) else spawn(lambda: work(slot))

    return await asyncio.wrap_future(await run_in_thread(start))


async def stream_from_model(
    registry: ModelRegistry,
    name: str,
    make: Callable[[Slot, threading.Event], Iterator[bytes]],
    alone: Callable[[Slot], bool] = lambda slot: True,
) -> Response:
    """Run `make(slot, cancel)` on the model's thread; an error before it yields `READY` is an
    HTTP error, after it the chunks stream as server-sent events. A client that goes away sets `cancel`."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    cancel = threading.Event()

    def put(kind: str, value: Any) -> bool:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
            return True
        except RuntimeError:  # the loop closed (shutdown)
            return False

    def produce(slot: Slot) -> None:
        try:
            with closing(make(slot, cancel)) as chunks:  # closing runs the producer's finally blocks
                for chunk in chunks:
                    if cancel.is_set() or not put("item", chunk):
                        return
        except BaseException as exc:
            put("error", exc)
        else:
            put("done", None)

    def start() -> None:
        slot = registry.admit(name)
        if alone(slot):
            slot.submit(lambda: produce(slot))
        else:
            spawn(lambda: produce(slot))

    try:
        await run_in_thread(start)
    except Exception as exc:
        return error_response(api_error(exc))
    kind, value = await queue.get()
    if kind == "error":
        return error_response(api_error(value))

    async def body() -> Any:
        try:
            while True:
                kind, value = await queue.get()
                if kind == "item":
                    yield value
                elif kind == "error":  # the producer reports provider errors in-band; this is a bug
                    yield oai.sse(api_error(value).body())
                    yield oai.sse("[DONE]")
                    return
                else:
                    return
        finally:
            cancel.set()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)
