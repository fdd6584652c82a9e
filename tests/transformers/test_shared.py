"""One cache, several providers: claims by content, `providers.prefer`, one snapshot served by MLX and transformers."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from fakehub import FakeHub
from helpers import run_cli
from provender import CacheManager, get_plugin_manager, get_provider, model_pool
from provender_transformers import TransformersProvider

MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def disk_usage(root: Path) -> tuple[int, int]:
    """(bytes, files) of the regular files under `root`, each inode counted once (links are free)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if os.path.stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total, len(seen)


def test_one_hub_snapshot_serves_mlx_and_transformers_with_no_extra_bytes(
    minilm_dir: Path, cache_dir: Path, fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("mlx.core", reason="the MLX side needs mlx (tox installs it)")
    from provender_mlx import MLXProvider

    files = {
        str(p.relative_to(minilm_dir)): p.read_bytes()
        for p in minilm_dir.rglob("*")
        if p.is_file() and p.name != "README.md"
    }
    fake_hub.add(MODEL, files)
    monkeypatch.setenv("PROVENDER_CACHE__DIR", str(cache_dir))
    monkeypatch.setenv("HF_ENDPOINT", fake_hub.endpoint)
    pulled = run_cli("pull", MODEL)
    assert pulled.returncode == 0, pulled.stderr
    entry = CacheManager().get(MODEL)
    assert entry.kind == "hub" and (cache_dir / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2").is_dir()
    hub_before, whole_before = disk_usage(cache_dir / "hub"), disk_usage(cache_dir)
    assert hub_before[0] > 80_000_000  # the real weights are there

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may be fetched from now on
    texts = ["the shared cache", "one snapshot, two providers", ""]
    via_mlx = get_provider(f"mlx:{MODEL}").embed(texts)
    via_torch = get_provider(f"transformers:{MODEL}").embed(texts)
    assert isinstance(get_provider(f"mlx:{MODEL}"), MLXProvider)
    cos = (via_mlx * via_torch).sum(axis=1) / np.linalg.norm(via_mlx, axis=1) / np.linalg.norm(via_torch, axis=1)
    assert cos.min() >= 0.999  # two engines, the same model
    loaded = {row["provider"]: row["path"] for row in model_pool().snapshot()}
    assert loaded == {"mlx": str(entry.model_path), "transformers": str(entry.model_path)}  # the same files

    assert disk_usage(cache_dir / "hub") == hub_before  # not one byte or file more in the model store
    whole_after = disk_usage(cache_dir)
    assert whole_after[0] - whole_before[0] < 256 * 1024  # only bookkeeping (index, leases)
    hf_home = Path(os.environ["HF_HOME"])
    assert not hf_home.exists() or disk_usage(hf_home)[0] < 1024  # no second copy in ~/.cache/huggingface
    assert fake_hub.downloads.count(f"{MODEL}/model.safetensors") == 1


def test_providers_prefer_picks_the_claimant(minilm: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlx.core", reason="needs the MLX provider installed")
    from provender_mlx import MLXProvider

    entry = CacheManager().get(minilm)
    assert sorted(get_plugin_manager().claim(entry)) == ["mlx", "transformers"]
    monkeypatch.setenv("PROVENDER_PROVIDERS__PREFER", "transformers,mlx")
    assert isinstance(get_provider(minilm), TransformersProvider)
    rows = json.loads(run_cli("models", "--json").stdout)
    assert [(r["model"], r["providers"], r["provider"]) for r in rows] == [
        (f"transformers:{minilm}", ["transformers", "mlx"], "transformers")
    ]
    monkeypatch.setenv("PROVENDER_PROVIDERS__PREFER", "mlx")  # the others follow
    assert isinstance(get_provider(minilm), MLXProvider)
    assert isinstance(get_provider(f"transformers:{minilm}"), TransformersProvider)  # provider:model always wins
    [row] = json.loads(run_cli("cache", "ls", "--json").stdout)
    assert (row["providers"], row["provider"]) == (["mlx", "transformers"], "mlx")
    table = run_cli("models").stdout
    assert "mlx" in table.splitlines()[1] and "transformers" in table.splitlines()[1]


def test_default_preference_is_the_fastest_here(monkeypatch: pytest.MonkeyPatch) -> None:
    import platform

    from provender import load_settings
    from provender._resolve import prefer_order

    apple = platform.system() == "Darwin" and platform.machine() == "arm64"
    # the core names no plugin: the providers declare their priority when they register (issue 20)
    assert load_settings().providers.prefer == []
    assert prefer_order(["mlx", "transformers"])[0] == ("mlx" if apple else "transformers")
    assert prefer_order(["transformers", "mlx"])[0] == ("mlx" if apple else "transformers")
    monkeypatch.setenv("PROVENDER_PROVIDERS__PREFER", "mlx")
    assert prefer_order(["transformers", "mlx"])[0] == "mlx"


def test_claims_by_content_not_by_name(tiny_llama: Path, tmp_path: Path, cache_dir: Path) -> None:
    cm = CacheManager(cache_dir)

    def variant(name: str, **config_changes: object) -> Path:
        path = tmp_path / name
        shutil.copytree(tiny_llama, path)
        config = json.loads((path / "config.json").read_text())
        config.update(config_changes)
        (path / "config.json").write_text(json.dumps(config))
        return path

    cm.import_model(tiny_llama, "someone/llama-mlx-4bit")  # "mlx" in the name, transformers' files
    cm.import_model(variant("q", quantization={"group_size": 64, "bits": 4}), "someone/llama-q4")
    cm.import_model(variant("alien", model_type="not-a-known-architecture"), "someone/alien")
    cm.import_model(variant("remote", architectures=["SecretForCausalLM"], model_type="secret"), "someone/remote")
    manager = get_plugin_manager()
    claims = {e.name: "transformers" in manager.claim(e) for e in cm.entries()}
    assert claims == {
        "someone/llama-mlx-4bit": True,
        "someone/llama-q4": False,  # MLX-quantized: mlx serves it
        "someone/alien": False,
        "someone/remote": False,  # would need remote code: never run
    }
    mlx_testing = pytest.importorskip("provender_mlx.testing")
    pytest.importorskip("mlx.core")
    mlx_dir = mlx_testing.build_tiny_llama(tmp_path / "mlx-written")
    assert "transformers" not in manager.claim(cm.import_model(mlx_dir, "someone/plain-name"))


def test_disk_eviction_reaches_the_pool(minilm: str) -> None:
    provider = TransformersProvider(minilm)
    provider.embed(["x"])
    assert provider.key in model_pool()
    get_plugin_manager().hook.provender_cache_evicted(entry=CacheManager().get(minilm))
    assert provider.key not in model_pool() and not CacheManager().in_use(minilm)
