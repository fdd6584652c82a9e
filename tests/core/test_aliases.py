"""Aliases in the cache (`provender._cache._aliases`): one more name for an entry, on disk in aliases.json.

An alias resolves wherever a name does, survives a rebuilt index, removing it never removes the
entry, an entry that aliases name is not removed from under them, and names that could not be
told from a key or an entry's own name are refused. The CLI (`cache alias`, `cache rm ALIAS`)
is run as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from provender import CacheManager
from provender.errors import EntryExistsError, EntryInUseError, EntryNotFoundError, InvalidNameError, UnsafeCacheError


def test_an_alias_resolves_and_survives_a_rebuilt_index(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10_000, remote=None)
    entry = cm.import_model(make_files("m", {"w": 100}), "org/model")
    assert cm.alias("org/model", "mine:v2").key == entry.key
    assert cm.get("mine:v2").key == entry.key and cm.find("mine:v2:latest") is not None
    cm.alias("mine:v2", "other")  # an alias of an alias names the entry itself
    assert {a: e.key for a, e in cm.aliases().items()} == {"mine:v2": entry.key, "other": entry.key}
    with cm.acquire("other") as held:
        assert held.key == entry.key
    # the index is unreadable: set aside and rebuilt from the files; the aliases file is not part of it
    cm._index.close()
    del cm
    for extra in ("index.db-wal", "index.db-shm"):
        (cache_dir / extra).unlink(missing_ok=True)
    (cache_dir / "index.db").write_bytes(b"not a database at all" * 10)
    again = CacheManager(cache_dir, max_size=10_000, remote=None)
    assert list(cache_dir.glob("index.db.corrupt-*"))
    assert again.get("mine:v2").key == entry.key and sorted(again.aliases()) == ["mine:v2", "other"]
    assert json.loads((cache_dir / "aliases.json").read_text())["aliases"]["other"]["name"] == "org/model"
    assert not os.listdir(cache_dir / "tmp")  # the staged file was renamed into place, nothing left over


def test_removing_an_alias_keeps_the_entry_and_an_aliased_entry_is_not_removed(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10_000, remote=None)
    entry = cm.import_model(make_files("m", {"w": 100}), "org/model")
    cm.alias("org/model", "nick")
    with pytest.raises(EntryInUseError, match=r"aliases name it \(nick\)"):
        cm.remove("org/model")
    with pytest.raises(EntryInUseError):
        cm.remove(entry.key, dry_run=True)
    assert cm.remove("nick", dry_run=True).key == entry.key and "nick" in cm.aliases()  # dry run: kept
    assert cm.remove("nick").key == entry.key  # only the alias goes
    assert cm.find("nick") is None and cm.get("org/model").path.exists() and cm.aliases() == {}
    cm.alias("org/model", "nick2")
    assert cm.unalias("nick2") == entry.key
    with pytest.raises(EntryNotFoundError):
        cm.unalias("nick2")
    cm.remove("org/model")  # no alias left: the entry goes
    assert cm.find("org/model") is None


def test_an_evicted_entry_keeps_its_alias_until_it_comes_back(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10_000, remote=None)
    cm.cache_model(make_files("k", {"w": 50}), "k1", name="keyed")
    cm.alias("k1", "short")
    cm.prune(0)  # eviction is not a removal the user asked for: the alias stays, and names nothing meanwhile
    assert cm.find("short") is None and cm.aliases() == {}
    cm.cache_model(make_files("k2", {"w": 60}), "k1", name="keyed")
    assert cm.get("short").size == 60


@pytest.mark.parametrize(
    ("alias", "error"),
    [
        ("org/model", EntryExistsError),  # an entry's own name
        ("../../etc", InvalidNameError),
        ("/abs", InvalidNameError),
        ("a/b/c", InvalidNameError),
        ("deadbeef", InvalidNameError),  # reads as a key prefix
        ("x:y:z", InvalidNameError),
        ("x:", InvalidNameError),
        ("caf\u00e9", InvalidNameError),
        ("n\x00ul", InvalidNameError),
        ("", InvalidNameError),
    ],
)
def test_bad_aliases_are_refused(cache_dir: Path, make_files, alias: str, error: type[Exception]) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10_000, remote=None)
    cm.import_model(make_files("m", {"w": 10}), "org/model")
    with pytest.raises(error):
        cm.alias("org/model", alias)
    with pytest.raises(EntryNotFoundError):
        cm.alias("no/such", "fine")
    assert cm.aliases() == {}


def test_a_damaged_or_planted_aliases_file(cache_dir: Path, make_files, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10_000, remote=None)
    cm.import_model(make_files("m", {"w": 10}), "org/model")
    (cache_dir / "aliases.json").write_text("{broken")
    assert cm.aliases() == {} and cm.find("anything") is None  # unreadable: no aliases, a warning
    cm.alias("org/model", "fresh")  # the next change writes a good file
    assert sorted(cm.aliases()) == ["fresh"]
    kept = list(cache_dir.glob("aliases.json.corrupt-*"))  # the damaged one set aside, not overwritten
    assert len(kept) == 1 and kept[0].read_text() == "{broken"
    (cache_dir / "aliases.json").unlink()
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"version": 1, "aliases": {"x": {"key": "k", "name": "n"}}}))
    (cache_dir / "aliases.json").symlink_to(elsewhere)
    with pytest.raises(UnsafeCacheError):
        cm.aliases()  # a link where provender keeps its file is refused, never followed
    assert elsewhere.read_text().startswith("{")


def provender(cache_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PROVENDER_CACHE__DIR": str(cache_dir)}
    return subprocess.run(
        [sys.executable, "-m", "provender", *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_the_cli(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    src = make_files("m", {"echo.json": json.dumps({"provider": "echo", "mode": "upper"}).encode()})
    CacheManager(cache_dir, max_size="1GB", remote=None).import_model(src, "test/echo")
    made = provender(cache_dir, "cache", "alias", "test/echo", "shout")
    assert made.returncode == 0 and "shout -> test/echo" in made.stdout, made.stderr
    listed = provender(cache_dir, "cache", "alias", "--json")
    assert [row["alias"] for row in json.loads(listed.stdout)] == ["shout"]
    said = provender(cache_dir, "generate", "-m", "shout", "hello there")
    assert said.returncode == 0 and said.stdout.strip() == "HELLO THERE", said.stderr
    # the colon rule: "shout" and "test/echo" name no provider, so the whole name is the model's
    assert provender(cache_dir, "cache", "alias", "test/echo", "shout:v2").returncode == 0
    for name in ("shout:v2", "shout:latest", "test/echo:latest", "echo:shout:v2"):
        said = provender(cache_dir, "generate", "--no-server", "-m", name, "tagged")
        assert said.returncode == 0 and said.stdout.strip() == "TAGGED", (name, said.stderr)
    said = provender(cache_dir, "generate", "--no-server", "-m", "nosuch:v2", "x")  # neither a provider nor cached
    assert said.returncode == 2 and "no provider named 'nosuch'" in said.stderr and "Traceback" not in said.stderr
    assert "nor is 'nosuch:v2' a cached model's name" in said.stderr  # both readings of the colon are told
    said = provender(cache_dir, "generate", "--no-server", "-m", "shout:v3", "x")  # a tag (repo:QUANT) shout lacks
    assert said.returncode == 1 and "'shout:v3' not found" in said.stderr and said.stderr.count("Error") == 1
    assert provender(cache_dir, "cache", "rm", "-y", "shout:v2").returncode == 0
    bad = provender(cache_dir, "cache", "alias", "test/echo", "../x")
    assert bad.returncode == 2 and "invalid name" in bad.stderr and "Traceback" not in bad.stderr
    missing = provender(cache_dir, "cache", "alias", "no/such", "x")
    assert missing.returncode == 1 and "no/such" in missing.stderr
    refused = provender(cache_dir, "cache", "rm", "-y", "test/echo")
    assert refused.returncode == 1 and "aliases name it" in refused.stderr
    gone = provender(cache_dir, "cache", "rm", "-y", "shout")
    assert gone.returncode == 0 and "removed alias shout" in gone.stdout
    assert CacheManager(cache_dir, max_size="1GB", remote=None).get("test/echo").path.exists()
