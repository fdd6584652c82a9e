"""The cache's stats over time, for the web page: a sampled history kept by the server.

A thread of the server reads the cache index's counters (hits, misses, evictions, bytes
evicted: persistent and shared by every process using the cache) and its totals (entries,
bytes) every ``server.stats_interval`` seconds (10 by default; 0 keeps no history) into a
bounded ring (`CAPACITY` samples: an hour at 10 s). Each sample also carries the hit rate of
its interval (the lookups since the previous sample), so a chart shows what changed, not a
lifetime average. A sample reads the index only (three small queries, no scan of the disk):
entries that appeared by other means show once a listing (the page's ``/api/web/cache``,
`provender cache ls`) has synced the index. ``GET /api/web/history`` answers the ring.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from provender import CacheManager

logger = logging.getLogger(__name__)

#: samples kept (the oldest goes first)
CAPACITY = 360
#: seconds between samples when ``server.stats_interval`` is not set
INTERVAL = 10.0


def sample(cm: CacheManager, previous: dict[str, Any] | None, now: float | None = None) -> dict[str, Any]:
    """One point of the history: the index's counters and totals now, and the hit rate since `previous`."""
    index = cm.index
    counters = index.stats()
    prompts = index.total_size("prompt")
    point: dict[str, Any] = {
        "time": time.time() if now is None else now,
        "hits": counters["hits"],
        "misses": counters["misses"],
        "evictions": counters["evictions"],
        "bytes_evicted": counters["bytes_evicted"],
        # the models, as the page's cache view counts them; the saved prompt caches (kind ``prompt``,
        # a budget of their own inside cache.max_size: cache.prompt_cache_max_size) beside them
        "entries": len(index.stamps()) - len(index.of_kind("prompt")),
        "size": index.total_size() - prompts,
        "max_size": cm.max_size,
        "prompt_size": prompts,
    }
    lookups = point["hits"] + point["misses"]
    hits = point["hits"]
    if previous is not None and lookups >= previous["hits"] + previous["misses"]:
        lookups -= previous["hits"] + previous["misses"]  # this interval's only (counters can restart: a rebuilt index)
        hits -= previous["hits"]
    point["lookups"] = lookups
    point["hit_rate"] = hits / lookups if lookups else None
    return point


class CacheHistory:
    """The ring of samples and the thread that fills it (`start`; `stop` ends it)."""

    def __init__(self, interval: float = INTERVAL, capacity: int = CAPACITY) -> None:
        self.interval = interval
        self.capacity = capacity
        self._samples: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="provender-web-history", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        from provender import CacheManager

        cm: CacheManager | None = None
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                cm = cm or CacheManager()  # its own, on this thread (settings read once, ~20 ms)
                self.record(sample(cm, self.last()))
            except Exception as exc:  # an unreadable cache: the page's own requests say why
                logger.debug("no cache stats sample: %s", exc)
                cm = None
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def record(self, point: dict[str, Any]) -> None:
        with self._lock:
            self._samples.append(point)

    def last(self) -> dict[str, Any] | None:
        with self._lock:
            return self._samples[-1] if self._samples else None

    def view(self) -> dict[str, Any]:
        """``GET /api/web/history``: the interval, the capacity and the samples, oldest first."""
        with self._lock:
            samples = list(self._samples)
        return {"interval": self.interval, "capacity": self.capacity, "samples": samples}
