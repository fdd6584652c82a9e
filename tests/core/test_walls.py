"""Issue 15, "the cache stays inside its walls": planted links, foreign folders, full disks, other users, races.

Every test plants or provokes the attack for real (links, a tmpfs filled to 0 bytes, an
unprivileged user, concurrent processes) and checks that nothing outside the cache
changed and nothing inside was lost. No filesystem call is mocked.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fakehub import FakeHub
from helpers import run_cli
from provender import (
    CacheError,
    CacheManager,
    DiskFullError,
    EntryInUseError,
    EntryNotFoundError,
    EntryTooLargeError,
)
from provender._cache._layout import DIRS, MARK, TAG
from provender.errors import NotACacheError, SourceInCacheError, UnsafeCacheError

BLOB = "a" * 64  # a file named like a Hub blob


def snapshot(root: Path) -> dict[str, str]:
    """Every file, link and folder under `root` with its content hash or target (to prove nothing changed)."""
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


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A user's folder outside the cache, full of things provender must never touch."""
    root = tmp_path / "project"
    for rel in (
        "Gemfile",
        "Gemfile.lock",
        "Pipfile",
        "Pipfile.lock",
        BLOB,
        f"{BLOB}.lease",
        "notes.txt",
        "sub/deep.txt",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"user data {rel}")
    (root / "session").mkdir()
    (root / "session" / "x").write_text("x")
    (root / "dirlike").mkdir()
    return root


def one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


# -- item 1: which folder is a cache -------------------------------------------------------


def test_a_new_cache_is_marked(cache_dir: Path) -> None:
    CacheManager(cache_dir, max_size=1000)
    assert (cache_dir / MARK).is_file()
    assert (cache_dir / TAG).read_text().startswith("Signature: 8a477f597d28d172789f06886806bc55")


def test_a_foreign_folder_is_refused_and_left_untouched(outside: Path) -> None:
    for name in ("trash", "objects", "pins", "tmp"):  # what `PROVENDER_CACHE__DIR=~` used to empty
        (outside / name).mkdir()
        (outside / name / "keep.txt").write_text("mine")
    (outside / "tmp" / "session").mkdir()
    (outside / "tmp" / "session.lock").write_text("")
    before = snapshot(outside)
    with pytest.raises(NotACacheError, match="not a provender cache"):
        CacheManager(outside, max_size=1000)
    for args in (["cache", "ls"], ["cache", "prune", "-y", "--max-size", "0"], ["cache", "verify", "--fix"]):
        line = one_line_error(run_cli(*args, env={"PROVENDER_CACHE__DIR": str(outside)}), 2)
        assert "not a provender cache" in line and MARK in line
    assert snapshot(outside) == before


def test_a_folder_holding_only_hub_downloads_is_adopted(tmp_path: Path) -> None:
    """`hf download --cache-dir DIR/hub` before provender first ran: that is provender's own layout."""
    root = tmp_path / "cache"
    snap = root / "hub" / "models--org--m" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (root / "hub" / ".locks").mkdir()
    cm = CacheManager(root, max_size=10_000)
    assert (root / MARK).is_file() and (snap / "config.json").read_text() == "{}"
    del cm
    other = tmp_path / "other"  # a hub/ that also holds something else is not adopted
    (other / "hub" / "models--org--m").mkdir(parents=True)
    (other / "hub" / "notes.txt").write_text("mine")
    with pytest.raises(NotACacheError, match="not a provender cache"):
        CacheManager(other, max_size=1000)
    assert not (other / MARK).exists()


def test_an_old_unmarked_cache_is_adopted(cache_dir: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10_000)
    cm.import_model(make_files("m", {"w.bin": 100}), "org/m")
    del cm
    (cache_dir / MARK).unlink()  # as the previous version left it
    (cache_dir / TAG).unlink()
    (cache_dir / "pending").rmdir()
    cm = CacheManager(cache_dir, max_size=10_000)
    assert [e.name for e in cm.entries()] == ["org/m"] and (cache_dir / MARK).is_file()


def test_cache_dir_that_is_a_file_or_a_dangling_link(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(NotACacheError, match="is a file"):
        CacheManager(tmp_path / "file", max_size=1)
    with pytest.raises(NotACacheError, match="does not exist"):
        CacheManager(tmp_path / "dangling", max_size=1)
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("name", DIRS)
def test_owned_folder_replaced_by_a_link(cache_dir: Path, outside: Path, name: str, make_files) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10_000)
    cm.import_model(make_files("m", {"w.bin": 100}), "org/m")
    before = snapshot(outside)
    shutil.rmtree(cache_dir / name)
    (cache_dir / name).symlink_to(outside)
    # a running manager meets it at its next step; a new one refuses to start
    for step in (cm.entries, lambda: cm.cleanup_old_models(max_size=0), lambda: cm.remove("org/m"), cm.verify):
        try:
            step()
        except CacheError as exc:  # refused (a link) or not found (its folder is not followed): never a raw error
            assert isinstance(exc, UnsafeCacheError | EntryNotFoundError), exc
    with pytest.raises(UnsafeCacheError, match=f"{name}.*symbolic link"):
        CacheManager(cache_dir, max_size=10_000)
    line = one_line_error(run_cli("cache", "ls", env={"PROVENDER_CACHE__DIR": str(cache_dir)}), 1)
    assert str(cache_dir / name) in line
    assert snapshot(outside) == before


@pytest.mark.parametrize("name", [".lock", "index.db", "index.db-wal", "index.db-shm", MARK])
def test_owned_file_replaced_by_a_link(cache_dir: Path, outside: Path, name: str) -> None:
    import sqlite3

    CacheManager(cache_dir, max_size=10_000)
    other = outside / "other.db"  # another program's SQLite file
    sqlite3.connect(other).executescript("CREATE TABLE mine (x); INSERT INTO mine VALUES (1);")
    before = snapshot(outside)
    path = cache_dir / name
    path.unlink(missing_ok=True)
    path.symlink_to(other)
    with pytest.raises(UnsafeCacheError, match="symbolic link"):
        CacheManager(cache_dir, max_size=10_000)
    one_line_error(run_cli("cache", "stats", env={"PROVENDER_CACHE__DIR": str(cache_dir)}), 1)
    assert snapshot(outside) == before


def test_pin_and_lease_links_are_refused(cache_dir: Path, outside: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cm = CacheManager(cache_dir, max_size=10_000)
    entry = cm.import_model(make_files("m", {"w.bin": 100}), "org/m")
    before = snapshot(outside)
    (cache_dir / "pins" / entry.key).symlink_to(outside / "created-by-pin")
    with pytest.raises(UnsafeCacheError, match="symbolic link"):
        cm.pin("org/m")
    assert not (outside / "created-by-pin").exists()
    (cache_dir / "pins" / entry.key).unlink()
    (cache_dir / "locks" / f"{entry.key}.lease").unlink(missing_ok=True)
    (cache_dir / "locks" / f"{entry.key}.lease").symlink_to(outside / f"{BLOB}.lease")
    env = {"PROVENDER_CACHE__DIR": str(cache_dir)}
    line = one_line_error(run_cli("cache", "rm", "-y", "org/m", env=env), 1)
    assert f"{entry.key}.lease" in line and "symbolic link" in line
    with pytest.raises(UnsafeCacheError):
        cm.acquire("org/m")
    assert snapshot(outside) == before


def test_cache_dir_swapped_while_in_use(tmp_path: Path, outside: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cache_dir = tmp_path / "cache"
    cm = CacheManager(cache_dir, max_size=10_000)
    cm.import_model(make_files("m", {"w.bin": 100}), "org/m")
    for name in DIRS:  # the foreign folder even looks like a cache inside
        (outside / name).mkdir(exist_ok=True)
        (outside / name / "keep.txt").write_text("mine")
    before = snapshot(outside)
    cache_dir.rename(tmp_path / "moved-away")
    cache_dir.symlink_to(outside)
    for step in (cm.entries, lambda: cm.cleanup_old_models(max_size=0), lambda: cm.remove("org/m")):
        with pytest.raises(UnsafeCacheError, match=r"replaced|not a provender"):
            step()
    with pytest.raises(NotACacheError):
        CacheManager(cache_dir, max_size=10_000)
    assert snapshot(outside) == before
    assert (tmp_path / "moved-away" / "objects").is_dir()


# -- item 2: Hub repos, links at every depth ----------------------------------------------------


def pulled(cache_dir: Path, hub: FakeHub, repo: str = "org/small") -> tuple[CacheManager, Path]:
    hub.add(repo, {"config.json": b'{"a": 1}', "model.safetensors": os.urandom(400), "sub/extra.bin": os.urandom(50)})
    cm = CacheManager(cache_dir, max_size=10**6)
    entry = cm.fetch(repo, progress=False, endpoint=hub.endpoint)
    return cm, entry.path


DEPTHS = ["repo", "blobs", "snapshots", "refs", "commit", "subfolder", "blob", "ref", "snapshot-file"]


@pytest.mark.parametrize("depth", DEPTHS)
def test_hub_links_at_every_depth_never_lead_outside(
    cache_dir: Path, outside: Path, fake_hub: FakeHub, depth: str
) -> None:
    cm, repo = pulled(cache_dir, fake_hub)
    other_hf = outside / "other-hf" / "models--x--y"  # another Hugging Face cache, with its own links
    (other_hf / "blobs").mkdir(parents=True)
    (other_hf / "blobs" / BLOB).write_text("their blob")
    (other_hf / "snapshots" / "c0ffee").mkdir(parents=True)
    (other_hf / "snapshots" / "c0ffee" / "config.json").symlink_to(f"../../blobs/{BLOB}")
    [commit] = list((repo / "snapshots").iterdir())
    blob = next(p for p in (repo / "blobs").iterdir() if len(p.name) == 64)
    target, where = {
        "repo": (outside, repo),
        "blobs": (outside, repo / "blobs"),
        "snapshots": (other_hf / "snapshots", repo / "snapshots"),
        "refs": (outside, repo / "refs"),
        "commit": (other_hf / "snapshots" / "c0ffee", commit),
        "subfolder": (outside / "sub", commit / "sub"),
        "blob": (outside / BLOB, blob),
        "ref": (outside / "notes.txt", repo / "refs" / "main"),
        "snapshot-file": (outside / BLOB, commit / "config.json"),
    }[depth]
    before = snapshot(outside)
    (shutil.rmtree if where.is_dir() and not where.is_symlink() else os.unlink)(where)
    where.symlink_to(target)
    for step in (
        cm.entries,
        lambda: cm.verify(fix=True),
        lambda: cm.verify(fix=True),
        lambda: cm.fetch("org/small", progress=False, endpoint=fake_hub.endpoint),
        lambda: cm.cleanup_old_models(max_size=0),
    ):
        try:
            step()
        except UnsafeCacheError as exc:  # a pull refuses to write through the link
            assert "symbolic link" in str(exc)
    assert snapshot(outside) == before


def test_verify_fix_through_a_linked_blobs_folder(cache_dir: Path, outside: Path, fake_hub: FakeHub) -> None:
    cm, repo = pulled(cache_dir, fake_hub)
    before = snapshot(outside)
    shutil.rmtree(repo / "blobs")
    (repo / "blobs").symlink_to(outside)  # holds a file named like a blob
    problems = [i.problem for i in cm.verify()]
    assert any("Hub layout" in p for p in problems)
    cm.verify(fix=True)
    assert snapshot(outside) == before and not (repo / "blobs").is_symlink()


def test_a_repo_with_only_incomplete_blobs_is_not_an_entry(cache_dir: Path) -> None:
    cm = CacheManager(cache_dir, max_size=10**6)
    half = cache_dir / "hub" / "models--org--half"
    (half / "blobs").mkdir(parents=True)
    (half / "blobs" / f"{BLOB}.incomplete").write_bytes(b"x" * 100)
    (half / "refs").mkdir()
    assert cm.entries() == [] and cm.find("org/half") is None
    assert cm.get_cached_model(cm.hub_key("org/half")) is None and cm.verify() == []


# -- item 4: import --move ----------------------------------------------------------------------


def make_tree(root: Path, n: int, size: int = 2000) -> dict[str, str]:
    for i in range(n):
        (root / f"d{i % 7}").mkdir(parents=True, exist_ok=True)
        (root / f"d{i % 7}" / f"f{i}.bin").write_bytes(os.urandom(size))
    return snapshot(root)


def test_import_refuses_a_folder_that_contains_the_cache(tmp_path: Path) -> None:
    home = tmp_path / "home2"
    cache_dir = home / ".cache" / "provender"
    CacheManager(cache_dir, max_size=10**6)
    (home / "model.bin").write_bytes(b"x" * 10)
    with pytest.raises(SourceInCacheError, match="contains the cache"):
        CacheManager(cache_dir, max_size=10**6).import_model(home, "org/home", link_mode="move")
    env = {"PROVENDER_CACHE__DIR": str(cache_dir)}
    line = one_line_error(run_cli("cache", "import", str(home), "--name", "org/home", env=env), 2)
    assert "contains the cache" in line and (home / "model.bin").exists()


MOVER = """
import sys
from provender import CacheManager
cm = CacheManager(sys.argv[1], max_size=10**12)
print("started", flush=True)
cm.import_model(sys.argv[2], "org/moved", link_mode="move")
"""


def test_killed_move_leaves_the_source_whole(tmp_path: Path) -> None:
    src = tmp_path / "model"
    cache_dir = tmp_path / "cache"
    for attempt in range(8):
        shutil.rmtree(src, ignore_errors=True)
        whole = make_tree(src, 600, 500)
        proc = subprocess.Popen(
            [sys.executable, "-c", MOVER, str(cache_dir), str(src)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
        time.sleep(0.02 * attempt)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        cm = CacheManager(cache_dir, max_size=10**12)  # the next start cleans up
        if cm.find("org/moved") is None:
            assert snapshot(src) == whole, f"attempt {attempt}: the interrupted move lost files"
        else:  # committed before the kill: every byte is in the cache, whatever is left of the source
            entry = cm.get("org/moved")
            assert len([p for p in entry.path.rglob("*.bin")]) == 600
            cm.remove("org/moved")
        assert not os.listdir(cache_dir / "tmp")


def test_refused_replace_while_held_keeps_the_source(tmp_path: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cache_dir = tmp_path / "cache"
    cm = CacheManager(cache_dir, max_size=10**9)
    cm.import_model(make_files("v1", {"w.bin": 1000}), "org/m")
    src = tmp_path / "v2"
    whole = make_tree(src, 30)
    with cm.acquire("org/m"), pytest.raises(EntryInUseError):
        CacheManager(cache_dir, max_size=10**9).import_model(src, "org/m", link_mode="move", replace=True)
    assert snapshot(src) == whole
    cm.import_model(src, "org/m", link_mode="move", replace=True)
    assert not src.exists() and len(list(cm.get("org/m").path.rglob("*.bin"))) == 30


# -- tmpfs: full disk, cross-filesystem moves ------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for the test (we are root here), unmounted after."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt: Path) -> None:
    """Fill the filesystem to 0 bytes free."""
    n = 0
    while True:
        try:
            with open(mnt / f"filler-{n}", "wb") as f:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
        except OSError:
            pass
        n += 1
        if os.statvfs(mnt).f_bavail == 0 or n > 50:
            break
    assert os.statvfs(mnt).f_bavail == 0


def unfill(mnt: Path) -> None:
    for p in mnt.glob("filler-*"):
        p.unlink()


def test_failed_move_across_filesystems_keeps_every_source_file(tiny_fs: Path, tmp_path: Path) -> None:
    cache_dir = tiny_fs / "cache"
    CacheManager(cache_dir, max_size=10**9)
    src = tmp_path / "big"
    whole = make_tree(src, 7, 200_000)  # 1.4 MB: the 1 MiB filesystem fills during the copy
    with pytest.raises(DiskFullError, match="nothing already cached was lost"):
        CacheManager(cache_dir, max_size=10**9).import_model(src, "org/big", link_mode="move")
    assert snapshot(src) == whole and not os.listdir(cache_dir / "tmp")


def test_refused_replace_across_filesystems_keeps_the_source(tiny_fs: Path, tmp_path: Path) -> None:
    cache_dir = tiny_fs / "cache"
    cm = CacheManager(cache_dir, max_size=10**9)
    v1 = tmp_path / "v1"
    make_tree(v1, 3, 1000)
    cm.import_model(v1, "org/m")
    src = tmp_path / "v2"
    whole = make_tree(src, 5, 1000)
    with cm.acquire("org/m"), pytest.raises(EntryInUseError):
        CacheManager(cache_dir, max_size=10**9).import_model(src, "org/m", link_mode="move", replace=True)
    assert snapshot(src) == whole


def test_a_full_disk_still_lists_and_frees(tiny_fs: Path) -> None:
    cache_dir = tiny_fs / "cache"
    cm = CacheManager(cache_dir, max_size=10**9)
    for name in ("org/a", "org/b", "org/c"):
        src = tiny_fs / f"src-{name[-1]}"  # kept: an import whose source still exists can be evicted
        src.mkdir()
        (src / "w.bin").write_bytes(os.urandom(100_000))
        cm.import_model(src, name)  # hard-linked (zero-copy) on the same filesystem
    del cm
    env = {"PROVENDER_CACHE__DIR": str(cache_dir)}
    fill(tiny_fs)
    ls = run_cli("cache", "ls", "--json", env=env)
    assert ls.returncode == 0, ls.stderr
    assert sorted(r["name"] for r in json.loads(ls.stdout)) == ["org/a", "org/b", "org/c"]
    stats = run_cli("cache", "stats", "--json", env=env)
    assert stats.returncode == 0 and json.loads(stats.stdout)["entries"] == 3, stats.stderr
    verify = run_cli("cache", "verify", env=env)
    assert verify.returncode == 0, verify.stderr
    src = tiny_fs / "new"
    src.mkdir()
    imp = run_cli("cache", "import", str(src), "--name", "org/new", env=env)
    assert "no space left" in one_line_error(imp, 1)
    rm = run_cli("cache", "rm", "-y", "org/a", env=env)
    assert rm.returncode == 0, rm.stderr
    fill(tiny_fs)
    prune = run_cli("cache", "prune", "-y", "--max-size", "0", env=env)
    assert prune.returncode == 0, prune.stderr
    unfill(tiny_fs)
    assert CacheManager(cache_dir, max_size=10**9).entries() == []
    assert not list((cache_dir / "objects").iterdir())


# -- another user: permissions --------------------------------------------------------------


@pytest.fixture
def shared(tmp_path: Path) -> Iterator[Path]:
    """A folder the unprivileged user 'nobody' can reach (pytest's own tmp folders are private)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("running a command as the unprivileged user 'nobody' needs root and setpriv")
    base = Path(tempfile.mkdtemp(prefix="provender-walls-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def as_nobody(base: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PROVENDER_CACHE__DIR": str(base / "cache"),
        "HOME": str(base),
        "XDG_CONFIG_HOME": str(base / "cfg"),
        "XDG_CACHE_HOME": str(base / "xdg-cache"),
        "XDG_DATA_HOME": str(base / "xdg-data"),
        "XDG_STATE_HOME": str(base / "xdg-state"),
        "HF_HOME": str(base / "hf"),
    }
    # setpriv drops to uid/gid 65534 with no groups and no capabilities, then runs provender
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    return subprocess.run(
        [*drop, sys.executable, "-m", "provender", *args], capture_output=True, text=True, env=env, cwd=base, timeout=60
    )


def shared_cache(base: Path) -> CacheManager:
    cm = CacheManager(base / "cache", max_size=10**9)
    src = base / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(1000))
    cm.import_model(src, "org/m", link_mode="copy")
    src.chmod(0o755)
    (src / "w.bin").chmod(0o644)
    for dirpath, dirs, files in os.walk(base / "cache"):  # everything writable by 'nobody' ...
        for name in dirs:
            os.chmod(os.path.join(dirpath, name), 0o777)
        for name in files:
            os.chmod(os.path.join(dirpath, name), 0o666)
    (base / "cache").chmod(0o777)
    return cm


def test_a_read_only_index_names_the_file_and_changes_nothing(shared: Path) -> None:
    shared_cache(shared)
    index = shared / "cache" / "index.db"
    index.chmod(0o444)  # ... but the index
    for args in (
        ["cache", "ls"],
        ["cache", "rm", "-y", "org/m"],
        ["cache", "import", str(shared / "src"), "--name", "org/x"],
    ):
        line = one_line_error(as_nobody(shared, *args), 1)
        assert str(index) in line and "not writable" in line
    made = [p for p in (shared / "cache").rglob("*") if p.lstat().st_uid == 65534]
    assert made == []  # no index.db-wal / -shm (or anything else) created, read-only, by the refused user
    names = [e.name for e in CacheManager(shared / "cache", max_size=10**9).entries()]
    assert names == ["org/m"]  # rm did not remove it, import did not add one


@pytest.mark.parametrize("what", ["objects", "locks", ".lock"])
def test_unwritable_parts_are_one_clear_line(shared: Path, what: str) -> None:
    shared_cache(shared)
    path = shared / "cache" / what
    path.chmod(0o755 if path.is_dir() else 0o644)  # owned by root: 'nobody' may not write it
    line = one_line_error(as_nobody(shared, "cache", "ls"), 1)
    assert str(path) in line and "not writable" in line


def test_a_lock_file_replaced_by_a_link(cache_dir: Path, outside: Path) -> None:
    CacheManager(cache_dir, max_size=1000)
    (cache_dir / ".lock").unlink()
    (cache_dir / ".lock").symlink_to(outside / "Gemfile.lock")
    line = one_line_error(run_cli("cache", "ls", env={"PROVENDER_CACHE__DIR": str(cache_dir)}), 1)
    assert ".lock" in line and "refusing to use" in line and "unexpected" not in line
    assert (outside / "Gemfile.lock").read_text() == "user data Gemfile.lock"


# -- the races: items 5, 6, 7 -------------------------------------------------------------------


class SlowPlanHub(FakeHub):
    """A Hub whose file listing (the planning call) answers late, as a slow first API call does."""

    delay = 0.0

    def _api(self, req, parts):  # type: ignore[no-untyped-def]
        if len(parts) > 2 and parts[2] == "tree" and self.delay:
            time.sleep(self.delay)
        return super()._api(req, parts)


def test_a_refused_pull_never_deletes_a_repo_another_pull_made(tmp_path: Path) -> None:
    hub = SlowPlanHub()
    try:
        hub.add("org/huge", {"config.json": b"{}", "model.safetensors": os.urandom(300_000)})
        for attempt in range(6):
            cache_dir = tmp_path / f"cache{attempt}"
            small = CacheManager(cache_dir, max_size=100_000)  # org/huge does not fit in it
            big = CacheManager(cache_dir, max_size=10**9)
            hub.delay = 0.3 + 0.05 * attempt
            errors: list[BaseException] = []

            def refused(cm: CacheManager = small, errors: list[BaseException] = errors) -> None:
                try:
                    cm.fetch("org/huge", progress=False, endpoint=hub.endpoint)
                except EntryTooLargeError as exc:
                    errors.append(exc)

            thread = threading.Thread(target=refused)
            thread.start()
            time.sleep(0.1)
            hub.delay = 0.0
            entry = big.fetch("org/huge", allow_patterns="config.json", progress=False, endpoint=hub.endpoint)
            thread.join()
            assert errors, "the small cache should have refused org/huge"
            assert (entry.model_path / "config.json").read_bytes() == b"{}", f"attempt {attempt}: the repo was deleted"
            assert [e.name for e in big.entries()] == ["org/huge"]
    finally:
        hub.close()


VERIFIER = """
import sys, time
from provender import CacheManager
cm = CacheManager(sys.argv[1], max_size=10**12)
end = time.monotonic() + float(sys.argv[2])
runs = 0
while time.monotonic() < end:
    cm.verify(fix=True)
    runs += 1
print(runs)
"""


def test_verify_racing_a_replacement_never_drops_an_intact_entry(tmp_path: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cache_dir = tmp_path / "cache"
    cm = CacheManager(cache_dir, max_size=10**12)
    versions = [make_files(f"v{i}", {f"w{j}.bin": 20_000 for j in range(12)}) for i in range(2)]
    cm.import_model(versions[0], "org/m", link_mode="copy")
    verifier = subprocess.Popen(
        [sys.executable, "-c", VERIFIER, str(cache_dir), "3"], stdout=subprocess.PIPE, text=True
    )
    replaced = refused = 0
    end = time.monotonic() + 3
    while time.monotonic() < end:
        try:
            cm.import_model(versions[replaced % 2], "org/m", link_mode="copy", replace=True)
            replaced += 1
        except EntryInUseError:
            refused += 1
        assert cm.find("org/m") is not None, "verify --fix dropped an intact entry"
    out, _ = verifier.communicate(timeout=60)
    assert verifier.returncode == 0 and int(out.strip()) > 0
    assert cm.find("org/m") is not None and cm.verify() == []
    assert replaced > 0


HOLDER = """
import sys
from provender import CacheManager
cm = CacheManager(sys.argv[1], max_size=int(sys.argv[2]))
for _ in range(int(sys.argv[3])):
    with cm.acquire(sys.argv[4]):
        pass
"""


def test_releasing_a_lease_does_not_evict_what_was_just_used(tmp_path: Path, make_files) -> None:  # type: ignore[no-untyped-def]
    cache_dir = tmp_path / "cache"
    cm = CacheManager(cache_dir, max_size=10**9)
    cm.import_model(make_files("a", {"w": 500}), "me/a")
    cm.import_model(make_files("b", {"w": 500}), "me/b")
    small = CacheManager(cache_dir, max_size=1)  # the limit shrank: no add has happened since
    with small.acquire("me/a"):
        pass
    assert sorted(e.name for e in small.entries()) == ["me/a", "me/b"]
    procs = [
        subprocess.Popen([sys.executable, "-c", HOLDER, str(cache_dir), "1", "40", name]) for name in ("me/a", "me/b")
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    assert sorted(e.name for e in small.entries()) == ["me/a", "me/b"]
