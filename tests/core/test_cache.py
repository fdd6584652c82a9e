"""CacheManager on real files and real locks: the seed API, eviction, pins, leases, stats, verify."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fakehub import FakeHub
from provender import (
    CacheManager,
    EntryExistsError,
    EntryInUseError,
    EntryNotFoundError,
    EntryTooLargeError,
    InvalidNameError,
    SourceNotFoundError,
)
from provender._cache._manager import MANIFEST


def keys(cm: CacheManager) -> set[str]:
    return {e.key for e in cm.entries()}


def test_seed_api_roundtrip(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    src = make_files("m", {"weights.bin": 300, "config.json": b"{}"})
    cm = CacheManager(cache_dir, max_size=10_000)
    key = CacheManager.generate_cache_key("org/m", "weights.bin", {"rev": 1})
    assert len(key) == 64 and int(key, 16) >= 0
    assert key == CacheManager.generate_cache_key("org/m", "weights.bin", {"rev": 1})
    assert key != CacheManager.generate_cache_key("org/m", "weights.bin", {"rev": 2})
    assert cm.get_cached_model(key) is None
    path = cm.cache_model(src, key)
    assert path.is_dir() and (path / "weights.bin").read_bytes() == (src / "weights.bin").read_bytes()
    assert cm.get_cached_model(key) == path
    # a file entry returns the file itself
    single = make_files("single", {"model.gguf": 100}) / "model.gguf"
    fpath = cm.cache_model(single, "gguf-1")
    assert fpath.name == "model.gguf" and fpath.read_bytes() == single.read_bytes()
    stats = cm.stats()
    assert (stats.hits, stats.misses, stats.entries, stats.size) == (1, 1, 2, 402)


def test_generate_cache_key_ignores_dict_order() -> None:
    a = CacheManager.generate_cache_key("r", "f", {"a": 1, "b": 2})
    assert a == CacheManager.generate_cache_key("r", "f", {"b": 2, "a": 1})
    assert (
        a
        == hashlib.sha256(
            json.dumps(["r", "f", {"a": 1, "b": 2}], sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
    )


def test_lru_eviction_by_bytes(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=1000)
    for name in "abc":
        cm.cache_model(make_files(name, {"w": 300}), name)
    cm.get_cached_model("a")  # a becomes the most recently used: b is now the oldest
    cm.cache_model(make_files("d", {"w": 300}), "d")
    assert keys(cm) == {"a", "c", "d"}
    stats = cm.stats()
    assert stats.evictions == 1 and stats.bytes_evicted == 300 and stats.size == 900


def test_oversized_entry_refused_and_evicts_nothing(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=1000)
    cm.cache_model(make_files("a", {"w": 600}), "a")
    with pytest.raises(EntryTooLargeError) as info:
        cm.cache_model(make_files("big", {"w": 1001}), "big")
    assert info.value.size == 1001 and info.value.max_size == 1000 and "'big'" in str(info.value)
    assert keys(cm) == {"a"} and cm.stats().evictions == 0
    assert os.listdir(cache_dir / "tmp") == []


def test_new_entry_never_evicted_by_its_own_insertion(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=1000)
    cm.cache_model(make_files("a", {"w": 500}), "a")
    cm.pin("a")
    cm.cache_model(make_files("b", {"w": 700}), "b")  # only b could go; it must not
    assert keys(cm) == {"a", "b"}


def test_pinned_and_in_use_entries_survive_eviction(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=1000)
    for name in "abc":
        cm.cache_model(make_files(name, {"w": 300}), name)
    cm.pin("a")
    lease = cm.acquire("b")
    assert cm.in_use("b") and not cm.in_use("c")
    cm.cache_model(make_files("d", {"w": 300}), "d")  # a is pinned, b in use: c goes
    assert keys(cm) == {"a", "b", "d"}
    assert [e.key for e in cm.cleanup_old_models(max_size=0)] == ["d"]
    assert keys(cm) == {"a", "b"}
    lease.release()
    evicted = cm.cleanup_old_models(max_size=0)
    assert [e.key for e in evicted] == ["b"] and keys(cm) == {"a"}
    cm.unpin("a")
    assert [e.key for e in cm.cleanup_old_models(max_size=0)] == ["a"]


def test_in_use_by_another_process(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10_000)
    cm.cache_model(make_files("a", {"w": 100}), "a")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from provender import CacheManager; "
            f"lease = CacheManager({str(cache_dir)!r}, max_size=10000).acquire('a'); print('held', flush=True); "
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(EntryInUseError, match="running process"):
            cm.remove("a")
        assert cm.cleanup_old_models(max_size=0) == [] and keys(cm) == {"a"}
    finally:
        holder.kill()  # a process that dies releases what it held
        holder.wait()
    assert [e.key for e in cm.cleanup_old_models(max_size=0)] == ["a"]


def test_remove_and_pins(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10_000)
    entry = cm.import_model(make_files("m", {"w": 10}), "org/model")
    assert cm.pin("org/model").pinned and cm.stats().pinned == 1
    with pytest.raises(EntryInUseError, match="pinned"):
        cm.remove("org/model")
    cm.unpin(entry.key)
    assert cm.remove("org/model", dry_run=True).key == entry.key and cm.find("org/model") is not None
    cm.remove("org/model")
    assert cm.find("org/model") is None and not entry.path.exists()
    with pytest.raises(EntryNotFoundError):
        cm.remove("org/model")


def test_import_is_zero_copy_and_keeps_source(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    src = make_files("m", {"model.safetensors": 4096, "config.json": b'{"a": 1}'})
    cm = CacheManager(cache_dir, max_size=10**6)
    entry = cm.import_model(src, "org/model")
    cached = entry.model_path / "model.safetensors"
    st_src, st_dst = (src / "model.safetensors").stat(), cached.stat()
    # same filesystem: a hard link (same inode) or a copy-on-write clone; never a second copy of the bytes
    assert st_src.st_ino == st_dst.st_ino or os.stat(cache_dir).st_dev == st_src.st_dev
    assert (src / "model.safetensors").exists() and cached.read_bytes() == (src / "model.safetensors").read_bytes()
    assert entry.size == 4096 + 8 and entry.name == "org/model"
    with pytest.raises(EntryExistsError):
        cm.import_model(src, "org/model")
    assert cm.import_model(src, "org/model", replace=True).key == entry.key
    copy = cm.import_model(src, "org/copy", link_mode="copy")
    assert (copy.model_path / "model.safetensors").stat().st_ino != st_src.st_ino
    moved_src = make_files("moved", {"w": 10})
    cm.import_model(moved_src, "org/moved", link_mode="move")
    assert not moved_src.exists() and cm.get("org/moved").size == 10


@pytest.mark.parametrize(
    "bad",
    [
        "../../etc",
        "/etc/passwd",
        "a/../../b",
        "a\x00b",
        "x" * 300,
        "org/na/me",
        "оrg/model",
        "org\\..\\x",
        "",
        ".",
        "..",
    ],
)
def test_hostile_names_refused(cache_dir: Path, make_files, bad: str) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10_000)
    src = make_files("m", {"w": 10})
    with pytest.raises(InvalidNameError):
        cm.import_model(src, bad)
    with pytest.raises(InvalidNameError):
        cm.cache_model(src, bad)
    assert keys(cm) == set() and os.listdir(cache_dir / "objects") == []


def test_missing_source(cache_dir: Path, tmp_path: Path) -> None:
    cm = CacheManager(cache_dir, max_size=10_000)
    with pytest.raises(SourceNotFoundError):
        cm.import_model(tmp_path / "nope", "org/x")


def test_stats_survive_restart_and_processes(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10_000)
    cm.cache_model(make_files("a", {"w": 10}), "a")
    cm.get_cached_model("a")
    cm.get_cached_model("zzz")
    code = (
        f"from provender import CacheManager; cm = CacheManager({str(cache_dir)!r}, max_size=10000); "
        "cm.get_cached_model('a'); cm.get_cached_model('a'); cm.get_cached_model('nope')"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    stats = CacheManager(cache_dir, max_size=10_000).stats()
    assert (stats.hits, stats.misses, stats.entries) == (3, 2, 1)
    assert CacheManager(cache_dir, max_size=10_000).get("a").hits == 3


def test_last_used_is_tracked_by_the_index(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10_000)
    cm.cache_model(make_files("a", {"w": 10}), "a")
    first = cm.get("a").last_used
    time.sleep(0.01)
    cm.get_cached_model("a")
    assert (cm.get("a").last_used or 0) > (first or 0)


@pytest.mark.parametrize("damage", [b"this is not a database" * 100, b""])
def test_corrupt_index_is_rebuilt_from_disk(cache_dir: Path, make_files, damage: bytes) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10_000)
    cm.import_model(make_files("m", {"w": 100}), "org/model")
    cm.cache_model(make_files("k", {"w": 50}), "k1")
    cm.pin("k1")
    before = {(e.key, e.name, e.size) for e in cm.entries()}
    cm._index.close()
    del cm
    index = cache_dir / "index.db"
    for extra in ("index.db-wal", "index.db-shm"):
        (cache_dir / extra).unlink(missing_ok=True)
    if damage:
        index.write_bytes(damage)
    else:
        with open(index, "r+b") as f:
            f.truncate(100)
    cm2 = CacheManager(cache_dir, max_size=10_000)
    assert {(e.key, e.name, e.size) for e in cm2.entries()} == before
    assert cm2.get("k1").pinned  # pins live on disk, so they survive
    assert cm2.get_cached_model("k1") is not None
    assert list(cache_dir.glob("index.db.corrupt-*"))


def test_vanished_files_drop_from_index(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    import shutil

    cm = CacheManager(cache_dir, max_size=10_000)
    entry = cm.import_model(make_files("m", {"w": 10}), "org/model")
    shutil.rmtree(entry.path)
    assert cm.find("org/model") is None and keys(cm) == set()


def test_verify_local_entries(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10**6)
    entry = cm.import_model(make_files("m", {"w.bin": 1000}), "org/model", link_mode="copy")
    assert cm.verify() == []  # first verify records the checksums
    manifest = json.loads((entry.path / MANIFEST).read_text())
    assert len(manifest["files"]["w.bin"]["sha256"]) == 64
    data = bytearray((entry.path / "w.bin").read_bytes())
    data[500] ^= 0x01
    (entry.path / "w.bin").write_bytes(bytes(data))
    issues = cm.verify()
    assert len(issues) == 1 and "sha256" in issues[0].problem and not issues[0].fixed
    fixed = cm.verify(fix=True)
    assert fixed[0].fixed and cm.find("org/model") is None


def test_hub_repo_written_by_huggingface_hub_is_discovered(cache_dir: Path, fake_hub: FakeHub) -> None:
    from huggingface_hub import scan_cache_dir, snapshot_download

    fake_hub.add("org/tiny", {"config.json": b'{"x": 1}', "model.safetensors": os.urandom(2000)})
    cm = CacheManager(cache_dir, max_size=10**6)
    assert cm.entries() == []
    # another tool (huggingface_hub itself, as `hf download` would) writes into hub/
    snapshot_download("org/tiny", cache_dir=cache_dir / "hub", endpoint=fake_hub.endpoint)
    [entry] = cm.entries()
    assert (entry.name, entry.kind) == ("org/tiny", "hub")
    [repo] = scan_cache_dir(cache_dir / "hub").repos
    assert entry.size == repo.size_on_disk
    assert (entry.model_path / "config.json").read_bytes() == b'{"x": 1}'
    assert cm.find("org/tiny") == entry
    # and files that vanish behind our back leave the index too
    import shutil

    shutil.rmtree(entry.path)
    assert cm.entries() == []


def test_fetch_and_verify_hub_blob(cache_dir: Path, fake_hub: FakeHub) -> None:
    weights = os.urandom(3000)
    fake_hub.add("org/tiny", {"config.json": b"{}", "model.safetensors": weights})
    cm = CacheManager(cache_dir, max_size=10**6)
    entry = cm.fetch("org/tiny", progress=False, endpoint=fake_hub.endpoint)
    assert (entry.model_path / "model.safetensors").read_bytes() == weights
    assert cm.verify() == []
    cm.fetch("org/tiny", progress=False, endpoint=fake_hub.endpoint)
    assert fake_hub.downloads.count("org/tiny/model.safetensors") == 1  # nothing fetched twice
    blob = entry.path / "blobs" / hashlib.sha256(weights).hexdigest()
    data = bytearray(blob.read_bytes())
    data[10] ^= 0xFF
    blob.write_bytes(bytes(data))
    issues = cm.verify()
    assert [i.path for i in issues] == [blob] and "sha256" in issues[0].problem
    assert all(i.fixed for i in cm.verify(fix=True)) and not blob.exists()
    assert cm.verify() == []  # the dangling link went with the blob
    cm.fetch("org/tiny", progress=False, endpoint=fake_hub.endpoint)  # a pull repairs it
    assert (entry.model_path / "model.safetensors").read_bytes() == weights


def test_fetch_refuses_oversized_repo_before_download(cache_dir: Path, fake_hub: FakeHub) -> None:
    fake_hub.add("org/big", {"model.safetensors": os.urandom(5000)})
    cm = CacheManager(cache_dir, max_size=1000)
    with pytest.raises(EntryTooLargeError):
        cm.fetch("org/big", progress=False, endpoint=fake_hub.endpoint)
    assert fake_hub.downloads == [] and cm.entries() == []


def test_fetch_unknown_repo(cache_dir: Path, fake_hub: FakeHub) -> None:
    from provender import ModelNotFoundError

    cm = CacheManager(cache_dir, max_size=1000)
    with pytest.raises(ModelNotFoundError, match="org/nope"):
        cm.fetch("org/nope", progress=False, endpoint=fake_hub.endpoint)


def test_leftovers_of_dead_processes_are_cleaned(cache_dir: Path) -> None:
    cm = CacheManager(cache_dir, max_size=1000)
    (cache_dir / "tmp" / "deadbeef").mkdir()
    (cache_dir / "tmp" / "deadbeef" / "half-written").write_bytes(b"x" * 10)
    (cache_dir / "tmp" / "deadbeef.lock").touch()  # its owner is gone: nobody holds the lock
    (cache_dir / "trash" / "old").mkdir()
    (cache_dir / "objects" / "no-manifest").mkdir()  # not a complete entry
    CacheManager(cache_dir, max_size=1000)
    assert os.listdir(cache_dir / "tmp") == [] and os.listdir(cache_dir / "trash") == []
    assert cm.entries() == [] and os.listdir(cache_dir / "objects") == []


def test_refused_move_gives_the_files_back(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10_000)
    cm.cache_model(make_files("a", {"w": 10}), "a")
    lease = cm.acquire("a")
    src = make_files("new", {"w": 20, "sub/x": 5})
    with pytest.raises(EntryInUseError):
        cm.cache_model(src, "a", link_mode="move")
    assert sorted(p.name for p in src.rglob("*")) == ["sub", "w", "x"] and (src / "w").stat().st_size == 20
    lease.release()
    cm.pin("a")
    single = make_files("f", {"w.bin": 7}) / "w.bin"
    with pytest.raises(EntryInUseError):
        cm.cache_model(single, "a", link_mode="move")
    assert single.stat().st_size == 7 and cm.get("a").size == 10


def test_interrupted_replacement_is_rolled_back(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10_000)
    cm.cache_model(make_files("a", {"w": 10}), "a")
    # the state a replacement killed between its two renames leaves behind
    os.rename(cache_dir / "objects" / "a", cache_dir / "trash" / "a.replaced")
    restarted = CacheManager(cache_dir, max_size=10_000)
    assert restarted.get_cached_model("a") is not None and restarted.get("a").size == 10
    assert os.listdir(cache_dir / "trash") == []


def test_get_cached_model_finds_hub_repo_added_by_another_tool(cache_dir: Path, fake_hub: FakeHub) -> None:
    from huggingface_hub import snapshot_download

    fake_hub.add("org/tiny", {"config.json": b"{}"})
    cm = CacheManager(cache_dir, max_size=10**6)
    key = cm.hub_key("org/tiny")
    assert cm.get_cached_model(key) is None
    snapshot_download("org/tiny", cache_dir=cache_dir / "hub", endpoint=fake_hub.endpoint)
    path = cm.get_cached_model(key)
    assert path is not None and (path / "config.json").read_bytes() == b"{}"


def test_release_evicts_what_the_lease_kept_over_the_limit(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=1000)
    cm.cache_model(make_files("a", {"w": 600}), "a")
    lease = cm.acquire("a")
    cm.cache_model(make_files("b", {"w": 600}), "b")  # a is in use: the cache stays over its limit
    assert keys(cm) == {"a", "b"} and cm.stats().size == 1200
    lease.release()  # at rest again: the limit holds
    assert keys(cm) == {"b"} and cm.stats().size == 600


def test_pin_on_add(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=1000)
    cm.cache_model(make_files("a", {"w": 600}), "a", pin=True)
    cm.cache_model(make_files("b", {"w": 600}), "b")
    assert cm.get("a").pinned and keys(cm) == {"a", "b"}  # a could not be evicted, b is the new one
    assert cm.import_model(make_files("c", {"w": 10}), "org/c", pin=True).pinned


# -- an entry the cache cannot get back is never evicted (issue 19 item 10) ---------------------


def test_an_entry_imported_with_move_survives_a_pull_that_would_evict_it(
    cache_dir: Path, make_files, fake_hub: FakeHub, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10_000, remote=None)
    src = make_files("finetune", {"w.bin": 6000})
    weights = (src / "w.bin").read_bytes()
    cm.import_model(src, "me/finetune", link_mode="move")  # the source is gone: its only copy
    assert not src.exists()
    fake_hub.add("org/tiny-tf", {"config.json": b"{}", "model.safetensors": b"t" * 6000})
    with caplog.at_level("WARNING", logger="provender"):
        got = cm.pull("org/tiny-tf", endpoint=fake_hub.endpoint, progress=False)  # it used to evict me/finetune
    assert got.source == "hub" and cm.find("org/tiny-tf") is not None
    assert (cm.get("me/finetune").path / "w.bin").read_bytes() == weights and cm.stats().evictions == 0
    (said,) = [r.getMessage() for r in caplog.records if "over its limit" in r.getMessage()]
    assert "me/finetune (the cache holds its only copy (imported with --move))" in said, said
    plan = cm.plan_eviction(0)  # prune says the same, and evicts what can be got back
    assert [e.name for e in plan.evict] == ["org/tiny-tf"]
    assert [(e.name, why) for e, why in plan.kept] == [
        ("me/finetune", "the cache holds its only copy (imported with --move)")
    ]
    cm.remove("me/finetune")  # asked for by name: removed
    assert cm.find("me/finetune") is None


def test_an_import_whose_source_has_gone_is_kept_one_whose_source_is_there_is_evicted(
    cache_dir: Path, make_files
) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10_000, remote=None)
    kept_src, gone_src = make_files("kept", {"w.bin": 4000}), make_files("gone", {"w.bin": 4000})
    cm.import_model(gone_src, "me/gone")  # hard links or a clone: the source stays the other copy
    cm.import_model(kept_src, "me/there")
    import shutil

    shutil.rmtree(gone_src)  # deleted after the import: the cache's hard links are all that is left
    cm.import_model(make_files("new", {"w.bin": 4000}), "me/new")
    assert {e.name for e in cm.entries()} == {"me/gone", "me/new"}  # not the oldest: me/there, whose source is there
    plan = cm.plan_eviction(0)
    assert [(e.name, why) for e, why in plan.kept if e.name == "me/gone"] == [
        ("me/gone", f"the cache holds its only copy (its source {gone_src} no longer exists)")
    ]


def test_cli_import_move_says_it_is_kept_and_prune_names_what_stands_in_the_way(tmp_path: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    from helpers import run_cli

    env = {"PROVENDER_CACHE__DIR": str(tmp_path / "c"), "PROVENDER_CACHE__MAX_SIZE": "10000"}
    r = run_cli("cache", "import", str(make_files("ft", {"w.bin": 6000})), "--name", "me/finetune", "--move", env=env)
    assert r.returncode == 0 and "only copy (imported with --move): it is never evicted" in r.stdout, r
    r = run_cli("cache", "import", str(make_files("b", {"w.bin": 6000})), "--name", "me/other", env=env)
    assert r.returncode == 0 and "me/finetune (the cache holds its only copy" in r.stderr, r  # it used to be evicted
    r = run_cli("cache", "prune", "--max-size", "1000", "-y", env=env)
    assert r.returncode == 0, r
    assert "kept me/finetune (6.0 KB): the cache holds its only copy (imported with --move)" in r.stdout, r.stdout
    assert "cache rm NAME` removes an only copy" in r.stderr
