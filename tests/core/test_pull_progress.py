"""`CacheManager.pull` with a progress callable, from the Hub (tests/fakehub.py, a real HTTP server that
huggingface_hub downloads from): told (bytes so far, bytes in all) at the start and as each file's bytes
are written, counting what is cached already; and a pull of an alias, which is its entry (cached:
nothing downloaded) or, its entry evicted, a ModelNotFoundError naming the entry to pull again."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fakehub import FakeHub
from provender import CacheManager, ModelNotFoundError


def test_a_hub_pull_tells_its_bytes_as_they_are_written(cache_dir: Path, fake_hub: FakeHub) -> None:
    files = {"config.json": b"{}", **{f"w{i}.bin": os.urandom(1000 * (i + 1)) for i in range(4)}}
    total = sum(len(data) for data in files.values())
    fake_hub.add("org/m", files)
    cm = CacheManager(cache_dir, max_size=10**6, remote=None)
    told: list[tuple[int, int]] = []
    result = cm.pull("org/m", progress=lambda done, whole: told.append((done, whole)), endpoint=fake_hub.endpoint)
    assert result.source == "hub" and result.entry.size == total
    done = [d for d, _ in told]
    assert told[0] == (0, total) and told[-1] == (total, total) and {w for _, w in told} == {total}
    assert done == sorted(done) and len(set(done)) == len(files) + 1, told  # the start, then each file

    # part of the repo cached: the start counts it, and only the rest arrives
    fake_hub.add("org/n", files)
    cm.pull("org/n", allow_patterns=["w3.bin"], progress=False, endpoint=fake_hub.endpoint)
    told.clear()
    cm.pull("org/n", progress=lambda done, whole: told.append((done, whole)), endpoint=fake_hub.endpoint)
    assert told[0] == (len(files["w3.bin"]), total) and told[-1] == (total, total), told
    assert fake_hub.downloads.count("org/n/w3.bin") == 1

    told.clear()  # all cached: one report of the whole, nothing fetched
    before = len(fake_hub.downloads)
    cm.pull("org/n", progress=lambda done, whole: told.append((done, whole)), endpoint=fake_hub.endpoint)
    assert told == [(total, total)] and len(fake_hub.downloads) == before


def test_pulling_an_alias_is_its_entry(cache_dir: Path, fake_hub: FakeHub, make_files) -> None:  # type: ignore[no-untyped-def]
    fake_hub.add("org/shadowed", {"w.bin": os.urandom(100)})  # a Hub repo an alias's name hides
    cm = CacheManager(cache_dir, max_size=10**6, remote=None)
    entry = cm.import_model(make_files("m", {"w": 100}), "org/model")
    for alias in ("mine", "mine:v2", "org/shadowed"):
        cm.alias("org/model", alias)
    told: list[tuple[int, int]] = []
    for name in ("mine", "mine:latest", "mine:v2", "org/shadowed"):
        result = cm.pull(name, progress=lambda d, w: told.append((d, w)), endpoint=fake_hub.endpoint)
        assert result.source == "cache" and result.entry.key == entry.key, name
    assert fake_hub.requests == 0 and told == [] and cm.find("org/shadowed") == cm.get("org/model")
    # with options that ask for particular files, the name is a Hub repo's again
    assert cm.pull("org/shadowed", revision="main", progress=False, endpoint=fake_hub.endpoint).source == "hub"
    cm.prune(0)  # evicted (the aliases stay): a pull of an alias names the entry to pull again
    with pytest.raises(ModelNotFoundError, match="alias of org/model"):
        cm.pull("mine:v2", progress=False, endpoint=fake_hub.endpoint)
    assert "mine:v2" not in cm.aliases()
