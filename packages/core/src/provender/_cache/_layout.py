"""The cache's walls: which folder is a provender cache, and which of its folders and files are its own.

A cache folder is created empty by provender and marked at once with two files:
``.provender-cache`` (provender's mark, written first) and ``CACHEDIR.TAG`` (the
cross-tool convention of ccache, Borg and restic: backup tools skip the folder).
A folder is taken for a provender cache when

- it does not exist, or is empty: provender creates and marks it;
- it holds the mark ``.provender-cache`` as a regular file;
- it is a cache made by an earlier provender, before the mark existed: the folders
  ``hub objects pins locks tmp trash`` are all real folders (not links), ``index.db`` is a
  regular SQLite file, and it holds provender's tables (``entries``, ``stats``, ``meta``,
  read without writing anything) or ``objects/`` holds an entry manifest. It is then
  marked and adopted.

Anything else (a home directory, a project, another tool's cache) is refused with
`NotACacheError` and left untouched. Inside a cache, every folder and file provender
owns is checked with ``lstat`` before use: a symbolic link (or a file of the wrong type)
where provender expects its own folder or file is refused with `UnsafeCacheError`, never
followed and never deleted through. Removals go through directory file descriptors
opened with ``O_NOFOLLOW`` from the cache folder down, so no link at any depth leads
them outside.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import stat
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

from provender.errors import NotACacheError, UnsafeCacheError

logger = logging.getLogger(__name__)

MARK = ".provender-cache"
TAG = "CACHEDIR.TAG"
TAG_TEXT = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by provender (the shared model cache).\n"
    "# For information about cache directory tags, see https://bford.info/cachedir/\n"
)
DIRS = ("hub", "objects", "pins", "locks", "pending", "tmp", "trash")
FILES = (".lock", "index.db", "index.db-wal", "index.db-shm", "repairs.jsonl")
OLD_CACHE_DIRS = ("hub", "objects", "pins", "locks", "tmp", "trash")  # what every earlier version created
SQLITE_MAGIC = b"SQLite format 3\x00"
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)


def link_error(path: Path | str, what: str = "folder") -> UnsafeCacheError:
    return UnsafeCacheError(
        path,
        f"it is a symbolic link where provender keeps its own {what}; it was not followed "
        "(remove the link: provender recreates what it needs)",
    )


def check_dir(path: Path) -> None:
    """`path` must be a real folder (lstat): a link or a file there is refused."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise link_error(path)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeCacheError(path, "provender keeps a folder there, but it is not one")


def check_file(path: Path) -> bool:
    """`path` may be absent or a regular file (lstat); True if it exists. A link is refused."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode):
        raise link_error(path, "file")
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeCacheError(path, "provender keeps a regular file there, but it is not one")
    return True


def _create_file(path: Path, text: str) -> None:
    """Create `path` with `text` unless it exists; never through a link."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except FileExistsError:
        check_file(path)
        return
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _looks_like_old_cache(root: Path) -> bool:
    """A cache made by an earlier provender (no mark yet): every folder it created, and a SQLite index."""
    try:
        for name in OLD_CACHE_DIRS:
            if not stat.S_ISDIR(os.lstat(root / name).st_mode):
                return False
        fd = os.open(root / "index.db", os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return False
    try:
        if not (stat.S_ISREG(os.fstat(fd).st_mode) and os.read(fd, len(SQLITE_MAGIC)) == SQLITE_MAGIC):
            return False
    finally:
        os.close(fd)
    return _has_provender_schema(root / "index.db") or _has_a_manifest(root / "objects")


def _has_provender_schema(index: Path) -> bool:
    """The index has provender's tables (read with ``immutable=1``: no lock, no -wal/-shm made, nothing written)."""
    import sqlite3

    uri = "file:" + index.as_posix().replace("?", "%3f").replace("#", "%23") + "?immutable=1"
    try:
        con = sqlite3.connect(uri, uri=True)
        try:
            names = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            con.close()
    except sqlite3.Error:
        return False
    return {"entries", "stats", "meta"} <= names


def _has_a_manifest(objects: Path) -> bool:
    """An entry provender stored (its schema may still sit in a -wal file nobody checkpointed)."""
    try:
        with os.scandir(objects) as it:
            return any(os.path.isfile(os.path.join(item.path, ".provender-entry.json")) for item in it)
    except OSError:
        return False


HUB_PREFIXES = ("models--", "datasets--", "spaces--")
HUB_OWN_NAMES = {".locks", "CACHEDIR.TAG", "version.txt"}


def _is_a_hub_download(root: Path, names: list[str]) -> bool:
    """Only a ``hub/`` folder in huggingface_hub's layout: the Hub downloads provender would have
    made itself (``hf download --cache-dir <cache.dir>/hub`` before provender first ran)."""
    if names != ["hub"] or not stat.S_ISDIR(os.lstat(root / "hub").st_mode):
        return False
    try:
        children = os.listdir(root / "hub")
    except OSError:
        return False
    return all(name.startswith(HUB_PREFIXES) or name in HUB_OWN_NAMES for name in children)


def prepare(root: Path) -> os.stat_result:
    """Create or adopt the cache folder `root` and its own folders; returns the folder's stat (its identity).

    Raises NotACacheError for a folder that is not a provender cache (left untouched), and
    UnsafeCacheError where a folder or file provender owns is a link.
    """
    try:
        st = os.stat(root)  # cache.dir itself may be a link to a folder: the user's own choice
    except FileNotFoundError:
        if os.path.islink(root):
            raise NotACacheError(root, f"it is a link to {os.readlink(root)!r}, which does not exist") from None
        root.mkdir(parents=True, exist_ok=True)
        st = os.stat(root)
    except NotADirectoryError:
        raise NotACacheError(root, "a part of the path is a file, not a folder") from None
    if not stat.S_ISDIR(st.st_mode):
        raise NotACacheError(root, "it is a file, not a folder")
    if not check_file(root / MARK):
        names = os.listdir(root)
        if names and not _looks_like_old_cache(root) and not _is_a_hub_download(root, names):
            shown = ", ".join(sorted(names)[:5]) + (", ..." if len(names) > 5 else "")
            raise NotACacheError(
                root,
                f"the folder is not empty ({shown}) and has no {MARK} mark; nothing in it was touched. "
                "Set cache.dir to a new or empty folder (or, if this folder really is provender's cache, "
                f"create an empty file named {MARK} in it)",
            )
        if names == ["hub"]:
            logger.info("adopting %s: it holds only Hub downloads in provender's layout (marking it %s)", root, MARK)
        elif names:
            logger.warning("adopting %s: a cache made by an earlier provender (marking it %s)", root, MARK)
        _create_file(root / MARK, json.dumps({"provender_cache": 1, "created": time.time()}) + "\n")
    _create_file(root / TAG, TAG_TEXT)
    for name in DIRS:
        with contextlib.suppress(FileExistsError):
            os.mkdir(root / name)
        check_dir(root / name)
    for name in FILES:
        check_file(root / name)
    return st


class Walls:
    """The identity of one cache folder, checked before anything is deleted or written in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        st = prepare(root)
        self.identity = (st.st_dev, st.st_ino)
        self._fds: dict[str, int] = {}
        if os.path.isdir("/proc/self/fd"):  # Linux: hold the folders checked now, whatever their names become
            with self.open(".") as root_fd:
                self._fds[""] = os.dup(root_fd)
            for name in DIRS:
                self._fds[name] = os.open(name, _DIR_FLAGS, dir_fd=self._fds[""])
            weakref.finalize(self, _close_all, list(self._fds.values()))

    def root_fd(self) -> int | None:
        """The descriptor of the cache folder held since start (Linux), else None."""
        return self._fds.get("")

    def here(self, name: str = "") -> Path:
        """A path to the owned folder `name` that always means the folder checked at start.

        On Linux it goes through ``/proc/self/fd`` and a descriptor held since then, so a
        link planted at the folder's name, or the cache folder swapped for another, cannot
        redirect what provender creates there (lock files, leases, staging).
        """
        fd = self._fds.get(name)
        if fd is None:
            return self.root / name if name else self.root
        return Path(f"/proc/self/fd/{fd}")

    def check(self, *names: str) -> None:
        """The folder at `root` is still this cache (not swapped), still marked, and `names` are real folders."""
        try:
            st = os.stat(self.root)
        except OSError as exc:
            raise UnsafeCacheError(self.root, f"the cache folder is gone ({exc.strerror})") from None
        if (st.st_dev, st.st_ino) != self.identity:
            raise UnsafeCacheError(self.root, "the cache folder was replaced by another one while in use")
        try:
            if not check_file(self.root / MARK):
                raise UnsafeCacheError(self.root, f"the cache folder lost its {MARK} mark while in use")
            for name in names:
                check_dir(self.root / name)
        except FileNotFoundError as exc:
            raise UnsafeCacheError(exc.filename or self.root, "a folder of the cache is missing") from None

    @contextlib.contextmanager
    def open(self, rel: str | os.PathLike[str]) -> Iterator[int]:
        """A file descriptor on the folder `rel` (relative to the cache), opened without following any link."""
        fd = os.open(self.root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != self.identity:
                raise UnsafeCacheError(self.root, "the cache folder was replaced by another one while in use")
            for part in [p for p in Path(rel).parts if p != "."]:
                try:
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise link_error(self.root / rel) from None
                    raise
                os.close(fd)
                fd = nfd
            yield fd
        finally:
            os.close(fd)

    def rel(self, path: Path) -> Path:
        """`path` relative to the cache folder (refused if it is not inside)."""
        text = os.path.normpath(path)
        for name, fd in self._fds.items():  # a path made by `here`
            prefix = f"/proc/self/fd/{fd}"
            if text == prefix or text.startswith(prefix + os.sep):
                path = Path(os.path.normpath(os.path.join(self.root, name, text[len(prefix) + 1 :])))
                break
        try:
            rel = Path(os.path.normpath(path)).relative_to(os.path.normpath(self.root))
        except ValueError:
            raise UnsafeCacheError(path, "it is outside the cache folder") from None
        if not rel.parts or ".." in rel.parts:
            raise UnsafeCacheError(path, "it is not inside the cache folder")
        return rel

    def remove(self, path: Path) -> None:
        """Delete `path` (a file, link or folder tree inside the cache); no link is followed at any depth."""
        rel = self.rel(path)
        try:
            with self.open(rel.parent) as dfd:
                remove_at(dfd, rel.name)
        except FileNotFoundError:
            return

    def unlink(self, path: Path) -> None:
        """Delete one file or link inside the cache (never what a link points at)."""
        rel = self.rel(path)
        try:
            with self.open(rel.parent) as dfd:
                os.unlink(rel.name, dir_fd=dfd)
        except FileNotFoundError:
            return

    def rename(self, src: Path, dst: Path) -> None:
        """Rename inside the cache, both parents opened without following links (a link moves as itself)."""
        rs, rd = self.rel(src), self.rel(dst)
        with self.open(rs.parent) as sfd, self.open(rd.parent) as dfd:
            os.rename(rs.name, rd.name, src_dir_fd=sfd, dst_dir_fd=dfd)

    def listdir(self, rel: str) -> list[str]:
        with self.open(rel) as fd:
            return os.listdir(fd)

    def touch(self, path: Path) -> None:
        """Create or touch a marker file inside the cache; a link there is refused, not followed."""
        rel = self.rel(path)
        with self.open(rel.parent) as dfd:
            try:
                fd = os.open(rel.name, os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644, dir_fd=dfd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise link_error(path, "file") from None
                raise
            os.close(fd)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def remove_at(dfd: int, name: str) -> None:
    """Delete `name` in the folder `dfd`: a file or link is unlinked, a folder removed without following links."""
    try:
        st = os.lstat(name, dir_fd=dfd)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dfd, ignore_errors=True)  # the fd-based rmtree: links inside are unlinked
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dfd)


def within_real(root: Path, path: Path) -> bool:
    """True if `path`, with every link resolved, is `root` or inside it (for sources that would contain the cache)."""
    r, p = os.path.realpath(root), os.path.realpath(path)
    return p == r or p.startswith(r + os.sep)
