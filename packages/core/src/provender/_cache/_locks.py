"""The cache's locks, opened so that no planted link and no swapped folder can redirect them.

`GuardedLock` is the cache-wide lock (``.lock``); `LeaseLock` is the read-write lock of one
entry (``locks/<key>.lease``): a process using an entry holds the shared side, removal and
eviction need the exclusive side. Both are ``flock`` locks on files opened with
``O_NOFOLLOW`` through descriptors held since start (``/proc/self/fd`` on Linux), so a
process that dies, however it dies, holds nothing. Without ``fcntl`` (Windows) they fall
back to filelock's locks by path.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import Timeout

from provender._cache._layout import link_error

if TYPE_CHECKING:
    from provender._cache._layout import Walls

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _clear(exc: OSError, shown: str) -> Exception:
    if exc.errno == errno.ELOOP:
        return link_error(shown, "file")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        from provender.errors import CacheNotWritableError

        return CacheNotWritableError(Path(shown), f"the cache's lock file: {exc.strerror}")
    return exc


class LeaseLock:
    """A read-write lock on one lease file (the interface of filelock's ``ReadWriteLock`` the cache uses).

    Non-blocking acquisition raises ``filelock.Timeout`` when the other side is held.
    """

    def __init__(self, path: Path, is_singleton: bool = False, blocking: bool = True) -> None:
        self.path = path
        self.blocking = blocking
        self._fd: int | None = None
        self._fallback = None
        if fcntl is None:  # pragma: no cover - Windows
            from filelock import ReadWriteLock

            self._fallback = ReadWriteLock(path, is_singleton=False, blocking=blocking)

    def _acquire(self, shared: bool) -> None:
        if self._fallback is not None:  # pragma: no cover - Windows
            (self._fallback.acquire_read if shared else self._fallback.acquire_write)()
            return
        assert fcntl is not None
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this lock")
        try:
            fd = os.open(self.path, _OPEN_FLAGS, 0o644)
        except OSError as exc:
            raise _clear(exc, str(self.path)) from None
        op = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fd, op if self.blocking else op | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Timeout(str(self.path)) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def acquire_read(self) -> None:
        """Take the shared side (a reader: the entry is in use)."""
        self._acquire(shared=True)

    def acquire_write(self) -> None:
        """Take the exclusive side (removal, eviction, replacement)."""
        self._acquire(shared=False)

    def release(self) -> None:
        if self._fallback is not None:  # pragma: no cover - Windows
            self._fallback.release()
            return
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                assert fcntl is not None
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def close(self) -> None:
        if self._fallback is not None:  # pragma: no cover - Windows
            self._fallback.close()
            return
        self.release()


class GuardedLock:
    """The cache's lock (``.lock``), taken only after the walls are checked, with clear errors.

    On Linux the lock file is opened relative to the cache folder's descriptor held since
    start (``O_NOFOLLOW``), then locked with ``flock``: neither a link planted at ``.lock``
    nor a cache folder swapped for another can make it create or lock a file elsewhere.
    It interoperates with filelock's ``FileLock`` (also ``flock``) used elsewhere.
    Re-entrant within a thread, exclusive between threads and processes.
    """

    def __init__(self, walls: Walls) -> None:
        self._walls = walls
        self.lock_file = str(walls.root / ".lock")  # for messages
        self._mutex = threading.RLock()
        self._count = 0
        self._fd: int | None = None
        self._fallback = None
        if walls.root_fd() is None or fcntl is None:  # no held descriptor (not Linux): filelock by path
            from filelock import FileLock

            self._fallback = FileLock(self.lock_file, mode=0o644)

    @property
    def is_locked(self) -> bool:
        return self._count > 0

    def _open(self) -> int:
        root_fd = self._walls.root_fd()
        assert root_fd is not None
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(".lock", flags, 0o644, dir_fd=root_fd)
        except OSError as exc:
            raise self._clear(exc) from None
        return fd

    def _clear(self, exc: OSError) -> Exception:
        return _clear(exc, self.lock_file)

    def acquire(self, timeout: float | None = None) -> GuardedLock:
        self._mutex.acquire()
        try:
            if self._count == 0:
                self._walls.check()  # still this cache, still marked
                if self._fallback is not None:
                    try:
                        self._fallback.acquire(timeout=timeout)
                    except OSError as exc:
                        raise self._clear(exc) from None
                else:
                    fd = self._open()
                    try:
                        assert fcntl is not None
                        fcntl.flock(fd, fcntl.LOCK_EX)
                    except BaseException:
                        os.close(fd)
                        raise
                    self._fd = fd
            self._count += 1
        except BaseException:
            self._mutex.release()
            raise
        return self

    def release(self, force: bool = False) -> None:
        if self._count == 0:
            return
        self._count -= 1
        if self._count == 0:
            if self._fallback is not None:
                self._fallback.release()
            elif self._fd is not None:
                fd, self._fd = self._fd, None
                try:
                    assert fcntl is not None
                    fcntl.flock(fd, fcntl.LOCK_UN)
                finally:
                    os.close(fd)
        self._mutex.release()

    def __enter__(self) -> GuardedLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
