"""Hostile content in the remote tier (issue 19 items 5, 6, 8): a manifest that says a size of 10**18
or 10**400, a path longer than a filesystem takes, a ``pushed_at`` of 1e300, a newline in a name.
Any error that comes from the tier's content is a tier error: the pull warns once and falls back to
the Hub, `remote ls` lists the rest. And a GGUF quantisation pulled offline is chosen from the tier's
manifest. Each test failed before its fix."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from test_tier import dead_endpoint

from fakehub import FakeHub
from helpers import run_cli
from provender import CacheManager, RemoteTier

FALLBACK = "getting org/model from the Hub instead"


@pytest.fixture
def hub() -> Any:
    h = FakeHub()
    h.add("org/model", {"config.json": b"{}", "sub/w.safetensors": b"w" * 5000, "tok.json": b'{"a": 0}'})
    h.add("org/other", {"config.json": b'{"other": 1}'})
    yield h
    h.close()


def _manifest(tier_path: Path, cm: CacheManager, name: str) -> Path:
    (path,) = (tier_path / "entries" / cm.get(name).key).glob("*.json")
    return path


def _tampered(good: dict[str, Any], case: str) -> str:
    first, rest = good["files"][0], good["files"][1:]
    if case == "size 10**18":  # a valid integer, larger than the cache limit: it was "larger than the cache limit"
        return json.dumps({**good, "files": [{**first, "size": 10**18}, *rest]})
    if case == "size 10**400":  # it was "unexpected OverflowError"
        return json.dumps({**good, "files": [{**first, "size": 10**400}, *rest]})
    if case == "an over-long path":  # every name 200 bytes, 5 KB in all: it was "unexpected OSError" (ENAMETOOLONG)
        return json.dumps({**good, "files": [{**first, "path": "/".join(["d" * 200] * 25)}, *rest]})
    if case == "nested 100,000 deep":  # json's RecursionError
        return "[" * 100_000 + "]" * 100_000
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["size 10**18", "size 10**400", "an over-long path", "nested 100,000 deep"])
def test_a_hostile_manifest_is_a_tier_error_the_pull_warns_once_and_the_hub_serves_it(
    file_tier: Any, hub: FakeHub, tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    a = CacheManager(tmp_path / "a", "1GB", remote=RemoteTier(file_tier.url))
    a.pull("org/model", endpoint=hub.endpoint, progress=False)
    path = _manifest(file_tier.path, a, "org/model")
    good = json.loads(path.read_text())
    path.write_text(_tampered(good, case))
    b = CacheManager(tmp_path / "b", "1GB", remote=RemoteTier(file_tier.url))
    with caplog.at_level(logging.WARNING, logger="provender"):
        got = b.pull("org/model", endpoint=hub.endpoint, progress=False)  # it used to raise
    assert got.source == "hub" and len(got.warnings) == 1 and FALLBACK in got.warnings[0], got.warnings
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1 and file_tier.url in said[0] and len(said[0]) < 500, said  # once, one short line
    assert b.verify() == [] and (got.entry.model_path / "sub" / "w.safetensors").read_bytes() == b"w" * 5000
    assert b.stats().remote_errors == 1 and list((tmp_path / "b" / "tmp").iterdir()) == []
    assert json.loads(path.read_text())["files"] == good["files"]  # the write-through put the right one back


def test_a_manifest_larger_than_the_cache_limit_offline_says_why(file_tier: Any, hub: FakeHub, tmp_path: Path) -> None:
    a = CacheManager(tmp_path / "a", "1GB", remote=RemoteTier(file_tier.url))
    a.pull("org/model", endpoint=hub.endpoint, progress=False)
    path = _manifest(file_tier.path, a, "org/model")
    path.write_text(_tampered(json.loads(path.read_text()), "size 10**18"))
    r = run_cli(
        "pull",
        "org/model",
        env={
            "PROVENDER_CACHE__DIR": str(tmp_path / "b"),
            "PROVENDER_REMOTE__URL": file_tier.url,
            "HF_ENDPOINT": dead_endpoint(),
            "HF_HUB_OFFLINE": "1",
        },
    )
    assert r.returncode == 1, r
    lines = [line for line in r.stderr.strip().splitlines() if not line.startswith("warning: plugin")]
    assert "Traceback" not in r.stderr and len(lines) == 2, r.stderr
    assert (
        "larger than the cache limit" in lines[0] and FALLBACK in lines[0]
    )  # the one warning: why the tier was not used
    assert lines[1].startswith("Error: model 'org/model' not found: the remote tier") and "not in the cache" in lines[1]


def test_remote_ls_lists_the_rest_and_no_manifest_forges_a_row(
    file_tier: Any, hub: FakeHub, tmp_path: Path, make_env: Any
) -> None:
    cm = CacheManager(tmp_path / "a", "1GB", remote=RemoteTier(file_tier.url))
    for name in ("org/model", "org/other"):
        cm.pull(name, endpoint=hub.endpoint, progress=False)
    path = _manifest(file_tier.path, cm, "org/other")
    good = json.loads(path.read_text())
    env = make_env(tmp_path / "a", file_tier)
    for bad, why in (
        ({"pushed_at": 1e300}, "pushed_at 1e+300 is not a time"),  # it was "unexpected OverflowError" (or ValueError)
        ({"pushed_at": float("nan")}, "pushed_at nan is not a time"),
        ({"files": [{**good["files"][0], "size": 10**400}]}, "is not a file size"),  # an OverflowError in the table
        ({"name": "org/other\nevil/x  hub  main  1  1.0 TB  2020-01-01 00:00 UTC"}, "is not printable"),  # a forged row
        ({"kind": "hub\r\x1b[2K"}, "is not printable"),  # a terminal's escape
    ):
        path.write_text(json.dumps({**good, **bad}))
        r = run_cli("remote", "ls", env=env)
        assert r.returncode == 0, r
        rows = r.stdout.splitlines()
        assert rows[0].split()[0] == "NAME" and [row.split()[0] for row in rows[1:-1]] == ["org/model"], r.stdout
        assert rows[-1].startswith("1 entry,") and "evil" not in r.stdout
        warned = [line for line in r.stderr.splitlines() if line.startswith("warning: remote tier")]
        assert len(warned) == 1 and why in warned[0] and "\n" not in warned[0], (
            r.stderr
        )  # once, though two refs name it
        listed = json.loads(run_cli("remote", "ls", "--json", env=env).stdout)
        assert [e["name"] for e in listed["entries"]] == ["org/model"]
    path.write_text(json.dumps(good))
    ref = file_tier.path / "entries" / cm.get("org/other").key / "refs"
    (ref / "main%0Aevil%20row").write_text((ref / "main").read_text())  # a revision with a newline: that ref only
    listed = json.loads(run_cli("remote", "ls", "--json", env=env).stdout)
    assert sorted((e["name"], e["revision"]) for e in listed["entries"]) == [
        ("org/model", "main"),
        ("org/other", "main"),
    ]


# -- item 6: a GGUF quantisation offline, chosen from the tier's manifest ------------------------


def test_a_gguf_quantisation_pulled_offline_is_chosen_from_the_tier(
    file_tier: Any, tmp_path: Path, make_env: Any
) -> None:
    files = {"README.md": b"# tiny", "tiny-Q8_0.gguf": b"GGUF" + b"8" * 3000, "tiny-Q4_K_M.gguf": b"GGUF" + b"4" * 2000}
    hub = FakeHub()
    hub.add("org/tiny-GGUF", files)
    hub.add("org/part-GGUF", files)
    try:
        writer = CacheManager(tmp_path / "a", "1GB", remote=RemoteTier(file_tier.url))
        writer.pull("org/tiny-GGUF", endpoint=hub.endpoint, progress=False)  # the whole repo in the tier
        writer.pull("org/part-GGUF:Q8_0", endpoint=hub.endpoint, progress=False)  # only Q8_0: a partial snapshot
    finally:
        hub.close()
    for n, name in enumerate(("org/tiny-GGUF:Q8_0", "org/part-GGUF:Q8_0", "org/tiny-GGUF:q4_k_m")):
        env = make_env(tmp_path / f"b{n}", file_tier, dead_endpoint(), HF_HUB_OFFLINE="1")
        r = run_cli("pull", "--json", name, env=env)
        assert r.returncode == 0, r  # it was "not in the cache, and HF_HUB_OFFLINE is set"
        got = json.loads(r.stdout)
        quant = "Q8_0" if "Q8" in name else "Q4_K_M"
        assert got["source"] == "remote" and got["bytes_from_remote"] == len(files[f"tiny-{quant}.gguf"])
        assert sorted(p.name for p in Path(got["model_path"]).iterdir()) == [f"tiny-{quant}.gguf"]
    env = make_env(tmp_path / "c", file_tier, dead_endpoint(), HF_HUB_OFFLINE="1")
    r = run_cli("pull", "org/part-GGUF:Q4_K_M", env=env)  # the tier has only Q8_0 of it: says what it offers
    assert r.returncode == 1 and "Q8_0" in r.stderr and "Traceback" not in r.stderr, r
    r = run_cli("pull", "org/none-GGUF:Q8_0", env=env)
    assert r.returncode == 1 and f"not in the remote tier {file_tier.url}" in r.stderr, r


def test_an_only_copy_written_through_leaves_its_path_at_home_and_is_evictable_where_pulled(
    file_tier: Any, tmp_path: Path
) -> None:
    from provender._cache._eviction import only_copy

    src = tmp_path / "secret-home" / "finetune"
    src.mkdir(parents=True)
    (src / "w.bin").write_bytes(b"w" * 3000)
    a = CacheManager(tmp_path / "a", "1GB", remote=RemoteTier(file_tier.url))
    entry = a.import_model(src, "me/finetune", link_mode="move")
    assert only_copy(entry) is not None  # on this machine, the only copy (issue 19 item 10)
    (manifest,) = (file_tier.path / "entries" / entry.key).glob("*.json")
    assert "secret-home" not in manifest.read_text()  # no local path in the shared tier
    b = CacheManager(tmp_path / "b", "1GB", remote=RemoteTier(file_tier.url))
    got = b.pull("me/finetune", progress=False)
    assert got.source == "remote" and only_copy(got.entry) is None  # the tier has it: evicted as any other
