"""Unit tests for the pure parts of the core: eviction planning, names and keys, the Hub
layout reader, size and duration parsing. No cache manager, no process: each function is
given its inputs (a real directory where it reads one) and its answer is checked.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provender._cache._entry import CacheEntry
from provender._cache._eviction import BEING_ADDED, IN_USE, PINNED, EvictionPlan, plan_eviction
from provender._cache._hub import (
    display_name,
    folder_name,
    has_snapshot,
    link_target,
    parse_folder_name,
    planted_links,
    repo_size,
    snapshot_path,
)
from provender._cache._names import MAX_NAME_LENGTH, check_key, check_name, generate_cache_key, within
from provender._sizes import (
    FOREVER,
    MAX_DURATION,
    format_ago,
    format_duration,
    format_size,
    format_size_exact,
    parse_duration,
    parse_limit,
    parse_size,
)
from provender.errors import InvalidNameError


def entry(key: str, size: int, last_used: float = 0.0) -> CacheEntry:
    return CacheEntry(key=key, name=key, kind="local", path=Path("/nowhere") / key, size=size, created=0.0,
                      last_used=last_used)  # fmt: skip


# -- eviction planning ---------------------------------------------------------------------


def test_plan_evicts_least_recently_used_first_until_within_the_limit() -> None:
    lru = [entry("a", 40), entry("b", 30), entry("c", 20), entry("d", 10)]
    plan = plan_eviction(lru, 35)
    assert [e.key for e in plan.evict] == ["a", "b"]
    assert (plan.total, plan.freed, plan.after, plan.fits, plan.over) == (100, 70, 30, True, 0)
    assert plan.kept == ()


def test_plan_within_the_limit_evicts_nothing() -> None:
    plan = plan_eviction([entry("a", 10), entry("b", 10)], 20)
    assert plan == EvictionPlan(limit=20, total=20)
    assert plan.fits and plan.freed == 0


def test_plan_keeps_protected_pinned_and_in_use_entries_and_says_why() -> None:
    lru = [entry("new", 50), entry("pin", 50), entry("busy", 50), entry("old", 50), entry("young", 50)]
    asked: list[str] = []

    def in_use(key: str) -> bool:
        asked.append(key)
        return key == "busy"

    plan = plan_eviction(lru, 100, protected={"new"}, pinned={"pin"}, in_use=in_use)
    assert [e.key for e in plan.evict] == ["old", "young"]
    assert [(e.key, why) for e, why in plan.kept] == [("new", BEING_ADDED), ("pin", PINNED), ("busy", IN_USE)]
    assert plan.after == 150 and not plan.fits and plan.over == 50
    assert asked == ["busy", "old", "young"]  # asked only about entries that would otherwise go


def test_plan_stops_asking_once_the_cache_fits() -> None:
    asked: list[str] = []
    plan = plan_eviction([entry("a", 60), entry("b", 60)], 60, in_use=lambda k: bool(asked.append(k)))
    assert [e.key for e in plan.evict] == ["a"] and asked == ["a"]


def test_plan_with_everything_held_is_over_the_limit() -> None:
    plan = plan_eviction([entry("a", 10), entry("b", 10)], 5, in_use={"a", "b"})
    assert plan.evict == () and plan.over == 15 and not plan.fits
    assert [why for _, why in plan.kept] == [IN_USE, IN_USE]


def test_plan_refuses_a_negative_limit() -> None:
    with pytest.raises(ValueError, match="cannot be negative"):
        plan_eviction([entry("a", 1)], -1)


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=1000), max_size=12),
    limit=st.integers(min_value=0, max_value=5000),
    pinned=st.sets(st.integers(min_value=0, max_value=11)),
)
def test_plan_properties(sizes: list[int], limit: int, pinned: set[int]) -> None:
    lru = [entry(str(i), s) for i, s in enumerate(sizes)]
    plan = plan_eviction(lru, limit, pinned={str(i) for i in pinned})
    evicted = {e.key for e in plan.evict}
    assert not evicted & {str(i) for i in pinned}  # never a pinned entry
    assert plan.after == sum(sizes) - sum(e.size for e in plan.evict)
    order = [e.key for e in lru if e.key in evicted]
    assert [e.key for e in plan.evict] == order  # oldest first
    if not plan.fits:  # everything that could go went
        assert evicted == {e.key for e in lru} - {str(i) for i in pinned}
    if plan.evict:  # and nothing more than needed: the cache was over before the last one went
        assert plan.after + plan.evict[-1].size > limit


# -- names and keys ------------------------------------------------------------------------


def test_cache_key_is_a_stable_sha256_of_its_inputs() -> None:
    key = generate_cache_key("org/model", "model.bin", {"b": 2, "a": 1})
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert key == generate_cache_key("org/model", "model.bin", {"a": 1, "b": 2})  # dict order is irrelevant
    # pinned: a change of format would orphan every key already in users' caches
    assert key == "4caaaba3b242c8d80162d406b442a770408fc8b3b2042380bc681d6baab261e6"
    others = {
        generate_cache_key("org/model", "model.bin", {"a": 1, "b": 3}),
        generate_cache_key("org/model", "other.bin", {"a": 1, "b": 2}),
        generate_cache_key("org/other", "model.bin", {"a": 1, "b": 2}),
    }
    assert key not in others and len(others) == 3
    assert generate_cache_key("r") == generate_cache_key("r", None, None) == generate_cache_key("r", "", {})


@given(st.text(max_size=40), st.text(max_size=20))
def test_cache_key_is_always_a_safe_key(repo: str, filename: str) -> None:
    assert check_key(generate_cache_key(repo, filename)) == generate_cache_key(repo, filename)


@pytest.mark.parametrize("key", ["abc", "A1", "x.y_z-9", "a" * 128])
def test_check_key_accepts_safe_tokens(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize("key", ["", ".", "..", "../x", "a/b", "-a", "a\x00b", "é", "a" * 129, " a"])
def test_check_key_refuses_anything_else(key: str) -> None:
    with pytest.raises(InvalidNameError):
        check_key(key)


@pytest.mark.parametrize("name", ["gpt2", "org/name", "Org_1/model-v1.5", "a/" + "b" * 95])
def test_check_name_accepts_hub_style_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("../../etc", "'org/name' or 'name'"),
        ("../etc", "'..'"),
        ("org/..", "'..'"),
        ("a..b", "'..'"),
        ("/etc/passwd", "absolute"),
        ("\\share", "absolute"),
        ("C:stuff", "absolute"),
        ("a/b/c", "'org/name' or 'name'"),
        ("org/", "empty"),
        ("na\x00me", "NUL"),
        ("\u043erg/name", "ASCII"),  # a Cyrillic o
        ("x" * (MAX_NAME_LENGTH + 1), "longer than"),
        ("-lead", "ASCII"),
    ],
)
def test_check_name_refuses_names_that_could_leave_the_cache(name: str, why: str) -> None:
    with pytest.raises(InvalidNameError, match=re.escape(why)):
        check_name(name)


def test_within_judges_names_only() -> None:
    assert within("/cache", "/cache/objects/x")
    assert within("/cache/", "/cache/a/../b")
    assert not within("/cache", "/cache")
    assert not within("/cache", "/cache/../etc")
    assert not within("/cache", "/cachex/a")


# -- the Hub layout reader -----------------------------------------------------------------


def test_hub_folder_names_round_trip() -> None:
    assert folder_name("org/name") == "models--org--name"
    assert folder_name("org/data", "dataset") == "datasets--org--data"
    assert parse_folder_name("models--org--name") == ("model", "org/name")
    assert parse_folder_name("spaces--a--b") == ("space", "a/b")
    for bad in ("models", "models--", "model--org--name", "widgets--a--b", ".locks", "tmp"):
        assert parse_folder_name(bad) is None
    assert display_name("org/name", "model") == "org/name"
    assert display_name("org/data", "dataset") == "datasets/org/data"


@given(
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.]{0,10}(/[A-Za-z0-9][A-Za-z0-9_.]{0,10})?", fullmatch=True),
    st.sampled_from(["model", "dataset", "space"]),
)
def test_hub_folder_name_parses_back(repo_id: str, repo_type: str) -> None:
    assert parse_folder_name(folder_name(repo_id, repo_type)) == (repo_type, repo_id)


def make_repo(root: Path, files: dict[str, bytes], commit: str = "c" * 40, ref: str | None = "main") -> Path:
    """A repo folder as huggingface_hub writes one: blobs named by hash, snapshot links, refs."""
    repo = root / "models--org--name"
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    for n, (rel, content) in enumerate(files.items()):
        blob = repo / "blobs" / f"{n:064x}"
        blob.write_bytes(content)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref is not None:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return repo


def test_hub_repo_size_counts_blobs_only(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"config.json": b"{}", "weights/model.bin": b"x" * 1000})
    assert repo_size(repo) == 1002
    (repo / "blobs" / "partial.incomplete").write_bytes(b"y" * 500)  # a download in progress
    assert repo_size(repo) == 1002
    assert repo_size(tmp_path / "missing") == 0


def test_hub_snapshot_path_follows_refs_then_revision_then_newest(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"a.txt": b"a"}, commit="1" * 40)
    make_repo(tmp_path, {"b.txt": b"b"}, commit="2" * 40, ref="v2")
    assert snapshot_path(repo) == repo / "snapshots" / ("1" * 40)  # refs/main
    assert snapshot_path(repo, "v2") == repo / "snapshots" / ("2" * 40)  # a ref by name
    assert snapshot_path(repo, "2" * 40) == repo / "snapshots" / ("2" * 40)  # a commit
    assert snapshot_path(repo, "nope") is None
    (repo / "refs" / "main").unlink()
    newest = repo / "snapshots" / ("2" * 40)
    os.utime(newest, ns=(2 * 10**18, 2 * 10**18))
    assert snapshot_path(repo) == newest  # no main: the newest snapshot


def test_hub_snapshot_path_never_reads_a_ref_through_a_link_or_from_a_fifo(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "a", {"a.txt": b"a"}, commit="1" * 40)
    outside = tmp_path / "elsewhere"
    outside.write_text("1" * 40)
    (repo / "refs" / "main").unlink()
    (repo / "refs" / "main").symlink_to(outside)
    assert snapshot_path(repo, "main") is None  # a planted link: not followed
    (repo / "refs" / "main").unlink()
    os.mkfifo(repo / "refs" / "main")
    assert snapshot_path(repo, "main") is None  # a FIFO is never opened (it would block)
    (repo / "refs" / "main").unlink()
    (repo / "refs" / "main").write_text("1" * 40 + "\n" + " " * 5000)  # more than one read's worth
    assert snapshot_path(repo) == repo / "snapshots" / ("1" * 40)
    snapshots = repo / "snapshots"
    snapshots.rename(tmp_path / "moved")
    snapshots.symlink_to(tmp_path / "moved")
    assert snapshot_path(repo) is None  # the snapshots folder itself is a link
    assert isinstance(snapshot_path(make_repo(tmp_path / "b", {"b": b"b"})), Path)


def test_hub_has_snapshot_needs_a_complete_file(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"config.json": b"{}"})
    assert has_snapshot(repo)
    link = next((repo / "snapshots").iterdir()) / "config.json"
    target = link_target(repo, link)
    assert target is not None and target.parent == repo / "blobs"
    target.unlink()  # the link now dangles: no complete file
    assert not has_snapshot(repo)
    assert not has_snapshot(tmp_path / "empty")


def test_hub_link_target_refuses_links_out_of_the_repo(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"a.txt": b"a"})
    outside = tmp_path / "secret"
    outside.write_text("s")
    evil = next((repo / "snapshots").iterdir()) / "evil"
    evil.symlink_to(outside)
    assert link_target(repo, evil) is None
    assert link_target(repo, repo / "blobs") is None  # not a link at all


def test_hub_planted_links_are_found(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"a.txt": b"a"})
    assert planted_links(repo) == []
    (repo / "blobs" / "planted").symlink_to(tmp_path)
    (repo / "refs" / "dev").symlink_to(tmp_path / "x")
    assert sorted(p.name for p in planted_links(repo)) == ["dev", "planted"]


# -- sizes and durations -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        (0, 0),
        (123, 123),
        ("123", 123),
        ("50GB", 50 * 10**9),
        ("50 gb", 50 * 10**9),
        ("500MiB", 500 * 2**20),
        ("1.5 TB", 1_500_000_000_000),
        (".5KB", 500),
        ("2k", 2000),
        ("1PiB", 2**50),
        (4.0, 4),
    ],
)
def test_parse_size(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "negative"),
        ("-5GB", "cannot be negative"),
        ("5XB", "unknown unit"),
        ("1.5", "whole number of bytes"),
        ("0.1KiB", "whole number of bytes"),
        (1.5, "whole number of bytes"),
        (float("inf"), "is not"),
        (True, "is not"),
        (None, "is not"),
        ("", "is not"),
        ("GB", "is not"),
    ],
)
def test_parse_size_refuses_with_a_message_for_people(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_size(value)


def test_parse_limit_needs_a_byte() -> None:
    assert parse_limit("1") == 1
    with pytest.raises(ValueError, match="0 bytes"):
        parse_limit(0)


@given(st.integers(min_value=0, max_value=10**18))
def test_exact_size_reads_back_to_the_same_number(n: int) -> None:
    assert parse_size(format_size_exact(n)) == n


def test_size_formatting() -> None:
    assert format_size_exact(50 * 10**9) == "50 GB"
    assert format_size_exact(500 * 2**20) == "500 MiB"
    assert format_size_exact(1234567) == "1234567 B"
    assert format_size(999) == "999 B"
    assert format_size(1_234_567) == "1.2 MB"
    assert format_size(5 * 10**15) == "5000.0 TB"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30.0), ("30s", 30.0), ("5m", 300.0), ("1.5h", 5400.0), ("2d", 172800.0), ("-1", -1.0), (0, 0.0)],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("value", ["5 minutes", "1w", "", True, float("nan"), None])
def test_parse_duration_refuses(value: object) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(value)


@pytest.mark.parametrize("value", ["forever", " Forever ", -1, -5, "-30m", -(10**400), "-" + "9" * 400, -1e300])
def test_forever_and_every_negative_duration_are_one_value(value: object) -> None:
    assert parse_duration(value) == FOREVER == -1.0


@pytest.mark.parametrize(
    "value",
    ["99999999999999999h", 1e300, 10**400, "9" * 400, 3650 * 86400 + 1, "3651d", float(MAX_DURATION) * 2],
)
def test_a_duration_no_clock_can_show_is_refused_and_says_forever(value: object) -> None:
    with pytest.raises(ValueError, match=r'longer than the longest duration, 3650d \(ten years\); .*"forever"') as info:
        parse_duration(value)
    assert len(str(info.value)) < 160  # a 400-digit value is not echoed whole


def test_the_longest_duration_is_accepted() -> None:
    assert parse_duration("3650d") == parse_duration(3650 * 86400) == MAX_DURATION


@given(st.one_of(st.floats(allow_nan=False), st.integers(), st.from_regex(r"\A-?[0-9]{1,30}(\.[0-9]{1,5})?[smhd]?\Z")))
def test_every_accepted_duration_is_a_timestamp_a_listing_can_show(value: object) -> None:
    import time
    from datetime import UTC, datetime

    try:
        seconds = parse_duration(value)
    except ValueError:
        return
    assert seconds == FOREVER or 0 <= seconds <= MAX_DURATION
    if seconds >= 0:
        datetime.fromtimestamp(time.time() + seconds, tz=UTC).isoformat()  # what /api/ps does: never raises


def _safetensors(path: Path, tensors: int, cut: int = 0) -> Path:
    import json
    import struct

    header = {f"t{i}": {"dtype": "F32", "shape": [4], "data_offsets": [16 * i, 16 * (i + 1)]} for i in range(tensors)}
    header["__metadata__"] = {"format": "pt"}  # type: ignore[assignment]
    raw = json.dumps(header).encode()
    data = struct.pack("<Q", len(raw)) + raw + bytes(16 * tensors)
    path.write_bytes(data[: len(data) - cut])
    return path


def _gguf(path: Path, cut: int = 0, ggml_type: int = 0) -> Path:
    """A minimal GGUF v3: one metadata key, two F32 (type 0) tensors of 8 elements, 32-byte aligned data."""
    import struct

    def s(text: str) -> bytes:
        return struct.pack("<Q", len(text)) + text.encode()

    head = b"GGUF" + struct.pack("<IQQ", 3, 2, 1) + s("general.architecture") + struct.pack("<I", 8) + s("llama")
    for i, name in enumerate(("a", "b")):
        head += s(name) + struct.pack("<I", 1) + struct.pack("<Q", 8) + struct.pack("<IQ", ggml_type, 32 * i)
    head += bytes(-len(head) % 32)
    data = head + bytes(64)
    path.write_bytes(data[: len(data) - cut])
    return path


def test_incomplete_weights_finds_files_cut_short_and_passes_whole_ones(tmp_path: Path) -> None:
    from provender._cache._complete import incomplete_weights

    model = tmp_path / "model"
    model.mkdir()
    _safetensors(model / "model-00001-of-00002.safetensors", 3)
    _safetensors(model / "model-00002-of-00002.safetensors", 3)
    assert incomplete_weights(model) is None
    _safetensors(model / "model-00002-of-00002.safetensors", 3, cut=1)
    problem = incomplete_weights(model)
    assert problem is not None and problem.startswith(
        "model-00002-of-00002.safetensors is incomplete: its tensors need"
    )
    assert incomplete_weights(_gguf(tmp_path / "whole.gguf")) is None
    assert incomplete_weights(_gguf(tmp_path / "whole-q.gguf", ggml_type=14)) is None  # a layout checked by offset
    cut = incomplete_weights(_gguf(tmp_path / "cut.gguf", cut=1))
    assert cut is not None and cut.startswith("cut.gguf is incomplete: tensor 'b' needs")
    header_cut = incomplete_weights(_gguf(tmp_path / "head.gguf", cut=150))  # into the tensor table
    assert header_cut is not None and "head.gguf is not a readable GGUF file: " in header_cut
    assert incomplete_weights(_gguf(tmp_path / "named-oddly", cut=1)) is not None  # a GGUF by its magic
    (tmp_path / "notes.txt").write_text("not weights")
    assert incomplete_weights(tmp_path / "notes.txt") is None
    assert incomplete_weights(tmp_path / "missing") is None  # the loader says what is missing


def test_duration_and_age_formatting() -> None:
    assert [format_duration(s) for s in (300, 7200, 86400, 90, -1, 0.5)] == ["5m", "2h", "1d", "90s", "forever", "0.5s"]
    now = 1_000_000.0
    assert format_ago(None) == "never"
    assert format_ago(now + 10, now) == "in the future"
    assert format_ago(now - 10, now) == "just now"
    assert format_ago(now - 50, now) == "1 minute ago"
    assert format_ago(now - 3 * 3600, now) == "3 hours ago"
    assert format_ago(now - 86400, now) == "1 day ago"


def test_core_loggers_are_stdlib_loggers_and_records_reach_handlers(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from provender._log import get_logger

    logger = get_logger("provender.some.module")
    assert logger is logging.getLogger("provender.some.module")
    with caplog.at_level(logging.INFO, logger="provender.some.module"):
        logger.info("loaded %s", "x")
        logger.warning("careful")
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("provender.some.module", "INFO", "loaded x"),
        ("provender.some.module", "WARNING", "careful"),
    ]


def test_held_back_core_records_are_quiet_and_others_are_not() -> None:
    import subprocess
    import sys

    code = (
        "from provender import _log; _log.hold_back(); "
        "_log.get_logger('provender._plugins').warning('dropped'); "
        "_log.get_logger('provender_pkg').warning('a package: printed')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "dropped" not in out.stderr and "a package: printed" in out.stderr
