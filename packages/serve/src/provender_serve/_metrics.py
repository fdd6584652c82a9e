"""``/metrics``: the server in Prometheus' text format, through `prometheus_client`.

Each server keeps its own `prometheus_client.CollectorRegistry` (never the process-global
one, so two apps in one process, as in tests, count apart). What it exports:

- ``provender_requests_total{route, model, status}``: every answered request (``route`` is the
  route's path, or ``other`` for a path the server does not serve; ``model`` as the request named
  it once the server has held that model, else empty: names never loaded add no series);
- ``provender_prompt_tokens_total{model}``, ``provender_completion_tokens_total{model}``, and
  ``provender_prompt_cached_tokens_total{model}``: the prompt tokens a prompt cache supplied (part of
  the prompt's; the reuse rate is their ratio);
- ``provender_time_to_first_token_seconds{model}`` and ``provender_tokens_per_second{model}``
  (histograms, one observation per generation);
- ``provender_models_loaded``, ``provender_queue_depth`` (requests waiting behind a running one,
  all models), read from the registry when scraped;
- ``provender_cache_size_bytes``, ``provender_cache_max_size_bytes``, ``provender_cache_entries``,
  ``provender_cache_hits_total``, ``provender_cache_misses_total`` (the cache's persistent counters,
  as ``provender cache stats`` shows them), read when scraped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from provender_serve._models import ModelRegistry, Slot
    from provender_serve._walls import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RATE_BUCKETS = (1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0)


class _State(Collector):
    """Gauges read when scraped: the registry's models and queues, the cache's size and counters."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        rows = self.registry.snapshot()
        yield GaugeMetricFamily("provender_models_loaded", "Models the server holds", value=len(rows))
        queued = sum(int(row.get("queued") or 0) for row in rows)
        yield GaugeMetricFamily("provender_queue_depth", "Requests waiting behind a running one", value=queued)
        try:
            from provender import CacheManager

            stats = CacheManager().stats()
        except Exception as exc:  # an unreadable cache must not take the metrics down
            logger.warning("metrics: cannot read the cache's stats: %s", exc)
            return
        yield GaugeMetricFamily("provender_cache_size_bytes", "Bytes the cache holds", value=stats.size)
        yield GaugeMetricFamily("provender_cache_max_size_bytes", "The cache's size limit", value=stats.max_size)
        yield GaugeMetricFamily("provender_cache_entries", "Models in the cache", value=stats.entries)
        yield CounterMetricFamily("provender_cache_hits", "Cache lookups that found the model", value=stats.hits)
        yield CounterMetricFamily("provender_cache_misses", "Cache lookups that did not", value=stats.misses)


class Metrics:
    """One server's metrics, in a registry of its own."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.models = registry
        self.seen: set[str] = set()  # models the server has held: the only model labels
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "provender_requests", "Requests answered", ["route", "model", "status"], registry=self.registry
        )
        self.prompt_tokens = Counter("provender_prompt_tokens", "Prompt tokens read", ["model"], registry=self.registry)
        self.completion_tokens = Counter(
            "provender_completion_tokens", "Tokens generated", ["model"], registry=self.registry
        )
        self.cached_tokens = Counter(
            "provender_prompt_cached_tokens",
            "Prompt tokens a prompt cache supplied instead of the model processing them",
            ["model"],
            registry=self.registry,
        )
        self.ttft = Histogram(
            "provender_time_to_first_token_seconds",
            "Seconds from the start of generation to its first chunk",
            ["model"],
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        )
        self.rate = Histogram(
            "provender_tokens_per_second",
            "Generated tokens per second, first chunk to last",
            ["model"],
            buckets=RATE_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_State(registry))

    def render(self) -> bytes:
        """The text exposition (reads the cache: call it off the event loop)."""
        return generate_latest(self.registry)

    def count(self, route: str, model: str, status: int) -> None:
        """Count one answer. `model` is its label only once the server has held that model (a
        hostile client naming a new model each time must not grow the series): else empty."""
        if model and model not in self.seen:
            if model in self.models.names():
                self.seen.add(model)
            else:
                model = ""
        self.requests.labels(route, model, str(status)).inc()

    def generation(
        self,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        ttft: float | None,
        rate: float | None,
        cached_tokens: int | None = None,
    ) -> None:
        self.prompt_tokens.labels(model).inc(prompt_tokens)
        self.completion_tokens.labels(model).inc(completion_tokens)
        if cached_tokens is not None:  # a model that keeps a prompt cache: its series, zero or not
            self.cached_tokens.labels(model).inc(cached_tokens)
        if ttft is not None:
            self.ttft.labels(model).observe(ttft)
        if rate is not None:
            self.rate.labels(model).observe(rate)

    def metered(self, slot: Slot, stream: Iterable[Any], prompt: str | list[dict[str, Any]] | None) -> Iterator[Any]:
        """`stream`'s chunks, unchanged; when it ends (or is closed) its tokens, time to first chunk
        and rate are recorded for `slot`'s model. `prompt`: the prompt text or the messages, counted
        where the runtime gives no count of its own (``Chunk.prompt_tokens`` on the last chunk)."""
        from provender_serve._generate import Reply

        reply = Reply(None)
        start = time.perf_counter()
        first: float | None = None
        try:
            for chunk in stream:
                if first is None:
                    first = time.perf_counter()
                reply.add(chunk)
                yield chunk
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
            end = time.perf_counter()
            try:
                provider = slot.provider
                prompt_tokens = reply.prompt_tokens(provider, prompt or [])
                out = reply.tokens(provider) if first is not None else 0
                rate = out / (end - first) if first is not None and out > 1 and end > first else None
                self.seen.add(slot.name)
                ttft = None if first is None else first - start
                self.generation(slot.name, prompt_tokens, out, ttft, rate, reply.cached)
            except Exception:  # metrics never fail a request
                logger.exception("metrics: recording a generation failed")


def route_paths(routes: Iterable[Any]) -> frozenset[str]:
    return frozenset(str(getattr(route, "path", "")) for route in routes)


class Counted:
    """ASGI middleware: count every HTTP answer by route, model and status. The model is what
    a handler stored as ``request.state.model`` (the request's ``model`` once parsed)."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, paths: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        scope.setdefault("state", {})  # the dict `request.state` writes to, shared with the handler

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            path = scope.get("path", "")
            model = scope.get("state", {}).get("model", "")
            self.metrics.count(path if path in self.paths else "other", str(model), status)
