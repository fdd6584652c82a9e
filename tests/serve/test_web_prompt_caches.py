"""The web page's cache view lists saved prompt caches as their own kind, never claimed as models."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from provender import CacheManager


def test_the_cache_view_shows_prompt_caches_as_their_own_kind(cache_dir: Path, make_files: Any) -> None:
    from provender_serve._web_api import cache_view

    cm = CacheManager(cache_dir, max_size=10**6)
    cm.import_model(make_files("m", {"w.bin": 500}), "me/model")
    entry = cm.prompts.save(
        model="me/model",
        model_id="local:x",
        runtime="test-runtime",
        version="test 1",
        tokens=[1, 2, 3],
        write=lambda folder: (folder / "state.bin").write_bytes(os.urandom(300)),
    )
    view = cache_view(cm)
    rows = {r["name"]: r for r in view["entries"]}
    assert rows[entry.name]["kind"] == "prompt" and rows[entry.name]["providers"] == []
    assert rows["me/model"]["kind"] == "local"
    assert view["stats"]["entries"] == 2 and view["stats"]["size"] == sum(r["size"] for r in rows.values())
