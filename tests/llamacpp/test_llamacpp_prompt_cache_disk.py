"""llama.cpp's prompt caches saved in the shared disk cache (issue 22 item 3): sequence 0's KV cells
from llama.cpp's state API (no logits). A fresh load (and a new `provender generate` process) reads a
saved prefix instead of computing it, with the same greedy output token for token; one damaged or made
by another llama-cpp-python is never used, and the user is told once. Mirrors
tests/mlx/test_prompt_cache_disk.py."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from helpers import run_cli
from provender import CacheManager
from provender.generation import GenerationResult

SYSTEM = (
    "You are a careful assistant for a small shop that sells seven kinds of bright jars. "
    "Answer in one short sentence, name the jar when you can, and never invent a price. "
    "The jars are amber, blue, coral, dusk, ember, fern and gold; each holds a quiet wizard.\n"
)
QUESTION = "Which jar holds the quick brown fox that jumps over the lazy dog?"


@pytest.fixture(autouse=True)
def room(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVENDER_LLAMACPP__N_CTX", "2048")


def fresh(model: str, cache: CacheManager) -> Any:
    """A fresh load of `model` (nothing in memory), reading and saving prompt caches in `cache`."""
    from provender_llamacpp import LlamaCppProvider

    LlamaCppProvider.clear_model_cache()
    p = LlamaCppProvider(model, cache=cache)
    p.load_model()
    return p


def ask(p: Any, text: str) -> GenerationResult:
    result: GenerationResult = p.complete(text, max_tokens=8, logprobs=True, top_logprobs=3)
    return result


def same(a: GenerationResult, b: GenerationResult) -> None:
    assert a.text == b.text
    assert a.logprobs is not None and b.logprobs is not None
    assert [t.token_id for t in a.logprobs] == [t.token_id for t in b.logprobs]
    for s, t in zip(a.logprobs, b.logprobs, strict=True):
        assert s.logprob == pytest.approx(t.logprob, abs=1e-3)
        assert [name for name, _ in s.top] == [name for name, _ in t.top]


@pytest.fixture
def baseline(tiny_gguf: Path, tmp_path: Path) -> GenerationResult:
    p = fresh(str(tiny_gguf), CacheManager(tmp_path / "empty", max_size=10**9))
    result = ask(p, SYSTEM + QUESTION)
    assert p.prompt_cache().stats.disk_hits == 0
    return result


def saved(model: str, cache: CacheManager) -> int:
    entry = fresh(model, cache).save_prompt(SYSTEM)
    assert entry.kind == "prompt" and entry.metadata["prompt"]["runtime"] == "llama.cpp"
    return int(entry.metadata["prompt"]["tokens"])


def test_a_fresh_load_reads_the_saved_prefix_with_the_same_output(
    tiny_gguf: Path, cache_dir: Path, baseline: GenerationResult
) -> None:
    cm = CacheManager(cache_dir, max_size=10**9)
    n = saved(str(tiny_gguf), cm)
    assert n > 50
    p = fresh(str(tiny_gguf), cm)
    result = ask(p, SYSTEM + QUESTION)
    stats = p.prompt_cache().stats
    assert stats.disk_hits == 1 and stats.last_cached == n
    assert stats.last_prefilled == result.prompt_tokens - n and result.cached_tokens == n  # read from the disk
    same(result, baseline)
    assert (cm.stats().hits, cm.stats().misses) == (0, 0)


def test_a_new_process_reuses_it(tiny_gguf: Path, cache_dir: Path) -> None:
    env = {"PROVENDER_CACHE__DIR": str(cache_dir)}
    env["PROVENDER_LLAMACPP__N_CTX"] = "2048"
    model = str(tiny_gguf)
    out = run_cli("cache", "prompt", "-m", model, SYSTEM, env=env, timeout=180)
    assert out.returncode == 0, out.stderr
    args = ("generate", "--no-server", "-m", model, "--max-tokens", "8", SYSTEM + QUESTION)
    computed = run_cli(*args, env={**env, "PROVENDER_CACHE__PROMPT_CACHE_MAX_SIZE": "0"}, timeout=180)
    assert computed.returncode == 0, computed.stderr
    loaded = run_cli("-v", *args, env=env, timeout=180)
    assert loaded.returncode == 0, loaded.stderr
    assert "loaded a saved prompt cache of" in loaded.stderr
    assert "loaded a saved prompt cache" not in computed.stderr
    assert loaded.stdout == computed.stdout
    rows = json.loads(run_cli("cache", "ls", "--json", env=env).stdout)
    assert [r["prompt"]["runtime"] for r in rows if r["kind"] == "prompt"] == ["llama.cpp"]


def test_damaged_or_stale_is_refused_told_once_and_recomputed(
    tiny_gguf: Path, cache_dir: Path, baseline: GenerationResult, caplog: pytest.LogCaptureFixture
) -> None:
    cm = CacheManager(cache_dir, max_size=10**9)
    saved(str(tiny_gguf), cm)
    (entry,) = cm.prompts.entries()
    state = entry.path / "kv.bin"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF
    state.write_bytes(bytes(data))
    p = fresh(str(tiny_gguf), cm)
    with caplog.at_level(logging.WARNING, logger="provender.prompt_cache"):
        result = ask(p, SYSTEM + QUESTION)
        ask(p, SYSTEM + "Another one?")
    warned = [r.getMessage() for r in caplog.records if "not using the saved prompt cache" in r.getMessage()]
    assert len(warned) == 1 and "damaged" in warned[0]
    assert p.prompt_cache().stats.disk_hits == 0
    same(result, baseline)
    assert [i.key for i in cm.verify(fix=True)] == [entry.key]  # reported and dropped
    # saved again, then recorded as made by another llama-cpp-python: refused
    caplog.clear()
    saved(str(tiny_gguf), cm)
    con = sqlite3.connect(cache_dir / "index.db")
    with con:
        con.execute(
            "UPDATE entries SET metadata=json_set(metadata, '$.prompt.runtime_version', 'llama-cpp-python 0.1.0') "
            "WHERE kind='prompt'"
        )
    con.close()
    p = fresh(str(tiny_gguf), cm)
    with caplog.at_level(logging.WARNING, logger="provender.prompt_cache"):
        result = ask(p, SYSTEM + QUESTION)
    assert any("made by llama-cpp-python 0.1.0" in r.getMessage() for r in caplog.records)
    assert p.prompt_cache().stats.disk_hits == 0
    same(result, baseline)


def test_auto_save_above_a_length(
    tiny_gguf: Path, cache_dir: Path, baseline: GenerationResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROVENDER_CACHE__PROMPT_CACHE_AUTO_TOKENS", "40")
    cm = CacheManager(cache_dir, max_size=10**9)
    p = fresh(str(tiny_gguf), cm)
    first = ask(p, SYSTEM + QUESTION)
    (entry,) = cm.prompts.entries()
    assert entry.metadata["prompt"]["tokens"] == first.prompt_tokens
    p = fresh(str(tiny_gguf), cm)
    result = ask(p, SYSTEM + QUESTION)
    assert p.prompt_cache().stats.disk_hits == 1 and p.prompt_cache().stats.last_prefilled == 1
    same(result, baseline)
    same(first, baseline)
