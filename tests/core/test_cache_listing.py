"""The listing's sync with the disk (`Catalog.reconcile`) reads only keys and stamps: an entry
whose files changed behind the cache's back is still read whole and updated, and what the index
alone knows of it (uses, hits, metadata) is kept."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from provender import CacheManager


def test_a_hub_repo_that_grew_behind_the_cache_is_listed_with_its_new_size(cache_dir: Path, fake_hub: Any) -> None:
    from huggingface_hub import scan_cache_dir, snapshot_download

    cm = CacheManager(cache_dir, max_size=10**7)
    fake_hub.add("org/tiny", {"config.json": b"{}", "model.safetensors": os.urandom(2000)})
    snapshot_download("org/tiny", cache_dir=cache_dir / "hub", endpoint=fake_hub.endpoint)
    [first] = cm.entries()
    with cm.acquire("org/tiny"):  # a use and a hit, which only the index knows
        pass
    used = cm.get("org/tiny")
    assert used.hits == 1 and used.last_used is not None
    # another tool downloads a new revision into the same repo folder: its stamp changes
    fake_hub.add("org/tiny", {"config.json": b'{"v": 2}', "model.safetensors": os.urandom(5000)})
    snapshot_download("org/tiny", cache_dir=cache_dir / "hub", endpoint=fake_hub.endpoint)
    [after] = cm.entries()
    [repo] = scan_cache_dir(cache_dir / "hub").repos
    assert after.size == repo.size_on_disk and after.size > first.size
    assert (after.hits, after.last_used, after.created) == (used.hits, used.last_used, first.created)
    assert after.metadata["repo_id"] == "org/tiny" and after.metadata == first.metadata
    # an unchanged listing changes nothing, and a repo that vanished leaves it
    assert cm.entries() == [after]
    import shutil

    shutil.rmtree(after.path)
    assert cm.entries() == []
