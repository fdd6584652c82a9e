"""Filesystem operations of the cache: zero-copy placement, sizes, error mapping."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from provender._cache._layout import link_error, remove_at
from provender.errors import CacheNotWritableError, DiskFullError

logger = logging.getLogger(__name__)

LinkMode = Literal["auto", "copy", "move"]
FICLONE = 0x40049409  # Linux ioctl: copy-on-write clone of a whole file (btrfs, xfs, bcachefs)


@contextmanager
def fs_errors(path: Path, needed: int | None = None) -> Iterator[None]:
    """Turn ENOSPC / EACCES / EROFS into the cache's clear errors."""
    try:
        yield
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(path, needed) from exc
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
            raise CacheNotWritableError(path, f"{exc.strerror or ''}{where}") from exc
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a link planted where a file of the cache belongs
            raise link_error(exc.filename or path, "file") from exc
        raise


def tree_size(path: Path) -> int:
    """Bytes of the regular files under `path` (a file: its size); symlinks are not followed."""
    if path.is_symlink():
        return 0
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            if not os.path.islink(os.path.join(root, name)):
                total += st.st_size
    return total


def _clone_file(src: str, dst: str) -> bool:
    """Copy-on-write clone; False where the filesystem cannot (then we try a hard link)."""
    if not sys.platform.startswith("linux"):
        return False
    import fcntl

    try:
        with open(src, "rb") as fsrc, open(dst, "wb") as fdst:
            fcntl.ioctl(fdst.fileno(), FICLONE, fsrc.fileno())
        shutil.copystat(src, dst)
        return True
    except OSError:
        try:
            os.unlink(dst)
        except FileNotFoundError:
            pass
        return False


def place_file(src: str, dst: str, mode: LinkMode) -> str:
    """Put one file at `dst` without copying bytes where the filesystem allows.

    ``auto``: copy-on-write clone, else hard link, else byte copy. ``move``: a hard link
    (the source goes only once the entry is committed, see `finish_move`), else a byte
    copy. Returns how it was done: ``"clone"``, ``"link"``, ``"move"`` or ``"copy"``.
    The source is never changed here.
    """
    if mode == "move":
        if _hard_link(src, dst, follow_symlinks=False):
            return "move"
    elif mode == "auto":
        if _clone_file(src, dst):
            return "clone"
        if _hard_link(src, dst, follow_symlinks=True):
            return "link"
    shutil.copy2(src, dst)
    return "copy"


_NO_LINK_HERE = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES)


def same_file(a: os.stat_result, b: os.stat_result) -> bool:
    """True if two stat results are of one file (one inode on one device)."""
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def place_open_file(
    fd: int, src: str, dst: str, mode: Literal["auto", "copy"]
) -> Literal["clone", "link", "copy", "changed"]:
    """Put the file open as `fd` (found at `src`) at `dst`, a new name: its bytes, never another file's.

    For a source that was checked through `fd` (hashed, say) while someone else may change
    what `src` names: ``auto`` makes a copy-on-write clone of the open file, else a hard link
    of `src` that is then checked to be that very file (same st_dev and st_ino; a `src`
    swapped for another file or for a link in between gives ``"changed"``, and nothing is
    left at `dst`), else a byte copy from `fd`. ``copy``: the byte copy. Returns how it was done.
    """
    st = os.fstat(fd)
    if mode == "auto":
        if _clone_fd(fd, dst):
            return "clone"
        if _hard_link(src, dst, follow_symlinks=False):  # a link planted at `src` is linked as a link: caught below
            if same_file(os.lstat(dst), st):
                return "link"
            os.unlink(dst)
            return "changed"
    with open(dst, "xb") as out:  # O_EXCL: never through a link someone planted at `dst`
        _copy_fd(fd, out.fileno(), st.st_size)
    return "copy"


def _clone_fd(fd: int, dst: str) -> bool:
    """Copy-on-write clone of the open file `fd` at `dst`; False (nothing left at `dst`) where the filesystem cannot."""
    if not sys.platform.startswith("linux"):
        return False
    import fcntl

    with open(dst, "xb") as out:  # O_EXCL: never through a link someone planted at `dst`
        try:
            fcntl.ioctl(out.fileno(), FICLONE, fd)
            return True
        except OSError:
            pass
    os.unlink(dst)
    return False


def _copy_fd(src: int, dst: int, size: int) -> None:
    """The first `size` bytes of the open file `src` into `dst` (what was checked, even if it grew since)."""
    offset = 0
    sendfile = getattr(os, "sendfile", None) if sys.platform.startswith("linux") else None
    while sendfile is not None and offset < size:
        try:
            sent = sendfile(dst, src, offset, min(size - offset, 1 << 30))
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                raise
            break
        if sent == 0:
            break
        offset += sent
    os.lseek(src, offset, os.SEEK_SET)
    while offset < size and (chunk := os.read(src, min(1 << 20, size - offset))):  # no sendfile here
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view) :]
        offset += len(chunk)


def _hard_link(src: str, dst: str, *, follow_symlinks: bool) -> bool:
    """Hard-link `src` at `dst`; False where this filesystem or this file cannot be linked (a copy will do)."""
    try:
        os.link(src, dst, follow_symlinks=follow_symlinks)
    except OSError as exc:
        if exc.errno not in _NO_LINK_HERE:
            raise
        return False
    return True


def place_tree(src: Path, dst: Path, mode: LinkMode) -> dict[str, int]:
    """Place a file or directory tree at `dst` (which must not exist); count how files were placed.

    Symlinks inside the source are followed when they point at files (their content is
    what the model needs); the cache never stores a symlink that leads outside it.
    Nothing of the source is deleted, ``mode="move"`` included: `finish_move` does that
    once the entry is committed, so a failed or interrupted move leaves the source as it was.
    """
    counts: dict[str, int] = {}
    if src.is_file():
        dst.parent.mkdir(parents=True, exist_ok=True)
        how = place_file(str(src), str(dst), mode)
        counts[how] = 1
        return counts
    dst.mkdir(parents=True)
    for root, dirs, files in os.walk(src, followlinks=False):
        rel = os.path.relpath(root, src)
        target_root = dst if rel == "." else dst / rel
        for d in dirs:
            if os.path.islink(os.path.join(root, d)):
                logger.warning("skipping directory symlink %s", os.path.join(root, d))
                continue
            (target_root / d).mkdir()
        for f in files:
            source = os.path.join(root, f)
            real = os.path.realpath(source)
            if not os.path.isfile(real):
                continue
            how = place_file(
                real if os.path.islink(source) else source,
                str(target_root / f),
                "auto" if mode == "move" and os.path.islink(source) else mode,
            )
            counts[how] = counts.get(how, 0) + 1
    return counts


def finish_move(src: Path) -> None:
    """After a moved entry is committed: delete the source (its files are in the cache now).

    Only regular files, links and then empty folders are removed, bottom-up, without
    following links; anything that cannot go is left and logged, never the cache's copy.
    """
    try:
        if not os.path.isdir(src) or os.path.islink(src):
            os.unlink(src)
            return
        for root, dirs, files in os.walk(src, topdown=False):
            for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
                os.unlink(os.path.join(root, name))
            for name in dirs:
                if not os.path.islink(os.path.join(root, name)):
                    os.rmdir(os.path.join(root, name))
        os.rmdir(src)
    except OSError as exc:
        logger.warning("the entry is in the cache, but part of the moved source %s is left: %s", src, exc)


def remove_tree(path: Path) -> None:
    """Delete a file or directory tree, not following symlinks at any depth (its parent is opened O_NOFOLLOW)."""
    try:
        dfd = os.open(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise link_error(path.parent) from None
        if exc.errno == errno.ENOENT:
            return
        raise
    try:
        remove_at(dfd, path.name)
    finally:
        os.close(dfd)


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
