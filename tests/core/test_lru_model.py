"""LRU order checked against a reference model, with hypothesis stateful testing on a real cache."""

from __future__ import annotations

import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from provender import CacheManager, EntryInUseError, EntryTooLargeError

MAX_SIZE = 1000
KEYS = st.sampled_from([f"k{i}" for i in range(6)])


class CacheModel(RuleBasedStateMachine):
    """The reference: an ordered dict from least to most recently used, plus a set of pins."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="provender-lru-"))
        self.cm = CacheManager(self.root / "cache", max_size=MAX_SIZE)
        self.model: OrderedDict[str, int] = OrderedDict()
        self.pinned: set[str] = set()
        self.counter = 0

    def teardown(self) -> None:
        self.cm._index.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def _evict_model(self, protect: str) -> None:
        total = sum(self.model.values())
        for key in list(self.model):
            if total <= MAX_SIZE:
                break
            if key == protect or key in self.pinned:
                continue
            total -= self.model.pop(key)

    @rule(key=KEYS, size=st.integers(min_value=1, max_value=1200))
    def add(self, key: str, size: int) -> None:
        self.counter += 1
        src = self.root / f"src-{self.counter}.bin"
        src.write_bytes(b"x" * size)
        if size > MAX_SIZE:
            try:
                self.cm.cache_model(src, key)
            except EntryTooLargeError:
                return
            raise AssertionError("an oversized entry was accepted")
        if key in self.pinned and key in self.model:
            try:
                self.cm.cache_model(src, key)
            except EntryInUseError:
                return
            raise AssertionError("a pinned entry was replaced")
        self.cm.cache_model(src, key)
        self.model.pop(key, None)
        self.pinned.discard(key)
        self.model[key] = size
        self._evict_model(protect=key)

    @rule(key=KEYS)
    def get(self, key: str) -> None:
        path = self.cm.get_cached_model(key)
        assert (path is not None) == (key in self.model)
        if key in self.model:
            self.model.move_to_end(key)

    @precondition(lambda self: bool(self.model))
    @rule(data=st.data())
    def pin(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.model)))
        self.cm.pin(key)
        self.pinned.add(key)

    @precondition(lambda self: bool(self.pinned))
    @rule(data=st.data())
    def unpin(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.pinned)))
        self.cm.unpin(key)
        self.pinned.discard(key)

    @rule(limit=st.integers(min_value=0, max_value=MAX_SIZE))
    def prune(self, limit: int) -> None:
        evicted = [e.key for e in self.cm.cleanup_old_models(max_size=limit)]
        expected = []
        total = sum(self.model.values())
        for key in list(self.model):
            if total <= limit:
                break
            if key in self.pinned:
                continue
            total -= self.model.pop(key)
            expected.append(key)
        assert evicted == expected

    @invariant()
    def same_entries_and_order(self) -> None:
        entries = self.cm.entries(sort="used")
        assert {e.key: e.size for e in entries} == dict(self.model)
        # entries(sort="used") lists most recently used first
        assert [e.key for e in reversed(entries)] == list(self.model)
        assert {e.key for e in entries if e.pinned} == self.pinned & set(self.model)


TestLRUAgainstModel = CacheModel.TestCase
TestLRUAgainstModel.settings = settings(max_examples=25, stateful_step_count=25, deadline=None)
