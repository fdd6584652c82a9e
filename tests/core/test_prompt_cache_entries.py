"""Saved prompt caches in the shared cache (issue 22 item 3), on real files: their own kind of
entry, a budget of their own inside cache.max_size, evicted before any model, not counted in the
models' hits and misses, listed apart, leased and verified like any entry."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import run_cli
from provender import CacheManager
from provender._cache._prompts import check_files, prompt_key, read_tokens
from provender.errors import EntryInUseError


def save(cm: CacheManager, tokens: list[int], size: int = 1000, *, model: str = "me/tiny") -> Any:
    """A prompt cache of `size` bytes of state (random: a real file, as a runtime writes one)."""
    return cm.prompts.save(
        model=model,
        model_id=f"local:{model}:1.0",
        runtime="test-runtime",
        version="test 1",
        tokens=tokens,
        write=lambda folder: (folder / "state.bin").write_bytes(os.urandom(size)),
    )


def test_a_prompt_cache_is_its_own_kind_of_entry_not_a_model(cache_dir: Path, make_files: Any) -> None:
    cm = CacheManager(cache_dir, max_size=10**6)
    cm.import_model(make_files("m", {"w.bin": 500}), "me/model")
    entry = save(cm, [1, 2, 3, 4])
    assert entry.kind == "prompt" and entry.name.startswith("prompt/")
    assert entry.key == prompt_key("local:me/tiny:1.0", "test-runtime", "test 1", [1, 2, 3, 4])
    assert [e.name for e in cm.entries()] == ["me/model"]  # the models' listing never shows it
    assert {e.kind for e in cm.entries(prompts=True)} == {"local", "prompt"}
    meta = entry.metadata["prompt"]
    assert meta["tokens"] == 4 and meta["runtime"] == "test-runtime" and meta["model"] == "me/tiny"
    assert read_tokens(entry) == [1, 2, 3, 4]
    manifest = json.loads((entry.path / ".provender-entry.json").read_text())
    assert manifest["kind"] == "prompt"
    assert all("sha256" in info for info in manifest["files"].values())  # known from the start
    assert check_files(entry) is None
    # the same key again replaces it (one entry per model, runtime, version and tokens)
    again = save(cm, [1, 2, 3, 4], 700)
    assert again.key == entry.key and len(cm.prompts.entries()) == 1 and again.size < entry.size


def test_the_kind_survives_an_index_rebuild(cache_dir: Path) -> None:
    cm = CacheManager(cache_dir, max_size=10**6)
    key = save(cm, [5, 6, 7]).key
    cm.index.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{cache_dir}/index.db{suffix}").unlink(missing_ok=True)
    fresh = CacheManager(cache_dir, max_size=10**6)
    (found,) = fresh.entries(prompts=True)
    assert found.key == key and found.kind == "prompt" and found.metadata["prompt"]["tokens"] == 3


def test_the_prompt_budget_evicts_prompt_caches_only(cache_dir: Path, make_files: Any) -> None:
    cm = CacheManager(cache_dir, max_size=10**6, prompt_max_size=2600)
    cm.import_model(make_files("m", {"w.bin": 5000}), "me/model")
    first = save(cm, [1, 1, 1])
    time.sleep(0.01)
    second = save(cm, [2, 2, 2])
    time.sleep(0.01)
    third = save(cm, [3, 3, 3])  # 3 x ~1 KB over a 2.6 KB budget: the least recently used goes
    keys = {e.key for e in cm.prompts.entries()}
    assert keys == {second.key, third.key} and first.key not in keys
    assert [e.name for e in cm.entries()] == ["me/model"]  # far under max_size: no model touched
    assert cm.stats().evictions == 1
    with pytest.raises(Exception, match="prompt_cache_max_size"):
        save(cm, [4, 4, 4], 5000)  # alone larger than the budget: refused, nothing evicted
    assert {e.key for e in cm.prompts.entries()} == keys


def test_eviction_takes_prompt_caches_before_any_model(cache_dir: Path, make_files: Any) -> None:
    cm = CacheManager(cache_dir, max_size=4500, prompt_max_size=4000)
    cm.import_model(make_files("old", {"w.bin": 1500}), "me/old")  # the least recently used of all
    time.sleep(0.01)
    prompt = save(cm, [9, 9, 9], 1500)
    time.sleep(0.01)
    cm.import_model(make_files("new", {"w.bin": 1500}), "me/new")  # over 4500: something must go
    assert cm.find(prompt.key) is None  # the prompt cache went, though more recently used than me/old
    assert {e.name for e in cm.entries()} == {"me/old", "me/new"}
    time.sleep(0.01)
    save(cm, [8, 8], 100)  # the most recently used entry of all
    plan = cm.plan_eviction(1)
    assert [e.kind for e in plan.evict] == ["prompt", "local", "local"]  # dry runs show the same order


def test_reading_one_counts_no_hit_or_miss_and_holds_it(cache_dir: Path) -> None:
    cm = CacheManager(cache_dir, max_size=10**6)
    entry = save(cm, [1, 2])
    before = cm.stats()
    lease = cm.prompts.hold(entry)
    assert lease is not None
    try:
        assert cm.in_use(entry.key)
        with pytest.raises(EntryInUseError):
            cm.remove(entry.key)
        assert cm.prune(0).evict == ()  # in use: kept
    finally:
        lease.release()
    after = cm.stats()
    assert (after.hits, after.misses) == (before.hits, before.misses)
    (row,) = cm.prompts.entries()
    assert row.hits == 1 and row.last_used is not None and row.last_used >= entry.last_used
    cm.remove(entry.key)  # released: it goes like any entry
    assert cm.prompts.entries() == []


def test_verify_reports_a_damaged_prompt_cache_and_fix_drops_it(cache_dir: Path) -> None:
    cm = CacheManager(cache_dir, max_size=10**6)
    entry = save(cm, [1, 2, 3])
    assert cm.verify() == []
    state = entry.path / "state.bin"
    data = bytearray(state.read_bytes())
    data[10] ^= 0xFF
    state.write_bytes(bytes(data))
    assert "sha256" in (check_files(entry) or "")
    (issue,) = cm.verify()
    assert issue.key == entry.key and "sha256" in issue.problem and not issue.fixed
    (fixed,) = cm.verify(fix=True)
    assert fixed.fixed and cm.prompts.entries() == []


def test_a_damaged_tokens_file_is_not_read(cache_dir: Path) -> None:
    cm = CacheManager(cache_dir, max_size=10**6)
    entry = save(cm, [1, 2, 3])
    (entry.path / "tokens.json").write_text("[1, 2, 4]")
    assert read_tokens(entry) is None
    assert check_files(entry) is not None


def test_cache_ls_lists_them_apart(cache_dir: Path, make_files: Any) -> None:
    cm = CacheManager(cache_dir, max_size=10**6)
    cm.import_model(make_files("m", {"w.bin": 500}), "me/model")
    entry = save(cm, list(range(40)))
    env = {"PROVENDER_CACHE__DIR": str(cache_dir)}
    out = run_cli("cache", "ls", env=env)
    assert out.returncode == 0, out.stderr
    models, _, prompts = out.stdout.partition("Prompt caches (1")
    assert "me/model" in models and entry.name not in models
    assert entry.name in prompts and "me/tiny" in prompts and "40" in prompts
    rows = json.loads(run_cli("cache", "ls", "--json", env=env).stdout)
    kinds = {r["name"]: r["kind"] for r in rows}
    assert kinds == {"me/model": "local", entry.name: "prompt"}
    (prompt_row,) = [r for r in rows if r["kind"] == "prompt"]
    assert prompt_row["prompt"]["tokens"] == 40 and prompt_row["provider"] is None
    stats = json.loads(run_cli("cache", "stats", "--json", env=env).stdout)
    assert stats["entries"] == 2  # under cache.max_size with the models


def test_the_budget_setting_reaches_the_cache(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVENDER_CACHE__DIR", str(cache_dir))
    monkeypatch.setenv("PROVENDER_CACHE__PROMPT_CACHE_MAX_SIZE", "3MB")
    assert CacheManager().prompt_max_size == 3 * 10**6
    assert CacheManager(cache_dir, max_size=10**6).prompt_max_size == 10**5  # not from settings: a tenth


def test_index_rows_keep_the_prompt_kind(cache_dir: Path) -> None:
    cm = CacheManager(cache_dir, max_size=10**6)
    entry = save(cm, [1, 2, 3])
    con = sqlite3.connect(cache_dir / "index.db")
    try:
        assert con.execute("SELECT kind FROM entries WHERE key=?", (entry.key,)).fetchone() == ("prompt",)
    finally:
        con.close()


def test_prune_and_its_dry_run_hold_the_prompt_budget(cache_dir: Path, make_files: Any) -> None:
    cm = CacheManager(cache_dir, max_size=10**6, prompt_max_size=10**5)
    cm.import_model(make_files("m", {"w.bin": 500}), "me/model")
    saved = []
    for n in range(3):
        saved.append(save(cm, [n, n, n]))
        time.sleep(0.01)
    cm.prompt_max_size = 2100  # lowered (the setting changed): two of the three fit
    plan = cm.plan_eviction()
    assert [e.key for e in plan.evict] == [saved[0].key]  # the least recently used prompt cache, no model
    done = cm.prune()
    assert [e.key for e in done.evict] == [saved[0].key]
    assert {e.key for e in cm.prompts.entries()} == {saved[1].key, saved[2].key}
    assert [e.name for e in cm.entries()] == ["me/model"]
