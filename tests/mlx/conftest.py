"""A tiny random llama model, built once per session with mlx-lm's own classes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

mlx_lm = pytest.importorskip("mlx_lm", reason="provender-mlx tests need mlx-lm (tox installs it)")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from provender_mlx.testing import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama", seed=0)


@pytest.fixture(autouse=True)
def fresh_memory() -> Iterator[None]:
    """Every test starts with nothing loaded and the default limits."""
    from provender_mlx import MLXProvider

    MLXProvider.clear_model_cache()
    MLXProvider._model_cache.configure(max_models=None, keep_alive=None)
    yield
    MLXProvider.clear_model_cache()
    MLXProvider._model_cache.configure(max_models=None, keep_alive=None)


@pytest.fixture
def cached_tiny(tiny_model: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The tiny model imported into the test's cache as test/tiny; the settings point at that cache."""
    from provender import CacheManager

    monkeypatch.setenv("PROVENDER_CACHE__DIR", str(cache_dir))
    CacheManager().import_model(tiny_model, "test/tiny")
    return "test/tiny"
