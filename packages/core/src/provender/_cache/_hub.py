"""The Hugging Face Hub part of the cache: huggingface_hub's own layout under ``<cache.dir>/hub``.

huggingface_hub writes and owns this layout (``models--org--name/{blobs,snapshots,refs}``);
`hf cache ls` and `scan_cache_dir` read it. We only read what we need to index a
repo cheaply (folder name, blob sizes, snapshot path) and let huggingface_hub do
every download.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_TYPES = ("model", "dataset", "space")


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


def repo_size(repo_dir: Path) -> int:
    """Bytes of a repo on disk: the sum of its blobs (what `hf cache ls` reports)."""
    total = 0
    try:
        with os.scandir(repo_dir / "blobs") as it:
            for item in it:
                if not item.name.endswith(".incomplete"):
                    total += item.stat(follow_symlinks=False).st_size
    except FileNotFoundError:
        pass
    return total


def repo_stamp(repo_dir: Path) -> int:
    """Changes when blobs are added or removed (mtime of the blobs dir); 0 if there is none."""
    try:
        return (repo_dir / "blobs").stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def snapshot_path(repo_dir: Path, revision: str | None = None) -> Path | None:
    """The snapshot folder of `revision` (default ``main``, else the newest snapshot)."""
    snapshots = repo_dir / "snapshots"
    ref = repo_dir / "refs" / (revision or "main")
    if revision and (snapshots / revision).is_dir():
        return snapshots / revision
    try:
        commit = ref.read_text().strip()
        if commit and (snapshots / commit).is_dir():
            return snapshots / commit
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        pass
    if revision:
        return None
    try:
        candidates = [p for p in snapshots.iterdir() if p.is_dir()]
    except FileNotFoundError:
        return None
    return max(candidates, key=lambda p: p.stat().st_mtime_ns) if candidates else None
