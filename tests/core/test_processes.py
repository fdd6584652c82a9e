"""Many real processes on one cache, and processes killed with SIGKILL at random instants."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fakehub import FakeHub
from helpers import TESTS
from provender import CacheManager
from provender._cache._manager import MANIFEST

WORKERS = str(TESTS / "workers.py")


def assert_consistent(cache_dir: Path, max_size: int | None = None) -> CacheManager:
    """The index matches the files exactly, nothing partial is visible, verify is clean."""
    cm = CacheManager(cache_dir, max_size=max_size or 10**12)
    entries = cm.entries()
    on_disk = set(os.listdir(cache_dir / "objects"))
    assert {e.key for e in entries if e.kind == "local"} == on_disk
    for entry in entries:
        manifest = json.loads((entry.path / MANIFEST).read_text()) if entry.kind == "local" else None
        if manifest:
            for rel, info in manifest["files"].items():
                assert (entry.path / rel).stat().st_size == info["size"], f"partial file in {entry.name}"
            assert entry.size == sum(f["size"] for f in manifest["files"].values())
    assert os.listdir(cache_dir / "tmp") == [] and os.listdir(cache_dir / "trash") == []
    assert cm.verify() == []
    return cm


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 4, 8])
def test_processes_hammering_one_cache(cache_dir: Path, tmp_path: Path, n: int) -> None:
    max_size = 12_000
    CacheManager(cache_dir, max_size=max_size)
    procs = [
        subprocess.Popen(
            [sys.executable, WORKERS, "hammer", str(cache_dir), str(max_size), str(seed), "3", str(tmp_path / "work")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(n)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    cm = assert_consistent(cache_dir, max_size)
    stats = cm.stats()
    assert sum(r["violations"] for r in results) == 0  # nothing pinned or in use was evicted
    # no lost update: every lookup any process made is counted exactly once
    assert stats.hits == sum(r["hits"] for r in results)
    assert stats.misses == sum(r["misses"] for r in results)
    assert sum(r["adds"] for r in results) > 10 and sum(r["lookups"] for r in results) > 10
    # at rest the cache fits: only pins can hold it over (plus the newest entry, never evicted by its own add)
    pinned = sum(e.size for e in cm.entries() if e.pinned)
    assert stats.size <= max(max_size, pinned + 3000), stats


def _kill_at_random(args: list[str], rng: random.Random, max_delay: float) -> None:
    proc = subprocess.Popen([sys.executable, WORKERS, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "started", proc.stderr
    time.sleep(rng.uniform(0, max_delay))
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.slow
def test_sigkill_during_cache_model_leaves_nothing_partial(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    src = make_files("big", {f"shard-{i:03d}.bin": 40_000 for i in range(60)})
    rng = random.Random(7)
    CacheManager(cache_dir, max_size=10**12)
    complete_before: dict[str, int] = {}
    for _ in range(6):
        _kill_at_random(["stage", str(cache_dir), str(src)], rng, 0.4)
        cm = assert_consistent(cache_dir)
        now = {e.key: e.size for e in cm.entries()}
        # nothing complete was lost: what was there before is still there, whole
        for key, size in complete_before.items():
            assert now.get(key) == size
        complete_before = now
    assert complete_before, "no run got far enough to commit an entry; the test proved nothing"


@pytest.mark.slow
def test_sigkill_during_eviction_and_index_writes(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    src = make_files("e", {"w.bin": 200_000})
    rng = random.Random(11)
    for _ in range(6):
        _kill_at_random(["evict", str(cache_dir), str(src)], rng, 0.5)
        cm = assert_consistent(cache_dir, 3 * 200_000)
        assert cm.stats().size <= 3 * 200_000 + 200_000  # at most the one being added over


@pytest.mark.slow
def test_sigkill_during_hub_download_then_resume(cache_dir: Path, fake_hub: FakeHub) -> None:
    weights = os.urandom(2_000_000)
    fake_hub.add("org/slow", {"config.json": b"{}", "model.safetensors": weights})
    fake_hub.throttle = 0.01  # ~6 MB/s: the kill lands mid-file
    CacheManager(cache_dir, max_size=10**12)
    _kill_at_random(["pull", str(cache_dir), "org/slow", fake_hub.endpoint], random.Random(3), 0.15)
    cm = assert_consistent(cache_dir)
    assert cm.find("org/slow") is None  # a partial download is not an entry
    fake_hub.throttle = 0
    entry = cm.fetch("org/slow", progress=False, endpoint=fake_hub.endpoint)
    assert (entry.model_path / "model.safetensors").read_bytes() == weights
    assert cm.verify() == [] and cm.find("org/slow") is not None


def test_a_busy_index_is_waited_for_never_rebuilt(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10**6)
    cm.cache_model(make_files("a", {"w": 10}), "a")
    cm.get_cached_model("a")
    cm._index.close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
            "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); time.sleep(1.5); c.execute('COMMIT')",
            str(cache_dir / "index.db"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    again = CacheManager(cache_dir, max_size=10**6)  # must wait for the lock, not call the index corrupt
    assert again.get_cached_model("a") is not None
    holder.wait()
    assert not list(cache_dir.glob("index.db.corrupt-*")) and again.stats().hits == 2
