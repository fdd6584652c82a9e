"""MLXProvider on real mlx and a real (tiny) model, through the shared cache."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import mlx_lm
import pytest

from fakehub import FakeHub
from helpers import run_cli
from provender import (
    CacheManager,
    EntryInUseError,
    InvalidOptionError,
    ModelNotFoundError,
    UnsupportedError,
    get_plugin_manager,
    get_provider,
    model_pool,
)
from provender.testing import ProviderContract
from provender_mlx import MLXProvider

PROMPT = "Hello world, the shared cache"


class TestMLXContract(ProviderContract):
    """provender's reusable contract suite, run against the MLX provider."""

    provider_name = "mlx"
    capabilities = {"generate", "stream", "chat"}
    deterministic_options = {"temperature": 0.0, "max_tokens": 6}

    @pytest.fixture(autouse=True)
    def _model(self, tiny_model: Path) -> None:
        type(self).model = str(tiny_model)


def test_greedy_matches_mlx_lm_exactly(cached_tiny: str, tiny_model: Path) -> None:
    model, tokenizer = mlx_lm.load(str(tiny_model))
    expected = mlx_lm.generate(model, tokenizer, PROMPT, max_tokens=24)
    provider = get_provider(cached_tiny)  # claimed by content: MLX-written safetensors
    assert isinstance(provider, MLXProvider)
    assert provider.generate(PROMPT, max_tokens=24, temperature=0) == expected
    assert "".join(provider.stream(PROMPT, max_tokens=24)) == expected
    assert expected  # random weights still produce tokens; equal text means equal tokens here


def test_seed_makes_sampling_repeatable(cached_tiny: str) -> None:
    provider = MLXProvider(cached_tiny)
    runs = {provider.generate(PROMPT, max_tokens=16, temperature=1.0, seed=s) for s in (7, 7, 7)}
    assert len(runs) == 1
    others = {provider.generate(PROMPT, max_tokens=16, temperature=1.0, seed=s) for s in range(5)}
    assert len(others) > 1  # sampling really samples


def test_stop_strings_cut_generation(cached_tiny: str) -> None:
    provider = MLXProvider(cached_tiny)
    full = provider.generate(PROMPT, max_tokens=24)
    stop = full[5:8]
    cut = provider.generate(PROMPT, max_tokens=24, stop=[stop])
    assert cut == full[: full.index(stop)] and stop not in cut
    assert "".join(provider.stream(PROMPT, max_tokens=24, stop=stop)) == cut


def test_chat_uses_the_models_template(cached_tiny: str, tiny_model: Path) -> None:
    model, tokenizer = mlx_lm.load(str(tiny_model))
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert rendered.endswith("<|im_start|>assistant\n")
    expected = mlx_lm.generate(model, tokenizer, rendered, max_tokens=12)
    provider = MLXProvider(cached_tiny)
    assert provider.chat(messages, max_tokens=12) == expected
    assert provider.generate("Hello", system_prompt="Be brief.", max_tokens=12) == expected


def test_second_load_comes_from_memory(cached_tiny: str) -> None:
    start = time.perf_counter()
    MLXProvider(cached_tiny).load_model()
    cold = time.perf_counter() - start
    assert cached_tiny in MLXProvider._model_cache
    start = time.perf_counter()
    model, _ = MLXProvider(cached_tiny).load_model()
    warm = time.perf_counter() - start
    assert model is MLXProvider._model_cache.get(cached_tiny).model  # type: ignore[union-attr]
    assert warm * 20 < cold, (warm, cold)


def test_max_models_evicts_least_recently_used(
    tiny_model: Path, tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROVENDER_CACHE__DIR", str(cache_dir))
    monkeypatch.setenv("PROVENDER_MEMORY__MAX_MODELS", "2")
    cm = CacheManager()
    for name in ("a", "b", "c"):
        cm.import_model(tiny_model, f"test/{name}")
    MLXProvider("test/a").load_model()
    MLXProvider("test/b").load_model()
    MLXProvider("test/a").load_model()  # a is now the most recent: b goes next
    MLXProvider("test/c").load_model()
    assert MLXProvider._model_cache.names() == ["test/a", "test/c"]
    assert not cm.in_use("test/b") and cm.in_use("test/a")  # unloading released its lease
    cm.remove("test/b")


def test_keep_alive_unloads_idle_models(cached_tiny: str) -> None:
    MLXProvider._model_cache.configure(max_models=2, keep_alive=0.3)
    MLXProvider(cached_tiny).load_model()
    assert cached_tiny in MLXProvider._model_cache
    deadline = time.monotonic() + 10
    while cached_tiny in MLXProvider._model_cache and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cached_tiny not in MLXProvider._model_cache  # the reaper unloaded it unasked
    assert not CacheManager().in_use(cached_tiny)


def test_clear_model_cache_one_and_all(tiny_model: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVENDER_CACHE__DIR", str(cache_dir))
    cm = CacheManager()
    cm.import_model(tiny_model, "test/a")
    cm.import_model(tiny_model, "test/b")
    MLXProvider("test/a").load_model()
    MLXProvider("test/b").load_model()
    assert MLXProvider.clear_model_cache("test/a") == ["test/a"]
    assert MLXProvider._model_cache.names() == ["test/b"]
    assert MLXProvider.clear_model_cache("test/nope") == []
    assert MLXProvider.clear_model_cache() == ["test/b"] and len(MLXProvider._model_cache) == 0
    assert {e.name for e in cm.entries()} == {"test/a", "test/b"}  # the disk cache is untouched


def test_disk_eviction_of_a_loaded_model_is_refused(cached_tiny: str) -> None:
    MLXProvider(cached_tiny).load_model()
    cm = CacheManager()
    with pytest.raises(EntryInUseError):
        cm.remove(cached_tiny)
    assert cm.cleanup_old_models(max_size=0) == []
    out = run_cli("cache", "rm", "-y", cached_tiny)  # another process is refused too
    assert out.returncode == 1 and "a running process is using it" in out.stderr
    MLXProvider.clear_model_cache(cached_tiny)
    assert [e.name for e in cm.cleanup_old_models(max_size=0)] == [cached_tiny]


def test_evicted_hook_drops_the_model_from_memory(cached_tiny: str) -> None:
    MLXProvider(cached_tiny).load_model()
    entry = CacheManager().get(cached_tiny)
    get_plugin_manager().hook.provender_cache_evicted(entry=entry)
    assert cached_tiny not in MLXProvider._model_cache


def test_list_cached_models_after_restart(cached_tiny: str, tiny_model: Path, tmp_path: Path) -> None:
    other = tmp_path / "not-mlx"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (other / "model.safetensors").write_bytes((tiny_model / "model.safetensors").read_bytes()[:8] + b"{}")
    CacheManager().import_model(other, "test/mlx-in-name-only-not-mlx")
    MLXProvider(cached_tiny).generate("x", max_tokens=2)
    code = "import json; from provender_mlx import MLXProvider; print(json.dumps(MLXProvider.list_cached_models()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    [row] = json.loads(out.stdout)
    assert row["name"] == cached_tiny and row["implementation"] == "mlx"
    assert row["size"] == CacheManager().get(cached_tiny).size and row["last_used"] is not None


def test_hub_layout_entry_offline(tiny_model: Path, cache_dir: Path, fake_hub: FakeHub) -> None:
    files = {p.name: p.read_bytes() for p in tiny_model.iterdir()}
    fake_hub.add("test-org/tiny-llama", files)
    env = {"PROVENDER_CACHE__DIR": str(cache_dir), "HF_ENDPOINT": fake_hub.endpoint}
    first = run_cli("generate", "-m", "mlx:test-org/tiny-llama", "--max-tokens", "8", "Hello", env=env)
    assert first.returncode == 0, first.stderr  # downloaded into <cache.dir>/hub by huggingface_hub
    assert (cache_dir / "hub" / "models--test-org--tiny-llama" / "snapshots").is_dir()
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    again = run_cli("generate", "-m", "test-org/tiny-llama", "--max-tokens", "8", "Hello", env=offline)
    assert again.returncode == 0 and again.stdout == first.stdout  # from the cache, claimed by content
    assert fake_hub.downloads.count("test-org/tiny-llama/model.safetensors") == 1
    missing = run_cli("generate", "-m", "mlx:test-org/other", "Hello", env=offline)
    assert missing.returncode == 1 and "offline" in missing.stderr and "Traceback" not in missing.stderr
    stats = json.loads(run_cli("cache", "stats", "--json", env=env).stdout)
    assert stats["hits"] >= 2 and stats["misses"] >= 1


@pytest.mark.parametrize(
    ("model", "options", "error", "needle"),
    [
        ("test/nope-not-cached-anywhere", {}, ModelNotFoundError, "nope"),
        ("./no/such/dir", {}, ModelNotFoundError, "no such directory"),
        (None, {"temperature": -1}, InvalidOptionError, "temperature"),
        (None, {"max_tokens": 0}, InvalidOptionError, "max_tokens"),
    ],
)
def test_bad_input_is_a_clear_error(
    cached_tiny: str,
    model: str | None,
    options: dict[str, object],
    error: type[Exception],
    needle: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # huggingface_hub reads HF_HUB_OFFLINE at import: set its own switch, so nothing tries the network
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(error, match=needle):
        MLXProvider(model or cached_tiny).generate("x", **options)


def test_a_directory_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelNotFoundError, match="model_type"):
        MLXProvider(str(tmp_path)).generate("x")


def test_async_forms(cached_tiny: str) -> None:
    provider = MLXProvider(cached_tiny)
    expected = provider.generate(PROMPT, max_tokens=10)

    async def main() -> tuple[str, str]:
        chunks = [c async for c in provider.astream(PROMPT, max_tokens=10)]
        return await provider.agenerate(PROMPT, max_tokens=10), "".join(chunks)

    assert asyncio.run(main()) == (expected, expected)


def test_cli_generate_and_models(cached_tiny: str, tiny_model: Path) -> None:
    model, tokenizer = mlx_lm.load(str(tiny_model))
    expected = mlx_lm.generate(model, tokenizer, "Hello", max_tokens=8)
    out = run_cli("generate", "-m", cached_tiny, "--max-tokens", "8", "Hello")
    assert out.returncode == 0 and out.stdout == expected + "\n"
    streamed = run_cli("generate", "-m", cached_tiny, "--max-tokens", "8", "--stream", "Hello")
    assert streamed.stdout == expected + "\n"
    models = json.loads(run_cli("models", "--json").stdout)
    assert [m["model"] for m in models] == [f"mlx:{cached_tiny}"]
    bad = run_cli("generate", "-m", cached_tiny, "--max-tokens", "0", "Hello")
    assert bad.returncode == 2 and "max_tokens" in bad.stderr and "Traceback" not in bad.stderr


def test_plugin_reports_unusable_mlx(tmp_path: Path) -> None:
    # mlx as it is after `pip install mlx-lm` alone on Linux: present, but mlx.core fails to import
    broken = tmp_path / "shadow" / "mlx"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("")
    (broken / "core.py").write_text("raise ImportError('libmlx.so: cannot open shared object file')\n")
    env = {"PYTHONPATH": str(tmp_path / "shadow")}
    plugins = {p["name"]: p for p in json.loads(run_cli("plugins", "--json", env=env).stdout)}
    assert plugins["mlx"]["status"] == "failed"
    assert 'pip install "provender[mlx]"' in plugins["mlx"]["error"] and "libmlx" in plugins["mlx"]["error"]
    out = run_cli("generate", "-m", "echo:upper", "still fine", env=env)
    assert out.returncode == 0 and out.stdout.strip() == "STILL FINE"


def test_contract_additions_count_tokens_unload_and_the_shared_pool(cached_tiny: str, tiny_model: Path) -> None:
    _, tokenizer = mlx_lm.load(str(tiny_model))
    provider = MLXProvider(cached_tiny)
    assert provider.count_tokens(PROMPT) == len(tokenizer.encode(PROMPT)) > 3
    rows = [r for r in model_pool().snapshot() if r["key"] == f"mlx:{cached_tiny}"]
    assert [(r["name"], r["provider"], r["kind"]) for r in rows] == [(cached_tiny, "mlx", "generation")]
    chunks = list(provider.stream_chat([{"role": "user", "content": "Hi"}], max_tokens=6))
    assert "".join(chunks) == provider.chat([{"role": "user", "content": "Hi"}], max_tokens=6)
    with pytest.raises(UnsupportedError, match="embedding"):
        provider.dimension()
    provider.unload()
    assert cached_tiny not in MLXProvider._model_cache and not CacheManager().in_use(cached_tiny)
    provider.unload()  # nothing loaded: nothing to do
