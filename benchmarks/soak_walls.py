"""The soak's attacks on the cache's walls (issue 15), its extra SIGKILL points and its path fuzzing.

Run by benchmarks/soak.py; ``python benchmarks/soak_walls.py MODE ...`` is a worker process.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
ME = str(Path(__file__).resolve())
OWNED_DIRS = ("trash", "objects", "pins", "tmp", "locks", "pending", "hub")


def tree_state(root: Path) -> dict[str, str]:
    """Every file, link and folder under `root` with its content hash or link target."""
    seen: dict[str, str] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            if path.is_symlink():
                seen[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                seen[rel] = "dir"
            else:
                seen[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return seen


def touched(before: dict[str, str], after: dict[str, str]) -> int:
    """How many paths were added, changed or removed (printed, to find out how)."""
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    for k in changed:
        print(f"TOUCHED OUTSIDE: {k}: {before.get(k)} -> {after.get(k)}", file=sys.stderr, flush=True)
    return len(changed)


def user_folder(root: Path) -> Path:
    """A user's folder full of things a careless cache would delete (Gemfile beside Gemfile.lock...)."""
    root.mkdir(parents=True)
    for rel in ("Gemfile", "Gemfile.lock", "Pipfile", "Pipfile.lock", "a" * 64, "notes.txt", "sub/deep.txt"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"user data {rel}")
    for name in OWNED_DIRS:  # a foreign folder that even looks like a cache inside
        (root / "foreign" / name).mkdir(parents=True)
        (root / "foreign" / name / "keep.txt").write_text("mine")
    (root / "foreign" / "index.db").write_bytes(b"SQLite format 3\x00" + b"\0" * 100)
    return root


def mount_tmpfs(path: Path, size: str) -> str | None:
    """Mount a tmpfs at `path`; None on success, else why not."""
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
    )
    return None if proc.returncode == 0 else (proc.stderr.strip() or "mount refused")


# -- workers -------------------------------------------------------------------------------


def worker_attacked(cache_dir: str, seed: int, seconds: float, work: str) -> None:
    """Random cache operations that expect refusals (links, swaps, a full disk) and count them."""
    from provender import CacheError, CacheManager

    rng = random.Random(seed)
    counts = {"ops": 0, "refused": 0, "raw_errors": 0}
    reasons: dict[str, int] = {}
    src_dir = Path(work) / f"a{seed}"
    src_dir.mkdir(parents=True, exist_ok=True)
    cm = None
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        counts["ops"] += 1
        key = f"k{rng.randrange(8)}"
        try:
            if cm is None:
                cm = CacheManager(cache_dir, max_size=400_000)
            op = rng.random()
            if op < 0.3:
                src = src_dir / f"{counts['ops']}.bin"
                src.write_bytes(os.urandom(rng.randrange(1000, 30_000)))
                cm.cache_model(src, key, link_mode=rng.choice(["auto", "copy", "move"]))
            elif op < 0.55:
                cm.get_cached_model(key)
            elif op < 0.65:
                with cm.acquire(key):
                    pass
            elif op < 0.75:
                cm.remove(key)
            elif op < 0.85:
                cm.cleanup_old_models()
            elif op < 0.92:
                cm.verify(fix=True)
            else:
                cm.entries()
        except (CacheError, OSError) as exc:  # OSError: a folder renamed away under a running call
            counts["refused" if isinstance(exc, CacheError) else "raw_errors"] += 1
            reasons[type(exc).__name__ + ": " + str(exc)[:90]] = (
                reasons.get(type(exc).__name__ + ": " + str(exc)[:90], 0) + 1
            )
            if rng.random() < 0.3:
                cm = None  # start again, as a new process would
        time.sleep(0.002)
    if os.environ.get("SOAK_DEBUG"):
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:8]:
            print(f"REASON {n}: {reason}", file=sys.stderr, flush=True)
    print(json.dumps(counts), flush=True)


def worker_lookups(cache_dir: str) -> None:
    """Index writes: lookups (hit counts, last-used times) and pins, until killed."""
    from provender import CacheManager

    cm = CacheManager(cache_dir, max_size=10**12)
    print("started", flush=True)
    while True:
        for key in ("p0", "p1", "p2", "nope"):
            cm.get_cached_model(key)
        cm.pin("p0")
        cm.unpin("p0")


def worker_manifests(cache_dir: str, src: str) -> None:
    """Manifest writes: new entries, each verified at once (verify records every file's sha256)."""
    from provender import CacheManager

    cm = CacheManager(cache_dir, max_size=10**12)
    print("started", flush=True)
    i = 0
    while True:
        cm.cache_model(src, f"m{i % 3}", link_mode="copy")
        cm.verify()
        i += 1


def worker_collection(db: str) -> None:
    """provender_embedding collection writes (a deterministic hashing provider), until killed."""
    import numpy as np

    from provender import Provider
    from provender_embedding import Collection, Embedder

    class HashProvider(Provider):
        name = "hash"

        def embed(self, texts: list[str], **options: Any) -> np.ndarray:
            rows = [np.frombuffer(hashlib.sha256(t.encode()).digest(), dtype=np.uint8)[:16] for t in texts]
            return np.asarray(rows, dtype=np.float32) + 1.0

    col = Collection("soak", embedder=Embedder(HashProvider("hash-16")), db_path=db)
    print("started", flush=True)
    i = 0
    while True:
        col.add_many([(f"id{i}-{j}", f"text {i} {j} " * 20, {"i": i}) for j in range(8)], batch_size=8)
        i += 1


# -- phases --------------------------------------------------------------------------------


def _kill_at_random(args: list[str], rng: random.Random, max_delay: float) -> None:
    proc = subprocess.Popen([sys.executable, ME, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
    time.sleep(rng.uniform(0, max_delay))
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def more_kills(kills: int, root: Path, check: Callable[[Path, int], dict[str, object]]) -> dict[str, object]:
    """SIGKILLs inside index writes, manifest writes and embedding collection writes."""
    from provender import CacheManager

    rng = random.Random(7)
    src = root / "mk-src"
    src.mkdir()
    for i in range(20):
        (src / f"f{i}.bin").write_bytes(os.urandom(20_000))
    counts: dict[str, int] = {}
    lost = 0
    for kind, args in (("index_write", ["lookups"]), ("manifest_write", ["manifests", str(src)])):
        cache_dir = root / f"mk-{kind}"
        cm = CacheManager(cache_dir, max_size=10**12)
        precious = {}
        for key in ("p0", "p1", "p2"):
            cm.cache_model(src, key, link_mode="copy", pin=True)
            precious[key] = tree_state(cm.get(key).path / "")  # manifest included: it may gain checksums
        for _ in range(kills):
            _kill_at_random([args[0], str(cache_dir), *args[1:]], rng, 0.4)
            check(cache_dir, 10**12)
            cm = CacheManager(cache_dir, max_size=10**12)
            for key, before in precious.items():
                entry = cm.find(key)
                after = tree_state(entry.path) if entry else {}
                same = {k: v for k, v in after.items() if not k.startswith(".provender-entry")}
                if entry is None or same != {k: v for k, v in before.items() if not k.startswith(".provender-entry")}:
                    lost += 1
        counts[kind] = kills
    db = root / "mk-collection" / "embeddings.db"
    db.parent.mkdir()
    last = 0
    bad = 0
    for _ in range(kills):
        _kill_at_random(["collection", str(db)], rng, 0.6)
        con = sqlite3.connect(db)
        ok = con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        count = con.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        con.close()
        if not ok or count < last or count % 8:  # torn, lost or a partial batch
            bad += 1
        last = count
    counts["collection_write"] = kills
    return {
        "kills": counts,
        "kills_total": sum(counts.values()),
        "complete_entries_lost": lost,
        "collection_damaged": bad,
    }


def _replace(path: Path, make: Callable[[], None], cache: Path, rng: random.Random) -> None:
    """Run `make` (which creates `path`); a folder a starting worker made there meanwhile is moved aside."""
    for _ in range(20):
        try:
            make()
            return
        except OSError:  # EEXIST / ENOTEMPTY: a new process recreated the folder in the gap
            try:
                os.rmdir(path)
            except OSError:
                os.rename(path, cache / f".extra-{rng.randrange(10**9)}")
    raise RuntimeError(f"could not put {path} in place")


def _plant(rng: random.Random, cache: Path, outside: Path) -> Callable[[], None]:
    """Plant one link somewhere the cache owns; return how to undo it."""
    choice = rng.choice([*OWNED_DIRS, "pin", "lease", "object", "tmpfile", "entryfile"])
    if choice in OWNED_DIRS:
        real, aside = cache / choice, cache / f".aside-{choice}"
        try:
            os.rename(real, aside)
        except OSError:
            return lambda: None
        _replace(real, lambda: real.symlink_to(outside), cache, rng)

        def undo() -> None:
            real.unlink()
            _replace(real, lambda: os.rename(aside, real), cache, rng)

        return undo
    key = f"k{rng.randrange(8)}"
    link = {
        "pin": cache / "pins" / key,
        "lease": cache / "locks" / f"{key}.lease",
        "object": cache / "objects" / f"planted{rng.randrange(100)}",
        "tmpfile": cache / "tmp" / "Gemfile.lock",
        "entryfile": cache / "objects" / key / "planted.bin",
    }[choice]
    target = outside / rng.choice(["Gemfile", "Gemfile.lock", "a" * 64, "notes.txt", "sub"])
    try:
        if os.path.lexists(link):
            return lambda: None
        link.symlink_to(target)
    except OSError:
        return lambda: None

    def undo_link() -> None:
        if os.path.islink(link):
            link.unlink()

    return undo_link


def attacks(seconds: float, root: Path, check: Callable[[Path, int], dict[str, object]]) -> dict[str, object]:
    """Workers use a cache while links are planted, the folder is swapped and the disk fills up."""
    base = root / "walls-fs"
    why_not = mount_tmpfs(base, "48m")
    try:
        return _attacks(seconds, root, base, why_not, check)
    finally:
        if why_not is None:
            subprocess.run(["umount", "-l", str(base)], check=False)


def _attacks(
    seconds: float, root: Path, base: Path, why_not: str | None, check: Callable[[Path, int], dict[str, object]]
) -> dict[str, object]:
    from provender import CacheManager

    rng = random.Random(15)
    outside = user_folder(root / "user")
    cache = base / "cache"
    cm = CacheManager(cache, max_size=400_000)
    precious: dict[str, bytes] = {}
    for i in range(3):
        data = os.urandom(20_000)
        (root / f"precious{i}").write_bytes(data)
        cm.cache_model(root / f"precious{i}", f"precious{i}", link_mode="copy", pin=True)
        precious[f"precious{i}"] = data
    before = tree_state(outside)
    workers = [
        subprocess.Popen(
            [sys.executable, ME, "attacked", str(cache), str(seed), str(seconds), str(root / "walls-work")],
            stdout=subprocess.PIPE,
            text=True,
        )
        for seed in range(4)
    ]
    planted = swaps = fills = 0
    end = time.monotonic() + seconds - 1
    try:
        while time.monotonic() < end:
            undo = _plant(rng, cache, outside)
            planted += 1
            time.sleep(rng.uniform(0.05, 0.3))
            undo()
            time.sleep(rng.uniform(0.05, 0.3))  # and time to work between attacks
            if rng.random() < 0.08:  # the cache folder swapped for a foreign one, then back
                os.rename(cache, base / "cache.moved")
                while True:
                    try:
                        cache.symlink_to(outside / "foreign")
                        break
                    except FileExistsError:  # a worker started a new, empty cache there meanwhile
                        os.rename(cache, base / f"cache.fresh{swaps}-{rng.randrange(10**6)}")
                time.sleep(0.3)
                cache.unlink()
                os.rename(base / "cache.moved", cache)
                swaps += 1
            if why_not is None and rng.random() < 0.08:  # the disk fills to 0 bytes, then is freed
                filler = base / "filler"
                with open(filler, "wb") as f:
                    try:
                        while True:
                            f.write(b"\0" * (1 << 20))
                            f.flush()
                    except OSError:
                        pass
                time.sleep(0.5)
                filler.unlink()
                fills += 1
        results = [json.loads(w.communicate(timeout=120)[0].strip().splitlines()[-1]) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    outside_touched = touched(before, tree_state(outside))
    state = check(cache, 400_000)
    cm = CacheManager(cache, max_size=400_000)
    lost = sum(1 for key, data in precious.items() if (p := cm.get_cached_model(key)) is None or p.read_bytes() != data)
    # the owned files too, planted with no worker running: index.db and the lock
    other = outside / "other.db"
    sqlite3.connect(other).executescript("CREATE TABLE mine (x); INSERT INTO mine VALUES (1);")
    quiet_before = tree_state(outside)
    refused_files = 0
    for name in (".lock", "index.db", "index.db-wal", "index.db-shm"):
        path = cache / name
        aside = cache / f".aside{name}"
        had = os.path.lexists(path)
        if had:
            os.rename(path, aside)
        path.symlink_to(other)
        try:
            CacheManager(cache, max_size=400_000).entries()
        except Exception as exc:
            refused_files += "symbolic link" in str(exc)
        path.unlink()
        if had:
            os.rename(aside, path)
    outside_touched += touched(quiet_before, tree_state(outside))
    return {
        "seconds": seconds,
        "worker_ops": sum(r["ops"] for r in results),
        "refusals": sum(r["refused"] for r in results),
        "raw_errors": sum(r["raw_errors"] for r in results),
        "links_planted": planted + 4,
        "link_files_refused": refused_files,
        "cache_dir_swaps": swaps,
        "disk_full_events": fills,
        "disk_full": "tmpfs filled to 0 bytes" if why_not is None else f"skipped: {why_not}",
        "files_touched_outside": outside_touched,
        "pinned_entries_lost": lost,
        **state,
    }


def fuzz_paths(n: int, root: Path) -> dict[str, object]:
    """`n` fuzzed names and keys: every accepted one maps inside the cache; a sample goes through real calls."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from provender import CacheError, CacheManager
    from provender._cache._hub import folder_name
    from provender._cache._names import check_key, check_name

    cache = root / "fuzz-cache"
    cm = CacheManager(cache, max_size=10**9)
    outside = user_folder(root / "fuzz-user")
    before = tree_state(outside)
    src = root / "fuzz-src.bin"
    src.write_bytes(b"x" * 100)
    seen = {"tried": 0, "accepted": 0, "escapes": 0, "real_calls": 0}
    base = os.path.normpath(cache)

    def inside(path: Path) -> bool:
        return os.path.normpath(path).startswith(base + os.sep)

    @settings(max_examples=n, deadline=None, database=None)
    @given(st.one_of(st.text(max_size=80), st.from_regex(r"[./\\a-z0-9~-]{0,30}", fullmatch=True)))
    def fuzz(text: str) -> None:
        seen["tried"] += 1
        for check_fn, paths in (
            (check_name, lambda v: [cache / "hub" / folder_name(v)]),
            (check_key, lambda v: [cache / "objects" / v, cache / "pins" / v, cache / "locks" / f"{v}.lease"]),
        ):
            try:
                ok = check_fn(text)
            except CacheError:
                continue
            seen["accepted"] += 1
            seen["escapes"] += sum(not inside(p) for p in paths(ok))
        if seen["tried"] % 25 == 0:  # a sample through the real API
            seen["real_calls"] += 1
            for call in (
                lambda: cm.cache_model(src, text, link_mode="copy"),
                lambda: cm.get_cached_model(text),
                lambda: cm.import_model(src, text, link_mode="copy", replace=True),
                lambda: cm.find(text),
                lambda: cm.remove(text),
            ):
                try:
                    call()
                except (CacheError, TypeError):
                    pass

    fuzz()
    seen["escapes"] += touched(before, tree_state(outside))
    strays = [
        p for p in os.listdir(cache) if p not in (*OWNED_DIRS, ".lock", "index.db", "index.db-wal", "index.db-shm")
    ]
    seen["escapes"] += len([p for p in strays if p not in (".provender-cache", "CACHEDIR.TAG", "repairs.jsonl")])
    return {
        "fuzzed_names_and_keys": seen["tried"],
        "accepted": seen["accepted"],
        "real_calls": seen["real_calls"],
        "path_escapes": seen["escapes"],
    }


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    if mode == "attacked":
        worker_attacked(rest[0], int(rest[1]), float(rest[2]), rest[3])
    elif mode == "lookups":
        worker_lookups(rest[0])
    elif mode == "manifests":
        worker_manifests(rest[0], rest[1])
    elif mode == "collection":
        worker_collection(rest[0])
    else:
        raise SystemExit(f"unknown mode {mode}")
