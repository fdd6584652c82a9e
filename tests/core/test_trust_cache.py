"""Issue 9, cache side: damaged manifests lose nothing (3, 16), dry runs tell the truth (5),
ambiguous names are errors and short keys work (8). Real files, real locks, the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import run_cli
from provender import AmbiguousNameError, CacheManager, EntryNotFoundError
from provender._cache._entry import CacheEntry
from provender._cache._eviction import BEING_ADDED, IN_USE, PINNED, plan_eviction
from provender._cache._manager import MANIFEST

# -- helpers ------------------------------------------------------------------------------


def content(entry_dir: Path) -> dict[str, bytes]:
    """Every file of an entry but provender's own manifest files, with its bytes."""
    return {
        str(p.relative_to(entry_dir)): p.read_bytes()
        for p in sorted(entry_dir.rglob("*"))
        if p.is_file() and not p.name.startswith(".provender-entry")
    }


def forget_index(cache_dir: Path) -> None:
    """The index is lost (deleted, or rebuilt after corruption): only the disk describes the entries."""
    for name in ("index.db", "index.db-wal", "index.db-shm"):
        (cache_dir / name).unlink(missing_ok=True)


def garbage(text: str, key: str) -> bytes:
    return b"\x00\xff this is not JSON \x13" * 20


def truncated(text: str, key: str) -> bytes:
    return text.encode()[: len(text) // 2]


def empty(text: str, key: str) -> bytes:
    return b""


def other_key(text: str, key: str) -> bytes:
    manifest = json.loads(text)
    manifest["key"] = "f" * 64
    return json.dumps(manifest).encode()


DAMAGES = [garbage, truncated, empty, other_key]


def entry_of(size: int, key: str) -> CacheEntry:
    return CacheEntry(key=key, name=key, kind="local", path=Path("/nowhere") / key, size=size, created=0.0)


@pytest.fixture
def env(cache_dir: Path) -> dict[str, str]:
    return {"PROVENDER_CACHE__DIR": str(cache_dir), "PROVENDER_QUIET_PLUGIN_ERRORS": "1"}


def ok(*args: str, env: dict[str, str]) -> str:
    out = run_cli(*args, env=env)
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out.stdout


# -- item 3 and 16: a damaged manifest never deletes content ---------------------------


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda d: d.__name__)
@pytest.mark.parametrize("index", ["intact", "lost"])
def test_damaged_manifest_deletes_nothing_and_verify_reports_it(
    cache_dir: Path,
    make_files,  # type: ignore[no-untyped-def]
    damage,  # type: ignore[no-untyped-def]
    index: str,
) -> None:
    cm = CacheManager(cache_dir, max_size=10**6)
    entry = cm.import_model(
        make_files("m", {"model.safetensors": 5000, "sub/config.json": b'{"a": 1}'}), "org/m", link_mode="copy"
    )
    before = content(entry.path)
    manifest_path = entry.path / MANIFEST
    damaged = damage(manifest_path.read_text(), entry.key)
    manifest_path.write_bytes(damaged)
    if index == "lost":
        cm._index.close()
        forget_index(cache_dir)
    cm2 = CacheManager(cache_dir, max_size=10**6)
    [listed] = cm2.entries()  # the start-up (a reconcile) sees the entry, and deletes nothing
    assert listed.key == entry.key and listed.size == entry.size
    assert content(entry.path) == before  # same files, same bytes
    issues = cm2.verify()
    assert len(issues) == 1, issues
    [issue] = issues
    assert issue.key == entry.key and issue.fixed and "manifest" in issue.problem and "rebuilt" in issue.problem
    kept = list(entry.path.glob(f"{MANIFEST}.corrupt-*"))
    assert [p.read_bytes() for p in kept] == [damaged]  # the damaged manifest is kept for inspection
    assert content(entry.path) == before
    assert cm2.verify() == []  # reported once; the rebuilt manifest now checks the content
    assert cm2.get_cached_model(entry.key) == entry.model_path
    if index == "intact" or damage is other_key:
        assert cm2.get("org/m").key == entry.key  # the name survives where anything still knew it
    else:
        assert cm2.find("org/m") is None and listed.name == f"recovered-{entry.key[:12]}"


def test_damaged_single_file_entry_still_resolves_to_its_file(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10**6)
    src = make_files("w", {"weights.gguf": 3000}) / "weights.gguf"
    path = cm.cache_model(src, "gguf-key", link_mode="copy")
    (cache_dir / "objects" / "gguf-key" / MANIFEST).write_bytes(b"{torn")
    cm._index.close()
    forget_index(cache_dir)
    again = CacheManager(cache_dir, max_size=10**6).get_cached_model("gguf-key")  # found by key, not in the index
    assert again == path and again.read_bytes() == src.read_bytes()


def test_damaged_manifest_found_by_verify_cli(env: dict[str, str], cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    ok("cache", "import", str(make_files("m", {"w.bin": 700})), "--name", "org/m", "--copy", env=env)
    [entry_dir] = (cache_dir / "objects").iterdir()
    before = content(entry_dir)
    (entry_dir / MANIFEST).write_text('{"key": "' + entry_dir.name + '", "files": {"w.b')  # torn mid-write
    out = run_cli("cache", "verify", env=env)
    assert out.returncode == 1, out  # it found something
    assert "unexpected" not in out.stderr and "Traceback" not in out.stderr
    assert "FIXED org/m" in out.stdout and "not valid JSON" in out.stdout and "1 problem(s) found" in out.stdout
    assert content(entry_dir) == before
    again = json.loads(ok("cache", "verify", "--json", env=env))
    assert again == {"ok": True, "issues": []}


def test_start_up_repair_is_reported_by_a_later_verify(env: dict[str, str], cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    ok("cache", "import", str(make_files("m", {"w.bin": 700})), "--name", "org/m", env=env)
    [entry_dir] = (cache_dir / "objects").iterdir()
    (entry_dir / MANIFEST).write_bytes(b"")
    forget_index(cache_dir)
    listing = run_cli("cache", "ls", "--json", env=env)  # this start-up repairs it, and says so on stderr
    assert listing.returncode == 0 and [r["key"] for r in json.loads(listing.stdout)] == [entry_dir.name]
    assert "manifest is empty" in listing.stderr
    report = run_cli("cache", "verify", "--json", env=env)
    assert report.returncode == 1
    data = json.loads(report.stdout)
    assert data["ok"] is False and [i["key"] for i in data["issues"]] == [entry_dir.name]
    assert "manifest is empty" in data["issues"][0]["problem"] and data["issues"][0]["fixed"] is True
    assert (entry_dir / "w.bin").stat().st_size == 700


def test_a_directory_that_is_not_an_entry_is_left_in_place(cache_dir: Path) -> None:
    cm = CacheManager(cache_dir, max_size=10**6)
    stray = cache_dir / "objects" / "not a key!"
    stray.mkdir()
    (stray / "notes.txt").write_text("mine")
    assert cm.entries() == []
    [issue] = cm.verify()
    assert not issue.fixed and "left in place" in issue.problem
    assert (stray / "notes.txt").read_text() == "mine"


def test_reimporting_an_entry_never_writes_through_a_hard_link(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10**6)
    first = cm.import_model(make_files("m", {"w.bin": 400}), "org/a", link_mode="copy")
    original = (first.path / MANIFEST).read_bytes()
    cm.import_model(first.path, "org/b")  # hard-linked where it can be: the old manifest must stay its own
    assert (first.path / MANIFEST).read_bytes() == original
    assert cm.verify() == [] and cm.verify() == []


def test_an_index_rebuild_is_reported_by_verify(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10**6)
    cm.import_model(make_files("m", {"w": 100}), "org/m")
    cm._index.close()
    forget_index(cache_dir)
    (cache_dir / "index.db").write_bytes(b"not a database" * 100)
    cm2 = CacheManager(cache_dir, max_size=10**6)
    [issue] = cm2.verify()
    assert issue.fixed and "index" in issue.problem and "rebuilt" in issue.problem
    assert cm2.get("org/m").size == 100


# -- item 5: dry runs say what the real command does --------------------------------------


def test_plan_eviction_takes_least_recently_used_first() -> None:
    entries = [entry_of(100, "a"), entry_of(100, "b"), entry_of(100, "c")]
    plan = plan_eviction(entries, 150)
    assert [e.key for e in plan.evict] == ["a", "b"] and plan.kept == () and plan.fits
    assert (plan.total, plan.freed, plan.after, plan.over) == (300, 200, 100, 0)
    assert plan_eviction(entries, 300).evict == ()  # fits already: nothing goes


def test_plan_eviction_keeps_pinned_in_use_and_the_entry_being_added() -> None:
    entries = [entry_of(100, k) for k in "abcd"]
    plan = plan_eviction(entries, 100, protected={"d"}, pinned={"a"}, in_use={"b"})
    assert [e.key for e in plan.evict] == ["c"]
    assert [(e.key, why) for e, why in plan.kept] == [("a", PINNED), ("b", IN_USE), ("d", BEING_ADDED)]
    assert not plan.fits and plan.over == 200
    asked: list[str] = []

    def held(key: str) -> bool:
        asked.append(key)
        return key == "a"

    plan = plan_eviction(entries, 250, in_use=held)
    assert [e.key for e in plan.evict] == ["b", "c"] and asked == ["a", "b", "c"]  # "d" is never asked about


def test_plan_eviction_with_only_pinned_entries_frees_nothing() -> None:
    plan = plan_eviction([entry_of(500, "p")], 0, pinned={"p"})
    assert plan.evict == () and plan.freed == 0 and plan.over == 500 and not plan.fits
    assert [why for _e, why in plan.kept] == [PINNED]
    with pytest.raises(ValueError, match="negative"):
        plan_eviction([], -1)


def test_plan_matches_what_prune_does(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10**6)
    for name in ("a", "b", "c", "d"):
        cm.cache_model(make_files(name, {"w": 1000}), name)
    cm.pin("b")
    lease = cm.acquire("c")
    planned = cm.plan_eviction(1500)
    assert [e.key for e in planned.evict] == ["a", "d"]
    assert [(e.key, why) for e, why in planned.kept] == [("b", PINNED), ("c", IN_USE)]
    assert {e.key for e in cm.entries()} == {"a", "b", "c", "d"}  # planning changed nothing
    done = cm.prune(1500)
    assert [e.key for e in done.evict] == [e.key for e in planned.evict] and done.kept == planned.kept
    assert {e.key for e in cm.entries()} == {"b", "c"}
    lease.release()


def test_rm_dry_run_refuses_what_rm_refuses(env: dict[str, str], cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    for name in ("pinned", "held", "free"):
        ok("cache", "import", str(make_files(name, {"w": 1000})), "--name", f"org/{name}", env=env)
    ok("cache", "pin", "org/pinned", env=env)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from provender import CacheManager; lease = CacheManager({str(cache_dir)!r}).acquire('org/held'); "
            "print('held', flush=True); input()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        dry = run_cli("cache", "rm", "--dry-run", "org/pinned", "org/held", "org/free", env=env)
        assert dry.returncode == 1, dry  # as the real command exits
        assert "would refuse org/pinned: it is pinned" in dry.stdout
        assert "would refuse org/held: a running process is using it" in dry.stdout
        assert "would remove org/free (1.0 KB)" in dry.stdout and "would remove org/pinned" not in dry.stdout
        assert "would free 1.0 KB" in dry.stdout
        real = run_cli("cache", "rm", "-y", "org/pinned", "org/held", "org/free", env=env)
        assert real.returncode == 1 and "removed org/free" in real.stdout
        assert "pinned" in real.stderr and "running process" in real.stderr
    finally:
        holder.communicate("\n", timeout=30)
    names = sorted(r["name"] for r in json.loads(ok("cache", "ls", "--json", env=env)))
    assert names == ["org/held", "org/pinned"]


def test_prune_with_only_a_pinned_entry_explains_itself_once(env: dict[str, str], make_files) -> None:  # type: ignore[no-untyped-def]
    ok("cache", "import", str(make_files("p", {"w": 1000})), "--name", "org/p", "--pin", env=env)
    dry = run_cli("cache", "prune", "--max-size", "0", "--dry-run", env=env)
    assert dry.returncode == 0
    assert "Nothing can be freed" in dry.stdout and "kept org/p (1.0 KB): pinned" in dry.stdout
    assert "Nothing to prune" not in dry.stdout and "fits" not in dry.stdout
    real = run_cli("cache", "prune", "--max-size", "0", "-y", env=env)
    assert real.returncode == 0 and real.stdout == dry.stdout
    both = real.stdout + real.stderr
    assert both.count("over its limit") == 1  # one explanation, not a warning twice
    assert [r["name"] for r in json.loads(ok("cache", "ls", "--json", env=env))] == ["org/p"]


def test_prune_warns_once_when_pins_keep_it_over(env: dict[str, str], make_files) -> None:  # type: ignore[no-untyped-def]
    ok("cache", "import", str(make_files("old", {"w": 1000})), "--name", "org/old", env=env)
    ok("cache", "import", str(make_files("p", {"w": 1000})), "--name", "org/p", "--pin", env=env)
    out = run_cli("cache", "prune", "--max-size", "0", "-y", env=env)
    assert out.returncode == 0 and "evicted 1 entries" in out.stdout
    assert (out.stdout + out.stderr).count("over its limit") == 1


def test_prune_without_a_terminal_shows_the_plan_and_evicts_nothing(env: dict[str, str], make_files) -> None:  # type: ignore[no-untyped-def]
    for name in ("a", "b"):
        ok("cache", "import", str(make_files(name, {"w": 600_000})), "--name", f"org/{name}", env=env)
    out = run_cli("cache", "prune", "--max-size", "1MB", env=env, input="")
    assert out.returncode == 2 and "-y" in out.stderr
    assert "will evict org/a" in out.stdout and "evicting" not in out.stdout + out.stderr
    assert "evicted" not in out.stdout
    assert len(json.loads(ok("cache", "ls", "--json", env=env))) == 2


# -- item 8: ambiguous names are errors; short keys work ---------------------------------


def two_of_one_name(cache_dir: Path, make_files) -> tuple[CacheManager, list[str]]:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10**6)
    keys = []
    for d in ("x", "y"):
        src = make_files(d, {"weights.safetensors": 100}) / "weights.safetensors"
        key = cm.generate_cache_key(f"org/{d}", "weights.safetensors")
        cm.cache_model(src, key)
        keys.append(key)
    return cm, keys


def test_an_ambiguous_name_is_an_error_in_the_api(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cm, keys = two_of_one_name(cache_dir, make_files)
    for call in (cm.find, cm.get, cm.remove, cm.pin, cm.unpin, cm.acquire, cm.in_use):
        with pytest.raises(AmbiguousNameError) as info:
            call("weights.safetensors")
        assert sorted(k for k, _ in info.value.candidates) == sorted(keys)
        assert all(k[:12] in str(info.value) for k in keys)
    assert {e.key for e in cm.entries()} == set(keys) and not any(e.pinned for e in cm.entries())
    assert cm.get(keys[0]).key == keys[0]  # the key picks one


def test_an_ambiguous_name_is_an_error_in_the_cli(env: dict[str, str], cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    _cm, keys = two_of_one_name(cache_dir, make_files)
    for args in (["rm", "-y"], ["pin"], ["unpin"], ["rm", "--dry-run"]):
        out = run_cli("cache", *args, "weights.safetensors", env=env)
        assert out.returncode == 2, (args, out)
        assert "matches 2 cache entries" in out.stderr and all(k[:12] in out.stderr for k in keys)
        assert "Traceback" not in out.stderr
    model = run_cli("generate", "-m", "weights.safetensors", "hi", env=env)  # a model name is resolved the same way
    assert model.returncode == 2 and "matches 2 cache entries" in model.stderr
    assert len(json.loads(ok("cache", "ls", "--json", env=env))) == 2


def test_the_short_key_cache_ls_prints_is_accepted(env: dict[str, str], cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    _cm, keys = two_of_one_name(cache_dir, make_files)
    table = ok("cache", "ls", env=env)
    short = keys[0][:12]
    assert short in table and keys[0] not in table
    assert "pinned weights.safetensors" in ok("cache", "pin", short, env=env)
    rows = {r["key"]: r for r in json.loads(ok("cache", "ls", "--json", env=env))}
    assert rows[keys[0]]["pinned"] and not rows[keys[1]]["pinned"]
    ok("cache", "unpin", keys[0][:6], env=env)
    assert "removed weights.safetensors" in ok("cache", "rm", "-y", short, env=env)
    assert [r["key"] for r in json.loads(ok("cache", "ls", "--json", env=env))] == [keys[1]]


def test_key_prefixes_must_be_unique_and_long_enough(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10**6)
    a = "abcd" + "0" * 60
    b = "abcd" + "1" * 60
    for key in (a, b):
        cm.cache_model(make_files(key[4:6], {"w": 10}), key)
    with pytest.raises(AmbiguousNameError, match="key prefix 'abcd' matches 2"):
        cm.get("abcd")
    assert cm.get("abcd0").key == a and cm.get("abcd1").key == b
    assert cm.find("abc") is None  # under 4 characters: never a prefix
    cm.cache_model(make_files("custom", {"w": 10}), "model-v10")
    assert cm.find("model-v1") is None  # a caller's own key is matched whole
    with pytest.raises(EntryNotFoundError):
        cm.remove("model-v1")
    assert cm.get("model-v10").key == "model-v10"


def test_an_imported_entry_and_a_hub_repo_sharing_a_name(cache_dir: Path, make_files, fake_hub) -> None:  # type: ignore[no-untyped-def]
    fake_hub.add("org/tiny", {"config.json": b"{}", "model.safetensors": os.urandom(500)})
    cm = CacheManager(cache_dir, max_size=10**6)
    hub = cm.fetch("org/tiny", progress=False, endpoint=fake_hub.endpoint)
    imported = cm.import_model(make_files("tiny", {"w": 10}), "org/tiny")
    assert cm.get("org/tiny").key == imported.key  # the sideload overrides the download: documented
    assert cm.get(hub.key).kind == "hub" and cm.get(hub.key[:12]).kind == "hub"  # the key reaches the repo


@settings(max_examples=25)
@given(
    damaged=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
            max_leaves=12,
        ).map(lambda value: json.dumps(value).encode()),
        st.fixed_dictionaries(
            {"key": st.text(max_size=70), "files": st.dictionaries(st.text(max_size=8), st.integers(), max_size=3)}
        ).map(lambda value: json.dumps(value).encode()),
    )
)
def test_any_damaged_manifest_loses_nothing(damaged: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = Path(tmp) / "cache"
        src = Path(tmp) / "m"
        src.mkdir()
        (src / "w.bin").write_bytes(os.urandom(300))
        cm = CacheManager(cache_dir, max_size=10**6)
        entry = cm.import_model(src, "org/m", link_mode="copy")
        before = content(entry.path)
        (entry.path / MANIFEST).write_bytes(damaged)
        cm._index.close()
        forget_index(cache_dir)
        cm2 = CacheManager(cache_dir, max_size=10**6)
        assert [e.key for e in cm2.entries()] == [entry.key]
        issues = cm2.verify()  # never raises, whatever the manifest holds
        assert content(entry.path) == before
        assert issues and all(i.fixed for i in issues) and cm2.verify() == []
        cm2._index.close()
