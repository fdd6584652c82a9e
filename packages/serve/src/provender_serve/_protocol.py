"""uvicorn's h11 protocol with a header timeout and a connection cap, and a flood logged once.

uvicorn's own options leave two holes: ``timeout_keep_alive`` starts only after a response, so
a connection that sends nothing, or half a request line, is kept forever; ``limit_concurrency``
acts once headers are parsed. A few hundred such connections exhaust the process's file
descriptors, and then nothing is served. Here:

- a connection must send a complete request head within `header_timeout` seconds of opening,
  and of starting each next request on a kept-alive connection; otherwise it is closed (with
  ``408`` when it had sent part of a request);
- at most `max_connections` connections are open at once. When one more arrives, the oldest
  connection that is only waiting (for headers, or idle between requests) is closed to make
  room, so a flood of idle connections cannot lock real clients out; when every connection is
  busy with a request, the new one is answered ``503`` and closed;
- the process's ``socket.accept() out of system resource`` errors, uvicorn's "Invalid HTTP
  request received." warnings and these drops are counted and logged once a minute in one
  line, not once per connection with a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

logger = logging.getLogger("uvicorn.error")  # formatted and shown as uvicorn's own lines

#: How often a flood is reported (one line with the counts since the last).
FLOOD_INTERVAL = 60.0
DEFAULT_HEADER_TIMEOUT = 10.0
BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\nRetry-After: 1\r\n\r\n"
TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def file_limit() -> int | None:
    """The process's soft limit on open files (``ulimit -n``); None when unlimited or unknown."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY or soft <= 0 else int(soft)


def default_max_connections() -> int:
    """Half the process's file-descriptor limit (the rest is for model files, the cache, imports),
    between 16 and 1024: 512 with the usual soft limit of 1024, 128 under ``ulimit -n 256``."""
    soft = file_limit()
    return 512 if soft is None else max(16, min(1024, soft // 2))


def default_backlog() -> int:
    """The listen backlog, which is also how many connections asyncio accepts in one go before any
    is counted: an eighth of the file limit, 8 to 128 (uvicorn's 2048 ran out of descriptors
    under ``ulimit -n 256`` at once, and a plugin import failing for it broke every later request)."""
    soft = file_limit()
    return 128 if soft is None else max(8, min(128, soft // 8))


class FloodLog:
    """Counts of dropped connections and refused accepts, reported at most once per `interval`."""

    LABELS = {
        "timeout": "closed for not sending their headers in time (server.header_timeout)",
        "evicted": "idle ones closed to make room (server.max_connections)",
        "refused": "refused, every connection busy (server.max_connections)",
        "invalid": "closed for malformed HTTP",
        "accept": "accept() failures for lack of file descriptors (ulimit -n)",
    }

    def __init__(self, interval: float = FLOOD_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self.totals: dict[str, int] = dict.fromkeys(self.LABELS, 0)
        self.pending: dict[str, int] = dict.fromkeys(self.LABELS, 0)
        self.last: float | None = None
        self.flush_scheduled = False
        self.lines = 0  # lines written, for the tests and the soak

    def note(self, kind: str, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.totals[kind] += 1
        self.pending[kind] += 1
        now = self.clock()
        if self.last is None or now - self.last >= self.interval:
            self.flush()
        elif loop is not None and not self.flush_scheduled:  # the rest of this burst: one line later
            self.flush_scheduled = True
            loop.call_later(self.interval - (now - self.last), self.flush)

    def flush(self) -> None:
        self.flush_scheduled = False
        counts = {k: n for k, n in self.pending.items() if n}
        if not counts:
            return
        self.last = self.clock()
        self.pending = dict.fromkeys(self.LABELS, 0)
        self.lines += 1
        what = "; ".join(f"{n} {self.LABELS[k]}" for k, n in counts.items())
        logger.warning("connection flood: %s (next report in %.0f s at most)", what, self.interval)


class _InvalidRequestFilter(logging.Filter):
    """Turns uvicorn's per-connection "Invalid HTTP request received." into a count in `flood`."""

    def __init__(self, flood: FloodLog) -> None:
        super().__init__()
        self.flood = flood

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Invalid HTTP request received"):
            self.flood.note("invalid")
            return False
        return True


class Guard:
    """What all connections of one server share: the limits, the flood log, who is waiting."""

    def __init__(self, header_timeout: float = DEFAULT_HEADER_TIMEOUT, max_connections: int = 0) -> None:
        if header_timeout <= 0:
            raise ValueError(f"server.header_timeout must be more than 0 seconds, not {header_timeout}")
        if max_connections < 0:
            raise ValueError(f"server.max_connections must be 0 (automatic) or more, not {max_connections}")
        self.header_timeout = header_timeout
        self.max_connections = max_connections or default_max_connections()
        self.backlog = default_backlog()
        self.flood = FloodLog()
        self._filter = _InvalidRequestFilter(self.flood)

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Count accept() failures and malformed requests in the flood log (call on the server's loop)."""
        logging.getLogger("uvicorn.error").addFilter(self._filter)
        default = loop.get_exception_handler()

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            if str(context.get("message", "")).startswith("socket.accept() out of system resource"):
                self.flood.note("accept", loop)
                return
            if default is not None:
                default(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handler)

    def protocol(self) -> type[H11Protocol]:
        """The protocol class for ``uvicorn.Config(http=...)``, bound to this guard."""
        return type("GuardedH11Protocol", (GuardedH11Protocol,), {"guard": self})


class GuardedH11Protocol(H11Protocol):
    """H11Protocol with `Guard`'s header timeout and connection cap."""

    guard: Guard

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._header_timer: asyncio.TimerHandle | None = None
        self._received = 0
        self.opened = time.monotonic()
        super().connection_made(transport)
        if len(self.connections) > self.guard.max_connections and not self._make_room():
            self.guard.flood.note("refused", self.loop)
            transport.write(BUSY)
            transport.close()
            return
        self._arm()

    def _make_room(self) -> bool:
        """Close the oldest connection that is only waiting; False when there is none."""
        waiting = [c for c in self.connections if c is not self and isinstance(c, GuardedH11Protocol) and c.waiting()]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda c: c.opened)
        self.guard.flood.note("evicted", self.loop)
        oldest.drop(timed_out=False)
        return True

    def waiting(self) -> bool:
        """Between requests or inside a request's head: nothing of the application runs for it."""
        if self.transport is None or self.transport.is_closing():
            return False
        return bool(self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete))

    def data_received(self, data: bytes) -> None:
        if self.conn.their_state is h11.IDLE:
            self._received += len(data)
            self._arm()  # the first bytes of a next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE or self.transport.is_closing():
            self._disarm()  # the head is complete (or the connection is going)
            self._received = 0

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.guard.header_timeout, self._header_timeout)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.waiting() and (self.cycle is None or self._received):
            self.guard.flood.note("timeout", self.loop)
            self.drop(timed_out=True)

    def drop(self, *, timed_out: bool) -> None:
        """Close this connection now (with a 408 when it had sent part of a request head)."""
        self._disarm()
        if self.transport.is_closing():
            return
        if timed_out and self._received:
            self.transport.write(TIMED_OUT)
        self.transport.close()
