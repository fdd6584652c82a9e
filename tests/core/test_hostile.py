"""Hostile input: links planted inside the cache, tampered files, fuzzed names. Nothing outside is touched."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fakehub import FakeHub
from provender import CacheManager, InvalidNameError
from provender._cache._manager import MANIFEST
from provender._cache._names import check_key, check_name


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory outside the cache holding a file that must survive every test unchanged."""
    root = tmp_path / "outside"
    root.mkdir()
    (root / "precious.txt").write_text("do not touch")
    return root


def intact(outside: Path) -> bool:
    return (outside / "precious.txt").read_text() == "do not touch"


def test_link_planted_as_an_entry_is_never_followed(cache_dir: Path, outside: Path) -> None:
    cm = CacheManager(cache_dir, max_size=10_000)
    (cache_dir / "objects" / "evil").symlink_to(outside)
    (outside / MANIFEST).write_text(
        json.dumps({"key": "evil", "name": "evil", "files": {"precious.txt": {"size": 12}}, "created": 0})
    )
    assert cm.entries() == [] and not (cache_dir / "objects" / "evil").exists()
    cm.cleanup_old_models(max_size=0)
    assert intact(outside) and (outside / MANIFEST).exists()


def test_file_swapped_for_a_link_in_an_entry(cache_dir: Path, outside: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10_000)
    entry = cm.import_model(make_files("m", {"w.bin": 100}), "org/m", link_mode="copy")
    (entry.path / "w.bin").unlink()
    (entry.path / "w.bin").symlink_to(outside / "precious.txt")
    [issue] = cm.verify()
    assert "symbolic link" in issue.problem
    cm.verify(fix=True)
    assert cm.find("org/m") is None and intact(outside)


def test_tampered_manifest_cannot_reach_outside(cache_dir: Path, outside: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10_000)
    entry = cm.import_model(make_files("m", {"w.bin": 100}), "org/m", link_mode="copy")
    manifest = json.loads((entry.path / MANIFEST).read_text())
    rel = os.path.relpath(outside / "precious.txt", entry.path)
    manifest["files"] = {rel: {"size": 12}}
    (entry.path / MANIFEST).write_text(json.dumps(manifest))
    [issue] = cm.verify()
    assert "outside" in issue.problem
    cm.verify(fix=True)
    assert intact(outside) and cm.find("org/m") is None


def test_hub_blob_and_snapshot_links_pointing_outside(cache_dir: Path, outside: Path, fake_hub: FakeHub) -> None:
    weights = os.urandom(500)
    fake_hub.add("org/tiny", {"config.json": b"{}", "model.safetensors": weights})
    cm = CacheManager(cache_dir, max_size=10**6)
    entry = cm.fetch("org/tiny", progress=False, endpoint=fake_hub.endpoint)
    blob = entry.path / "blobs" / hashlib.sha256(weights).hexdigest()
    blob.unlink()
    blob.symlink_to(outside / "precious.txt")  # a blob swapped for a link to a file outside
    (entry.model_path / "config.json").unlink()
    (entry.model_path / "config.json").symlink_to(outside / "precious.txt")  # a snapshot link leaving the repo
    problems = sorted(i.problem for i in cm.verify())
    assert problems == ["a blob that is a symbolic link", "snapshot link points outside the cache"]
    cm.verify(fix=True)
    assert intact(outside) and not blob.is_symlink() and not (entry.model_path / "config.json").is_symlink()


def test_hub_repo_folder_that_is_a_link(cache_dir: Path, outside: Path) -> None:
    cm = CacheManager(cache_dir, max_size=10_000)
    (cache_dir / "hub" / "models--org--evil").symlink_to(outside)
    assert cm.entries() == []
    cm.cleanup_old_models(max_size=0)
    assert intact(outside)


def test_missing_blob_and_dangling_link_are_reported(cache_dir: Path, fake_hub: FakeHub) -> None:
    fake_hub.add("org/tiny", {"config.json": b"{}", "model.safetensors": os.urandom(300)})
    cm = CacheManager(cache_dir, max_size=10**6)
    entry = cm.fetch("org/tiny", progress=False, endpoint=fake_hub.endpoint)
    [blob] = [b for b in (entry.path / "blobs").iterdir() if len(b.name) == 64]
    blob.unlink()
    [issue] = cm.verify()
    assert issue.problem == "snapshot link points at a missing blob"
    cm.verify(fix=True)
    assert cm.verify() == []


def test_files_are_not_world_writable(cache_dir: Path, make_files, fake_hub: FakeHub) -> None:  # type: ignore[no-untyped-def]
    code = f"""
import os, sys
os.umask(0o022)
from provender import CacheManager
cm = CacheManager({str(cache_dir)!r}, max_size=10**9)
cm.import_model({str(make_files("m", {"w": 10}))!r}, "org/m", link_mode="copy")
cm.pin("org/m"); cm.acquire("org/m").release(); cm.verify(); cm.stats()
"""
    subprocess.run([sys.executable, "-c", code], check=True)
    for root, dirs, files in os.walk(cache_dir):
        for name in dirs + files:
            mode = os.lstat(os.path.join(root, name)).st_mode
            assert not mode & stat.S_IWOTH, f"{os.path.join(root, name)} is world-writable ({oct(mode)})"


@given(st.text(max_size=60))
def test_fuzz_names_stay_inside(name: str) -> None:
    base = "/cache/objects"
    for check in (check_name, check_key):
        try:
            accepted = check(name)
        except InvalidNameError:
            continue
        joined = os.path.normpath(os.path.join(base, accepted))
        assert joined.startswith(base + os.sep) and "\x00" not in accepted
        assert accepted.isascii() and ".." not in accepted.split("/")


@given(st.lists(st.sampled_from(["..", ".", "a", "b.c", "/", "\\", "\x00", "é", "-", "_", "~"]), max_size=8))
def test_fuzz_path_like_names(parts: list[str]) -> None:
    name = "".join(parts)
    try:
        check_name(name)
    except InvalidNameError:
        return
    assert not name.startswith(("/", "\\", ".", "-", "_")) and ".." not in name and "\x00" not in name


@pytest.mark.parametrize(
    "name, error",
    [
        ("a" * 300, "invalid name 'aaaa"),  # a name no entry can have: it was "unexpected OSError" (ENAMETOOLONG)
        ("org/" + "b" * 300, "invalid name 'org/bbbb"),
        ("./" + "c" * 300, "no such file or directory: './cccc"),  # a path too long for the filesystem
        ("é" * 150, "not found"),  # 150 characters, 300 bytes: too long for a file name, short enough for a name
    ],
)
def test_a_model_name_too_long_for_a_path_is_one_line_naming_it(cache_dir: Path, name: str, error: str) -> None:
    from provender import ProvenderError
    from provender._resolve import resolve_provider

    with pytest.raises(ProvenderError) as info:
        resolve_provider(name, cache=CacheManager(cache_dir, max_size=10_000, remote=None))
    message = str(info.value)
    assert error in message and "\n" not in message and "Errno" not in message, message
