"""Worker processes for the multi-process and crash tests: ``python workers.py MODE ARGS...``."""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

from provender import CacheManager, EntryInUseError, EntryNotFoundError


class TimedLock:
    """Wraps the cache's file lock to measure how long each acquisition waited."""

    def __init__(self, lock) -> None:  # type: ignore[no-untyped-def]
        self.lock = lock
        self.worst = 0.0
        self.total = 0.0
        self.count = 0

    def __enter__(self):  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        self.lock.acquire()
        waited = time.perf_counter() - start
        self.worst = max(self.worst, waited)
        self.total += waited
        self.count += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def hammer(cache_dir: str, max_size: int, seed: int, seconds: float, workdir: str) -> None:
    """A random mix of adds, lookups, pins, leases, removals and prunes; prints what it counted.

    Besides shared keys k0..k11, each worker pins and leases keys of its own, and checks
    after every operation that nothing it pinned or holds has been evicted.
    """
    rng = random.Random(seed)
    cm = CacheManager(cache_dir, max_size=max_size)
    timed = TimedLock(cm._store.lock)
    cm._store.lock = timed  # type: ignore[assignment]  # every part takes the lock from the store
    counts = {
        "lookups": 0,
        "hits": 0,
        "misses": 0,
        "adds": 0,
        "removes": 0,
        "prunes": 0,
        "ops": 0,
        "refused": 0,
        "violations": 0,
    }
    src_dir = Path(workdir) / f"w{seed}"
    src_dir.mkdir(parents=True, exist_ok=True)
    leases = []
    my_pins: set[str] = set()
    start_time = time.monotonic()
    deadline = start_time + seconds
    while time.monotonic() < deadline:
        key = f"k{rng.randrange(12)}"
        op = rng.random()
        counts["ops"] += 1
        if op < 0.35:
            src = src_dir / f"{counts['ops']}.bin"
            src.write_bytes(os.urandom(rng.randrange(100, 3000)))
            try:
                cm.cache_model(src, key, link_mode=rng.choice(["auto", "copy", "move"]))
                counts["adds"] += 1
            except EntryInUseError:  # replacing a pinned or leased entry is refused...
                assert src.exists(), "a refused move lost the caller's file"  # ...and loses nothing
                counts["refused"] += 1
        elif op < 0.75:
            counts["lookups"] += 1
            counts["hits" if cm.get_cached_model(key) is not None else "misses"] += 1
        elif op < 0.82:
            try:
                cm.remove(key)
                counts["removes"] += 1
            except (EntryInUseError, EntryNotFoundError):
                pass
        elif op < 0.88:  # pins on this worker's own keys, so only it unpins them
            own = f"p{seed}-{rng.randrange(3)}"
            if own in my_pins and rng.random() < 0.5:
                cm.unpin(own)
                my_pins.discard(own)
            elif own not in my_pins:
                src = src_dir / f"pin{counts['ops']}.bin"
                src.write_bytes(os.urandom(500))
                cm.cache_model(src, own, pin=True)  # atomically: no one can evict it before the pin
                my_pins.add(own)
        elif op < 0.94:
            try:
                leases.append(cm.acquire(key))
                counts["hits"] += 1  # acquiring marks the entry used: a hit
            except EntryNotFoundError:
                counts["misses"] += 1  # ...and a failed acquire is a miss
            if len(leases) > 2:
                leases.pop(0).release()
        else:
            cm.cleanup_old_models()
            counts["prunes"] += 1
        for lease in leases:  # nothing this process holds may vanish
            if not lease.entry.model_path.exists():
                counts["violations"] += 1
        for own in my_pins:
            if cm.find(own) is None:
                counts["violations"] += 1
    for lease in leases:
        lease.release()
    for own in my_pins:
        cm.unpin(own)
    counts["seconds"] = time.monotonic() - start_time  # type: ignore[assignment]
    counts["lock_worst_s"] = timed.worst  # type: ignore[assignment]
    counts["lock_waits"] = timed.count
    counts["lock_total_s"] = timed.total  # type: ignore[assignment]
    print(json.dumps(counts), flush=True)


def stage_forever(cache_dir: str, src: str) -> None:
    """Store copies of a directory under new keys until killed."""
    cm = CacheManager(cache_dir, max_size=10**12)
    i = 0
    print("started", flush=True)
    while True:
        cm.cache_model(src, f"crash{i % 4}", link_mode="copy")
        i += 1


def evict_forever(cache_dir: str, src: str) -> None:
    """Add entries to a small cache so that every add evicts, until killed."""
    cm = CacheManager(cache_dir, max_size=3 * 200_000)
    i = 0
    print("started", flush=True)
    while True:
        cm.cache_model(src, f"ev{i}", link_mode="copy")
        cm.get_cached_model(f"ev{max(i - 1, 0)}")
        i += 1


def pull(cache_dir: str, repo_id: str, endpoint: str) -> None:
    print("started", flush=True)
    CacheManager(cache_dir, max_size=10**12).fetch(repo_id, progress=False, endpoint=endpoint)
    print("done", flush=True)


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "hammer":
        hammer(args[0], int(args[1]), int(args[2]), float(args[3]), args[4])
    elif mode == "stage":
        stage_forever(args[0], args[1])
    elif mode == "evict":
        evict_forever(args[0], args[1])
    elif mode == "pull":
        pull(args[0], args[1], args[2])
    else:
        raise SystemExit(f"unknown mode {mode}")
