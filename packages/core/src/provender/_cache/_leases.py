"""Leases: holding an entry in use, and taking it exclusively (to remove or replace it).

A lease is the read side of an OS file lock (``locks/<key>.lease``), so it ends when
its process does, however that dies. Removing or replacing an entry takes the write
side without waiting (`exclusive`): a live reader anywhere makes it fail at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from filelock import Timeout

from provender._cache._entry import CacheEntry
from provender._cache._locks import LeaseLock


@contextmanager
def exclusive(path: Path) -> Iterator[bool]:
    """Try to take the lease lock at `path` exclusively, without waiting.

    Yields True, holding it until the block ends, or False if a live process holds it
    (a lease); the one helper behind removing, replacing and asking "in use?".
    """
    lock = LeaseLock(path, is_singleton=False, blocking=False)
    try:
        lock.acquire_write()
    except Timeout:
        taken = False
    else:
        taken = True
    if not taken:
        lock.close()
        yield False
        return
    try:
        yield True
    finally:
        with suppress(Exception):
            lock.release()
        lock.close()


class Lease:
    """A hold on an entry: while it is held, no process evicts or removes the entry.

    The hold is an OS file lock, so it ends when the process does, however it dies.
    ``after_release(key)`` runs once the hold ends (the cache's `Evictor.after_release`: an
    eviction that passed over the entry while it was held happens then).
    """

    def __init__(self, entry: CacheEntry, lock: LeaseLock, after_release: Callable[[str], None] | None = None) -> None:
        self.entry = entry
        self._lock: LeaseLock | None = lock
        self._after_release = after_release

    @property
    def held(self) -> bool:
        return self._lock is not None

    def release(self) -> None:
        """Let go of the entry. If holding it blocked an eviction, that eviction happens now.

        A release alone evicts nothing else: the entry just used is not evicted by its own release.
        """
        lock, self._lock = self._lock, None
        if lock is not None:
            with suppress(Exception):
                lock.release()
            with suppress(Exception):
                lock.close()
            if self._after_release is not None:
                self._after_release(self.entry.key)

    def _drop(self) -> None:
        """Release without evicting (garbage collection, interpreter exit)."""
        self._after_release = None
        self.release()

    def __enter__(self) -> CacheEntry:
        return self.entry

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self._drop()
