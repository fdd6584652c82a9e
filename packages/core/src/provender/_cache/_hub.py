"""The Hugging Face Hub part of the cache: huggingface_hub's own layout under ``<cache.dir>/hub``.

huggingface_hub writes and owns this layout (``models--org--name/{blobs,snapshots,refs}``);
`hf cache ls` and `scan_cache_dir` read it. We only read what we need to index a
repo cheaply (folder name, blob sizes, snapshot path) and let huggingface_hub do
every download.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from provender._cache._names import within

if TYPE_CHECKING:
    from provender._cache._layout import Walls

REPO_TYPES = ("model", "dataset", "space")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHA1 = re.compile(r"[0-9a-f]{40}")


def folder_name(repo_id: str, repo_type: str = "model") -> str:
    """``org/name`` -> ``models--org--name`` (huggingface_hub's own function, without importing it)."""
    return f"{repo_type}s--" + repo_id.replace("/", "--")


def parse_folder_name(name: str) -> tuple[str, str] | None:
    """``models--org--name`` -> (``"model"``, ``"org/name"``); None for anything else."""
    prefix, sep, rest = name.partition("--")
    if not sep or not rest or prefix[:-1] not in REPO_TYPES or not prefix.endswith("s"):
        return None
    return prefix[:-1], rest.replace("--", "/")


def display_name(repo_id: str, repo_type: str) -> str:
    """Model repos are named by their id; others carry their type (``datasets/org/name``)."""
    return repo_id if repo_type == "model" else f"{repo_type}s/{repo_id}"


_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
LAYOUT = ("blobs", "snapshots", "refs")  # the folders huggingface_hub makes in a repo folder


def _is_dir(path: str | os.PathLike[str]) -> bool:
    """A real folder (lstat): a link to one is not."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def repo_size(repo_dir: Path) -> int:
    """Bytes of a repo on disk: the sum of its blobs (what `hf cache ls` reports); links are not followed."""
    total = 0
    try:
        fd = os.open(repo_dir / "blobs", _DIR_FLAGS)
    except OSError:  # missing, or a link (never followed)
        return 0
    try:
        with os.scandir(fd) as it:
            for item in it:
                if not item.name.endswith(".incomplete"):
                    st = item.stat(follow_symlinks=False)
                    if stat.S_ISREG(st.st_mode):
                        total += st.st_size
    finally:
        os.close(fd)
    return total


def repo_stamp(repo_dir: Path) -> int:
    """Changes when blobs are added or removed (mtime of the blobs dir); 0 if there is none."""
    try:
        st = os.lstat(repo_dir / "blobs")
    except (FileNotFoundError, NotADirectoryError):
        return 0
    return st.st_mtime_ns if stat.S_ISDIR(st.st_mode) else 0


def link_target(repo_dir: Path, link: Path) -> Path | None:
    """Where a snapshot link points, if that is a blob of this repo (``blobs/<name>``); else None."""
    try:
        target = Path(os.path.normpath(link.parent / os.readlink(link)))
    except OSError:
        return None
    return target if target.parent == repo_dir / "blobs" else None


def _files_ok(repo_dir: Path, folder: Path) -> bool:
    """True if `folder` (in a snapshot) holds a complete file: a link to an existing blob, or a regular file."""
    try:
        with os.scandir(folder) as it:
            for item in it:
                if item.is_symlink():
                    target = link_target(repo_dir, Path(item.path))
                    if target is not None and stat.S_ISREG(os.lstat(target).st_mode):
                        return True
                elif item.is_file(follow_symlinks=False) or (
                    item.is_dir(follow_symlinks=False) and _files_ok(repo_dir, Path(item.path))
                ):
                    return True
    except OSError:
        return False
    return False


def has_snapshot(repo_dir: Path) -> bool:
    """A repo is an entry only with a complete snapshot: a real snapshot folder holding a file whose
    blob exists in the repo's own real ``blobs/`` (a folder of ``*.incomplete`` blobs is not one)."""
    if not all(_is_dir(repo_dir / name) for name in ("blobs", "snapshots")):
        return False
    try:
        commits = [p for p in (repo_dir / "snapshots").iterdir() if _is_dir(p)]
    except OSError:
        return False
    return any(_files_ok(repo_dir, commit) for commit in commits)


def snapshot_path(repo_dir: Path, revision: str | None = None) -> Path | None:
    """The snapshot folder of `revision` (default ``main``, else the newest snapshot); never through a link.

    On the hot path of every cache hit: plain strings and `os` calls (no pathlib object
    per step), the same checks (each folder a real one, the ref a regular file).
    """
    root = os.fspath(repo_dir)
    snapshots = os.path.join(root, "snapshots")
    if not _is_dir(root) or not _is_dir(snapshots):
        return None
    if revision and "/" not in revision and _is_dir(os.path.join(snapshots, revision)):
        return Path(snapshots, revision)
    try:
        if _is_dir(os.path.join(root, "refs")):
            commit = _read_ref(os.path.join(root, "refs", revision or "main"))
            if commit and "/" not in commit and _is_dir(os.path.join(snapshots, commit)):
                return Path(snapshots, commit)
    except (OSError, ValueError):
        pass
    if revision:
        return None
    try:
        candidates = [p for p in Path(snapshots).iterdir() if _is_dir(p)]
    except OSError:
        return None
    return max(candidates, key=lambda p: os.lstat(p).st_mtime_ns) if candidates else None


def _read_ref(path: str) -> str | None:
    """The text of a ref file, stripped; None unless it is a regular file (never through a link)."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        return None
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        data = os.read(fd, st.st_size + 1)  # one read, unless the file grew since the lstat
        if len(data) > st.st_size:
            while chunk := os.read(fd, 1 << 16):
                data += chunk
    finally:
        os.close(fd)
    return data.decode().strip()


def planted_links(repo_dir: Path) -> list[Path]:
    """Links where huggingface_hub keeps real folders or files: the repo's layout folders, its blobs,
    its refs, and folders inside snapshots. None of them is ever followed."""
    found = [repo_dir / name for name in LAYOUT if os.path.islink(repo_dir / name)]
    for name in ("blobs", "refs"):
        if _is_dir(repo_dir / name):
            for root, dirs, files in os.walk(repo_dir / name):
                found += [Path(root, f) for f in files + dirs if os.path.islink(os.path.join(root, f))]
    if _is_dir(repo_dir / "snapshots"):
        for root, dirs, _files in os.walk(repo_dir / "snapshots"):
            found += [Path(root, d) for d in dirs if os.path.islink(os.path.join(root, d))]
    return sorted(found)


def _blob_ok(repo_dir: Path, target: Path) -> bool:
    """`target` is a regular file in this repo's own real ``blobs/`` folder (no link followed)."""
    try:
        return _is_dir(repo_dir / "blobs") and stat.S_ISREG(os.lstat(target).st_mode)
    except OSError:
        return False


def _digest(path: Path, algo: str) -> str:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        if algo == "sha256":
            return hashlib.file_digest(f, "sha256").hexdigest()
        digest = hashlib.sha1(f"blob {os.fstat(fd).st_size}\0".encode())
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
        return digest.hexdigest()


def verify_repo(repo_dir: Path) -> list[tuple[Path, str]]:
    """Check a Hub repo without following any link: planted links, blob hashes, snapshot links.

    Returns ``(path, problem)`` pairs (`_verify` makes them `VerifyIssue`s). A snapshot link
    may point only at a blob in its own repo's ``blobs/``.
    """
    issues: list[tuple[Path, str]] = []
    for path in planted_links(repo_dir):
        problem = (
            "a blob that is a symbolic link"
            if path.parent == repo_dir / "blobs"
            else "a symbolic link where the Hub layout has a real folder or file (not followed)"
        )
        issues.append((path, problem))
    if _is_dir(repo_dir / "blobs"):
        with os.scandir(repo_dir / "blobs") as it:
            blobs = sorted((item for item in it if item.is_file(follow_symlinks=False)), key=lambda i: i.name)
        for item in blobs:
            algo = "sha256" if _SHA256.fullmatch(item.name) else "git sha1" if _SHA1.fullmatch(item.name) else None
            if algo is None:
                continue
            actual = _digest(Path(item.path), algo)
            if actual != item.name:
                problem = f"content does not match its {algo} (got {actual[:12]}...)"
                issues.append((Path(item.path), problem))
    if _is_dir(repo_dir / "snapshots"):
        for root, _dirs, files in os.walk(repo_dir / "snapshots"):  # folder links are listed, never entered
            for file in files:
                link = Path(root, file)
                if not link.is_symlink():
                    continue
                target = Path(os.path.normpath(link.parent / os.readlink(link)))
                if not within(repo_dir, target):
                    issues.append((link, "snapshot link points outside the cache"))
                elif target.parent != repo_dir / "blobs":
                    issues.append((link, "snapshot link points outside its repo's blobs/"))
                elif not _blob_ok(repo_dir, target) and not os.path.islink(target):
                    issues.append((link, "snapshot link points at a missing blob"))
    return issues


def fix_repo(walls: Walls, repo_dir: Path, flagged: set[Path]) -> None:
    """Delete what `verify_repo` flagged: planted links (the links themselves), corrupt blobs, and the
    snapshot links left dangling or pointing at them. Every deletion goes through folders opened
    without following links, so nothing outside the repo is ever touched. Call under the cache lock."""
    for path in sorted(flagged, key=lambda p: len(p.parts)):
        walls.unlink(path)
    if _is_dir(repo_dir / "snapshots"):
        for root, _dirs, files in os.walk(repo_dir / "snapshots"):
            for file in files:
                link = Path(root, file)
                if link.is_symlink() and not _blob_ok(repo_dir, link_target(repo_dir, link) or repo_dir):
                    walls.unlink(link)
