"""The shared in-memory model pool: real threads, real timing, leases on a real cache."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import provender
from provender import CacheManager, LoadedModel, ModelPool, Provider, UnsupportedError, model_pool

# -- helpers -------------------------------------------------------------------------------


@pytest.fixture
def cm(tmp_path: Path, make_files: Callable[[str, dict[str, int | bytes]], Path]) -> CacheManager:
    """A real cache holding three small models, test/a .. test/c."""
    cache = CacheManager(tmp_path / "cache", max_size=10**9)
    for name in ("a", "b", "c"):
        cache.import_model(make_files(name, {"config.json": b"{}", "weights.bin": 1000}), f"test/{name}")
    return cache


def loader(
    cm: CacheManager, name: str, calls: list[str] | None = None, delay: float = 0.0
) -> Callable[[], LoadedModel]:
    """A loader that leases the cache entry and 'loads' a model object (a real, distinct object)."""

    def load() -> LoadedModel:
        if calls is not None:
            calls.append(name)
        lease = cm.acquire(name)
        time.sleep(delay)
        return LoadedModel(name, object(), path=str(lease.entry.model_path), lease=lease, provider="test")

    return load


def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)
    return time.monotonic() - start


@pytest.fixture
def pools() -> Iterator[list[ModelPool]]:
    """Pools made by a test are cleared at its end (their leases released)."""
    made: list[ModelPool] = []
    yield made
    for pool in made:
        pool.clear()


def new_pool(pools: list[ModelPool], **limits: Any) -> ModelPool:
    pool = ModelPool(**limits)
    pools.append(pool)
    return pool


# -- loading -------------------------------------------------------------------------------


def test_concurrent_loads_of_one_key_call_the_loader_once(cm: CacheManager, pools: list[ModelPool]) -> None:
    pool = new_pool(pools, max_models=2, keep_alive=-1)
    calls: list[str] = []
    results: list[LoadedModel] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append(pool.load("test:a", loader(cm, "test/a", calls, delay=0.2)))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["test/a"]
    assert len(results) == 8 and all(r is results[0] for r in results)
    assert cm.in_use("test/a")


def test_different_keys_load_in_parallel(cm: CacheManager, pools: list[ModelPool]) -> None:
    pool = new_pool(pools, max_models=3, keep_alive=-1)
    threads = [
        threading.Thread(target=pool.load, args=(f"test:{n}", loader(cm, f"test/{n}", delay=0.3))) for n in "abc"
    ]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - start < 0.85  # one per-key lock each, not one lock for all
    assert sorted(pool.keys()) == ["test:a", "test:b", "test:c"]


def test_a_failing_loader_adds_nothing_and_the_next_call_retries(cm: CacheManager, pools: list[ModelPool]) -> None:
    pool = new_pool(pools, max_models=2, keep_alive=-1)

    def broken() -> LoadedModel:
        raise OSError("weights unreadable")

    with pytest.raises(OSError, match="weights unreadable"):
        pool.load("test:a", broken)
    assert "test:a" not in pool and len(pool) == 0
    assert pool.load("test:a", loader(cm, "test/a")).loaded
    with pytest.raises(TypeError, match="not a LoadedModel"):
        pool.load("test:b", lambda: "nope")  # type: ignore[arg-type,return-value]


def test_a_failing_check_runs_before_room_is_made_and_unloads_nothing(cm: CacheManager, pools: list[ModelPool]) -> None:
    """Issue 19 item 3: with one model allowed, a load refused by its check (a truncated file)
    must not push out the model already loaded, nor hold a lease of its own."""
    pool = new_pool(pools, max_models=1, keep_alive=-1)
    good = pool.load("test:a", loader(cm, "test/a"))
    calls: list[str] = []

    def truncated() -> None:
        raise provender.ModelNotFoundError("test/b", "weights.bin is incomplete")

    for attempt in (pool.load, pool.use):
        with pytest.raises(provender.ModelNotFoundError, match="incomplete"):
            if attempt is pool.load:
                pool.load("test:b", loader(cm, "test/b", calls), check=truncated)
            else:
                with pool.use("test:b", loader(cm, "test/b", calls), check=truncated):
                    pass
    assert calls == [] and pool.keys() == ["test:a"] and good.loaded
    assert cm.in_use("test/a") and not cm.in_use("test/b")
    checks: list[str] = []
    pool.load("test:b", loader(cm, "test/b", calls), check=lambda: checks.append("b"))
    assert checks == ["b"] and calls == ["test/b"] and pool.keys() == ["test:b"] and not good.loaded
    pool.load("test:b", loader(cm, "test/b", calls), check=lambda: checks.append("again"))
    assert checks == ["b"]  # a loaded model is not checked again


def test_a_load_that_fails_past_its_check_reloads_what_it_pushed_out(cm: CacheManager, pools: list[ModelPool]) -> None:
    """Issue 19 item 3, for failures no check can see (a config that does not fit the weights):
    room was made, the load failed, and the model pushed out comes back from its own files."""
    pool = new_pool(pools, max_models=1, keep_alive=-1)
    calls: list[str] = []
    first = loader(cm, "test/a", calls)

    def load_a() -> LoadedModel:
        item = first()
        item.reload = first  # as PooledProvider sets it: the same files again, no download
        return item

    good = pool.load("test:a", load_a)

    def unknown_architecture() -> LoadedModel:
        calls.append("test/b")
        raise ValueError("model type 'nonsense' is not supported")

    with pytest.raises(ValueError, match="nonsense"):
        pool.load("test:b", unknown_architecture)
    assert calls == ["test/a", "test/b", "test/a"]  # pushed out to make room, then loaded back
    assert not good.loaded and pool.keys() == ["test:a"] and pool.peek("test:a") is not good
    assert cm.in_use("test/a") and not cm.in_use("test/b")
    # a model that cannot reload (no `reload`) stays out; the failed load's error is what is raised
    pool.clear()
    pool.load("test:c", loader(cm, "test/c"))
    with pytest.raises(ValueError, match="nonsense"):
        pool.load("test:b", unknown_architecture)
    assert pool.keys() == [] and not cm.in_use("test/c")


def test_a_keep_alive_no_clock_can_show_is_refused_and_never_breaks_a_listing(
    cm: CacheManager, pools: list[ModelPool]
) -> None:
    """Issue 19 item 2: a huge keep-alive made `snapshot` (so /api/ps and `provender ps`) raise."""
    pool = new_pool(pools, max_models=2, keep_alive=60)
    pool.load("test:a", loader(cm, "test/a"))
    for bad in (1e300, float("inf"), float("nan"), 10.0**10):
        with pytest.raises(ValueError, match="keep_alive"):
            pool.touch("test:a", bad)
        with pytest.raises(ValueError, match="keep_alive"):
            pool.configure(max_models=2, keep_alive=bad)
        with pytest.raises(ValueError, match="keep_alive"):
            pool.load("test:a", loader(cm, "test/a"), keep_alive=bad)
    assert pool.touch("test:a", -7) and pool.snapshot()[0]["keep_alive"] == -1.0  # every negative is forever
    item = pool.peek("test:a")
    assert item is not None
    item.keep_alive = 1e300  # set by hand, past every check: the listing still answers
    row = pool.snapshot()[0]
    assert row["until"] is None and row["since"]


# -- limits --------------------------------------------------------------------------------


def test_max_models_unloads_the_least_recently_used_and_its_lease(cm: CacheManager, pools: list[ModelPool]) -> None:
    pool = new_pool(pools, max_models=2, keep_alive=-1)
    a = pool.load("test:a", loader(cm, "test/a"))
    b = pool.load("test:b", loader(cm, "test/b"))
    assert pool.get("test:a") is a  # a is now the most recent: b goes next
    seen: list[int] = []

    def load_c() -> LoadedModel:
        seen.append(len(pool))  # room was made before this load started
        return loader(cm, "test/c")()

    pool.load("test:c", load_c)
    assert seen == [1]
    assert pool.keys() == ["test:a", "test:c"]
    assert not b.loaded and b.lease is None and a.loaded
    assert not cm.in_use("test/b") and cm.in_use("test/a") and cm.in_use("test/c")


def test_keep_alive_unloads_idle_models_unasked(cm: CacheManager, pools: list[ModelPool]) -> None:
    pool = new_pool(pools, max_models=2, keep_alive=0.3)
    item = pool.load("test:a", loader(cm, "test/a"))
    start = time.monotonic()
    wait_until(lambda: "test:a" not in pool)
    assert 0.25 <= time.monotonic() - start < 3.0
    assert not item.loaded and not cm.in_use("test/a")


def test_touch_sets_a_per_model_keep_alive(cm: CacheManager, pools: list[ModelPool]) -> None:
    pool = new_pool(pools, max_models=3, keep_alive=-1)  # the pool keeps models forever
    pool.load("test:a", loader(cm, "test/a"))
    pool.load("test:b", loader(cm, "test/b"), keep_alive=0.2)  # Ollama's per-request keep_alive
    wait_until(lambda: "test:b" not in pool)
    assert "test:a" in pool and cm.in_use("test/a") and not cm.in_use("test/b")
    assert pool.touch("test:a", 0) is True  # 0: unload as soon as idle
    wait_until(lambda: "test:a" not in pool, timeout=1.0)
    assert pool.touch("test:a") is False


def test_a_model_in_use_is_not_unloaded_and_idle_time_counts_from_release(
    cm: CacheManager, pools: list[ModelPool]
) -> None:
    pool = new_pool(pools, max_models=2, keep_alive=0.3)
    item = pool.load("test:a", loader(cm, "test/a"))
    released = threading.Event()

    def generate() -> None:
        with item.lock:  # a generation longer than the keep-alive
            time.sleep(0.8)
        released.set()

    t = threading.Thread(target=generate)
    t.start()
    time.sleep(0.6)
    assert "test:a" in pool and item.loaded  # past its keep-alive, but busy
    t.join()
    released.wait()
    time.sleep(0.1)
    assert "test:a" in pool  # idle only since the release, not since the start
    # the reaper takes the model out of the pool, then frees its lease: wait for both (under
    # pytest -n 2 the test could look between the two)
    gone_after = wait_until(lambda: "test:a" not in pool and not cm.in_use("test/a"))
    assert gone_after < 2.0


def test_unloading_a_busy_model_waits_for_its_user_without_blocking(cm: CacheManager, pools: list[ModelPool]) -> None:
    pool = new_pool(pools, max_models=2, keep_alive=-1)
    item = pool.load("test:a", loader(cm, "test/a"))
    item.lock.acquire()
    holder_done = threading.Event()
    result: list[bool] = []

    def other_thread() -> None:
        start = time.monotonic()
        result.append(pool.unload("test:a"))
        result.append(time.monotonic() - start < 0.2)
        holder_done.set()

    threading.Thread(target=other_thread).start()
    holder_done.wait(5)
    assert result == [True, True]
    assert "test:a" not in pool
    assert item.loaded and cm.in_use("test/a")  # still in use: the lease stays
    item.lock.release()
    wait_until(lambda: not item.loaded)
    assert not cm.in_use("test/a")


def test_use_holds_the_model_between_loading_and_using(cm: CacheManager, pools: list[ModelPool]) -> None:
    pool = new_pool(pools, max_models=2, keep_alive=0)  # keep nothing once idle
    calls: list[str] = []
    with pool.use("test:a", loader(cm, "test/a", calls)) as item:
        time.sleep(0.2)  # the reaper runs meanwhile
        assert item.loaded and "test:a" in pool
    wait_until(lambda: "test:a" not in pool, timeout=1.0)
    with pool.use("test:a", loader(cm, "test/a", calls)) as again:
        assert again.loaded and again is not item
    assert calls == ["test/a", "test/a"]


def test_configure_applies_new_limits_now(cm: CacheManager, pools: list[ModelPool]) -> None:
    pool = new_pool(pools, max_models=3, keep_alive=-1)
    for n in "abc":
        pool.load(f"test:{n}", loader(cm, f"test/{n}"))
    pool.configure(max_models=1, keep_alive=-1)
    assert pool.keys() == ["test:c"] and pool.max_models == 1
    with pytest.raises(ValueError, match="max_models"):
        pool.configure(max_models=0)


def test_limits_come_from_the_settings(monkeypatch: pytest.MonkeyPatch, pools: list[ModelPool]) -> None:
    monkeypatch.setenv("PROVENDER_MEMORY__MAX_MODELS", "5")
    monkeypatch.setenv("PROVENDER_MEMORY__KEEP_ALIVE", "2m")
    pool = new_pool(pools)
    assert (pool.max_models, pool.keep_alive) == (5, 120.0)


# -- unloading and listing ---------------------------------------------------------------


def test_clear_by_provider_and_unload_entry(cm: CacheManager, pools: list[ModelPool]) -> None:
    pool = new_pool(pools, max_models=3, keep_alive=-1)
    pool.load("test:a", loader(cm, "test/a"))
    pool.load("test:b", loader(cm, "test/b"))
    lease = cm.acquire("test/c")
    pool.put(
        "other:c", LoadedModel("test/c", object(), path=str(lease.entry.model_path), lease=lease, provider="other")
    )
    assert pool.clear(provider="other") == ["other:c"] and not cm.in_use("test/c")
    assert pool.unload_entry(cm.get("test/b")) == ["test:b"]
    assert pool.keys() == ["test:a"] and not cm.in_use("test/b")
    assert pool.unload("test:nope") is False


def test_unload_hook_runs_and_a_failing_hook_still_releases_the_lease(cm: CacheManager, pools: list[ModelPool]) -> None:
    pool = new_pool(pools, max_models=2, keep_alive=-1)
    ran: list[str] = []

    def load(name: str, fail: bool) -> LoadedModel:
        item = loader(cm, name)()

        def hook() -> None:
            ran.append(name)
            if fail:
                raise RuntimeError("driver gone")

        item.on_unload = hook
        return item

    pool.load("test:a", lambda: load("test/a", False))
    pool.load("test:b", lambda: load("test/b", True))
    assert sorted(pool.clear()) == ["test:a", "test:b"]
    assert sorted(ran) == ["test/a", "test/b"]
    assert not cm.in_use("test/a") and not cm.in_use("test/b")


def test_snapshot_rows_for_ps(cm: CacheManager, pools: list[ModelPool]) -> None:
    pool = new_pool(pools, max_models=3, keep_alive=60)
    before = datetime.now().astimezone()
    pool.load("test:a", loader(cm, "test/a"))
    pool.load("test:b", loader(cm, "test/b"), keep_alive=-1)
    item_a = pool.peek("test:a")
    assert item_a is not None
    rows = {r["key"]: r for r in pool.snapshot()}
    a, b = rows["test:a"], rows["test:b"]
    assert {"name", "provider", "kind", "since", "until", "path"} <= set(a)
    assert (a["name"], a["provider"], a["kind"], a["busy"]) == ("test/a", "test", "generation", False)
    assert a["path"] == str(cm.get("test/a").model_path)
    since, until = datetime.fromisoformat(a["since"]), datetime.fromisoformat(a["until"])
    assert before.replace(microsecond=0) <= since <= datetime.now().astimezone()
    assert 55 <= (until - since).total_seconds() <= 62
    assert b["until"] is None and b["keep_alive"] == -1
    with item_a.lock:
        busy = {r["key"]: r for r in pool.snapshot()}["test:a"]
    assert busy["busy"] is True and busy["until"] is None


def test_the_process_pool_is_one_and_exported_lazily() -> None:
    assert model_pool() is model_pool() is provender.model_pool()
    code = (
        "import sys, provender; assert 'provender._pool' not in sys.modules; "
        "p = provender.model_pool(); "
        "print(type(p).__name__, 'asyncio' in sys.modules, 'pydantic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["ModelPool", "False", "False"]


# -- the Provider contract's new methods -----------------------------------------------


class Minimal(Provider):
    name = "minimal"

    def chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, **options: Any) -> str:
        return f"{len(messages)} messages, {len(tools or [])} tools"


def test_provider_defaults() -> None:
    provider = Minimal("m")
    messages = [{"role": "user", "content": "hi"}]
    assert list(provider.stream_chat(messages, tools=[{"type": "function"}])) == ["1 messages, 1 tools"]
    for call in (provider.dimension, provider.unload, lambda: provider.count_tokens("x")):
        with pytest.raises(UnsupportedError, match="minimal"):
            call()

    async def run() -> tuple[str, list[str]]:
        return await provider.achat(messages), [c async for c in provider.astream_chat(messages)]

    assert asyncio.run(run()) == ("1 messages, 0 tools", ["1 messages, 0 tools"])


def test_a_models_prompt_cache_is_listed_and_emptied_when_it_unloads(cm: CacheManager, pools: list[ModelPool]) -> None:
    from provender._prompt_cache import PromptCache

    pool = new_pool(pools, max_models=2, keep_alive=-1)
    prompts = PromptCache(1000, nbytes=len, can_trim=lambda s: False, trim=lambda s, n: s, copy=list)
    base = loader(cm, "test/a")

    def load() -> LoadedModel:
        item = base()
        item.prompt_cache = prompts
        return item

    pool.load("a", load)
    pool.load("b", loader(cm, "test/b"))
    assert prompts.store([1, 2, 3], [0] * 40)
    rows = {row["key"]: row for row in pool.snapshot()}
    assert (rows["a"]["prompt_cache_bytes"], rows["a"]["prompt_cache_entries"]) == (40, 1)
    assert (rows["b"]["prompt_cache_bytes"], rows["b"]["prompt_cache_entries"]) == (None, None)
    pool.unload("a")
    assert len(prompts) == 0 and prompts.nbytes == 0
