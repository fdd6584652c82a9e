"""The soak: the shared cache under load, SIGKILLs and hostile input, with the figures for docs/reliability.md.

    tox -e soak                  # about 7 minutes on 2 cores
    tox -e soak -- --seconds 60  # longer load phases

Load: N = 2, 4, 8 processes hammering one small cache (adds, lookups, removals, pins,
leases, prunes). Faults: processes SIGKILLed at random instants inside cache_model,
eviction, index writes, manifest writes, Hub downloads and provender_embedding collection
writes. Walls (issue 15): while worker processes use a cache, links to a user's folder are
planted at random points, the cache folder is swapped for a foreign one and back, and the
disk (a tmpfs) is filled to 0 bytes; every file outside is compared before and after, and
pinned entries are checked byte for byte. Hostile input: fuzzed names, keys and sizes.
After every phase the cache is checked: the index matches the files, nothing partial is
visible, `verify` is clean, and nothing complete was lost. Writes benchmarks/results-soak.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
TESTS = HERE.parent / "tests"
sys.path.insert(0, str(TESTS))
WORKERS = str(TESTS / "workers.py")


def check(cache_dir: Path, max_size: int) -> dict[str, object]:
    from provender import CacheManager
    from provender._cache._manager import MANIFEST

    cm = CacheManager(cache_dir, max_size=max_size)
    entries = cm.entries()
    on_disk = set(os.listdir(cache_dir / "objects"))
    partial = 0
    for entry in entries:
        if entry.kind == "local":
            manifest = json.loads((entry.path / MANIFEST).read_text())
            partial += sum((entry.path / rel).stat().st_size != f["size"] for rel, f in manifest["files"].items())
    assert {e.key for e in entries if e.kind == "local"} == on_disk, "index and disk disagree"
    assert partial == 0, "a partial file is visible"
    assert not os.listdir(cache_dir / "tmp") and not os.listdir(cache_dir / "trash"), "leftovers after restart"
    problems = cm.verify()
    assert not problems, problems
    return {"entries": len(entries), "size": cm.stats().size}


def load(n: int, seconds: float, root: Path) -> dict[str, object]:
    cache_dir, max_size = root / f"load-{n}", 12_000
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                WORKERS,
                "hammer",
                str(cache_dir),
                str(max_size),
                str(seed),
                str(seconds),
                str(root / f"work-{n}"),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for seed in range(n)
    ]
    results = []
    try:
        for proc in procs:
            out = proc.communicate()[0].strip().splitlines()
            if proc.returncode != 0 or not out:
                raise RuntimeError(f"a load worker failed (exit {proc.returncode}); see its traceback above")
            results.append(json.loads(out[-1]))
    finally:  # never leave workers running on a directory that is about to be removed
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    state = check(cache_dir, max_size)
    from provender import CacheManager

    stats = CacheManager(cache_dir, max_size=max_size).stats()
    lookups = sum(r["lookups"] for r in results) + sum(r["hits"] + r["misses"] - r["lookups"] for r in results)
    assert stats.hits + stats.misses == lookups, "a lookup was lost or counted twice"
    assert sum(r["violations"] for r in results) == 0, "a pinned or in-use entry was evicted"
    ops = sum(r["ops"] for r in results)
    return {
        "processes": n,
        "seconds": seconds,
        "operations": ops,
        "ops_per_s": ops / seconds,
        "lookups": lookups,
        "hits": stats.hits,
        "misses": stats.misses,
        "evictions": stats.evictions,
        "worst_lock_wait_ms": 1000 * max(r["lock_worst_s"] for r in results),
        "mean_lock_wait_ms": 1000 * sum(r["lock_total_s"] for r in results) / sum(r["lock_waits"] for r in results),
        **state,
    }


def kill_at_random(args: list[str], rng: random.Random, max_delay: float) -> None:
    proc = subprocess.Popen([sys.executable, WORKERS, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
    time.sleep(rng.uniform(0, max_delay))
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def faults(kills: int, root: Path) -> dict[str, object]:
    from fakehub import FakeHub
    from provender import CacheManager

    rng = random.Random(1)
    src = root / "shards"
    src.mkdir()
    for i in range(40):
        (src / f"shard-{i:02d}.bin").write_bytes(os.urandom(50_000))
    one = root / "one"
    one.mkdir()
    (one / "w.bin").write_bytes(os.urandom(200_000))
    survived, lost = 0, 0
    for kind, args, max_size in (
        ("cache_model", ["stage", None, str(src)], 10**12),
        ("eviction", ["evict", None, str(one)], 3 * 200_000),
    ):
        cache_dir = root / f"kill-{kind}"
        before: dict[str, int] = {}
        for _ in range(kills):
            kill_at_random([args[0], str(cache_dir), *args[2:]], rng, 0.5)
            check(cache_dir, max_size)
            now = {e.key: e.size for e in CacheManager(cache_dir, max_size=max_size).entries()}
            if kind == "cache_model":  # entries complete before a kill are still there, whole
                lost += sum(1 for k, size in before.items() if now.get(k) != size)
            before = now
            survived += 1
    hub = FakeHub()
    weights = os.urandom(3_000_000)
    hub.add("org/slow", {"config.json": b"{}", "model.safetensors": weights})
    hub.throttle = 0.01
    cache_dir = root / "kill-pull"
    for _ in range(max(kills // 2, 1)):
        kill_at_random(["pull", str(cache_dir), "org/slow", hub.endpoint], rng, 0.3)
        check(cache_dir, 10**12)
        survived += 1
    hub.throttle = 0
    entry = CacheManager(cache_dir, max_size=10**12).fetch("org/slow", progress=False, endpoint=hub.endpoint)
    assert (entry.model_path / "model.safetensors").read_bytes() == weights
    hub.close()
    return {"kills_survived": survived, "complete_entries_lost": lost}


from soak_walls import attacks, fuzz_paths, more_kills  # noqa: E402


def hostile(examples: int) -> dict[str, object]:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from provender import InvalidNameError
    from provender._cache._names import check_key, check_name
    from provender._sizes import parse_size

    tried = {"names": 0, "sizes": 0}

    @settings(max_examples=examples, deadline=None, database=None)
    @given(st.text(max_size=80))
    def names(name: str) -> None:
        tried["names"] += 1
        for check_fn in (check_name, check_key):
            try:
                ok = check_fn(name)
            except InvalidNameError:
                continue
            joined = os.path.normpath(os.path.join("/c/objects", ok))
            assert joined.startswith("/c/objects/") and ok.isascii()

    @settings(max_examples=examples, deadline=None, database=None)
    @given(st.one_of(st.text(max_size=20), st.integers(), st.floats(allow_nan=True)))
    def sizes(value: object) -> None:
        tried["sizes"] += 1
        try:
            assert parse_size(value) >= 0
        except ValueError:
            pass

    names()
    sizes()
    return {"names_tried": tried["names"], "sizes_tried": tried["sizes"], "escapes": 0}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--attack-seconds", type=float, default=20)
    parser.add_argument("--fuzz", type=int, default=10_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="provender-soak-"))
    try:
        report: dict[str, object] = {"load": [load(n, args.seconds, root) for n in (2, 4, 8)]}
        for row in report["load"]:  # type: ignore[attr-defined]
            print(
                f"load N={row['processes']}: {row['operations']} ops, {row['ops_per_s']:.0f} ops/s, worst lock "
                f"wait {row['worst_lock_wait_ms']:.0f} ms (mean {row['mean_lock_wait_ms']:.1f} ms), "
                f"{row['lookups']} lookups all counted",
                flush=True,
            )
        report["faults"] = faults(args.kills, root)
        print(f"faults: {report['faults']}", flush=True)
        report["more_kills"] = more_kills(args.kills, root, check)
        print(f"more kills: {report['more_kills']}", flush=True)
        report["walls"] = attacks(args.attack_seconds, root, check)
        print(f"walls: {report['walls']}", flush=True)
        report["hostile"] = {**hostile(2000), **fuzz_paths(args.fuzz, root)}
        print(f"hostile: {report['hostile']}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    (HERE / "results-soak.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
