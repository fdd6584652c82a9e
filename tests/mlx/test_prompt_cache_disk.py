"""MLX's prompt caches saved in the shared disk cache (issue 22 item 3): a fresh load of the model
(and a new `provender generate` process) reads a saved prefix instead of computing it, with the same
greedy output token for token; one that is damaged, stale (another mlx-lm version recorded) or of
other weights is never used, and the user is told once."""

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


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from provender_mlx.testing import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("pcd") / "llama", seed=3, hidden_size=64, layers=2)


@pytest.fixture(scope="module")
def other_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from provender_mlx.testing import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("pcd") / "other", seed=11, hidden_size=64, layers=2)


def fresh(model: str, cache: CacheManager) -> Any:
    """A fresh load of `model` (nothing in memory), reading and saving prompt caches in `cache`."""
    from provender_mlx import MLXProvider

    MLXProvider.clear_model_cache()
    p = MLXProvider(model, cache=cache)
    p.load_model()
    return p


def ask(p: Any, text: str) -> GenerationResult:
    result: GenerationResult = p.complete(text, max_tokens=8, logprobs=True, top_logprobs=3)
    return result


def same(a: GenerationResult, b: GenerationResult) -> None:
    """Token for token, and the model's logprobs of each to float32 precision."""
    assert a.text == b.text
    assert a.logprobs is not None and b.logprobs is not None
    assert [t.token_id for t in a.logprobs] == [t.token_id for t in b.logprobs]
    for s, t in zip(a.logprobs, b.logprobs, strict=True):
        assert s.logprob == pytest.approx(t.logprob, abs=1e-3)
        assert [name for name, _ in s.top] == [name for name, _ in t.top]


@pytest.fixture
def baseline(model_dir: Path, tmp_path: Path) -> GenerationResult:
    """The answer with nothing saved (an empty cache of its own)."""
    p = fresh(str(model_dir), CacheManager(tmp_path / "empty", max_size=10**9))
    result = ask(p, SYSTEM + QUESTION)
    assert p.prompt_cache().stats.disk_hits == 0
    return result


def saved(model: str, cache: CacheManager) -> int:
    """Save SYSTEM's prompt cache for `model` in `cache`; returns its tokens."""
    entry = fresh(model, cache).save_prompt(SYSTEM)
    assert entry.kind == "prompt"
    return int(entry.metadata["prompt"]["tokens"])


def test_a_fresh_load_reads_the_saved_prefix_with_the_same_output(
    model_dir: Path, cache_dir: Path, baseline: GenerationResult
) -> None:
    cm = CacheManager(cache_dir, max_size=10**9)
    n = saved(str(model_dir), cm)
    assert n > 50
    p = fresh(str(model_dir), cm)
    result = ask(p, SYSTEM + QUESTION)
    stats = p.prompt_cache().stats
    assert stats.disk_hits == 1 and stats.disk_tokens == n and stats.last_cached == n
    assert stats.last_prefilled == result.prompt_tokens - n  # only the question was processed
    same(result, baseline)
    again = ask(p, SYSTEM + QUESTION)  # memory holds the longer state now: the disk is not read again
    assert p.prompt_cache().stats.disk_hits == 1
    same(again, baseline)
    before = cm.stats()
    assert (before.hits, before.misses) == (0, 0)  # a directory model; prompt caches count none


def test_a_new_process_reuses_it(model_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    env = {"PROVENDER_CACHE__DIR": str(cache_dir)}
    text = tmp_path / "system.txt"
    text.write_text(SYSTEM)
    out = run_cli("cache", "prompt", "-m", str(model_dir), "--file", str(text), env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Saved the prompt cache of" in out.stdout
    (first,) = json.loads(run_cli("cache", "ls", "--json", env=env).stdout)[-1:]
    again = run_cli("cache", "prompt", "-m", str(model_dir), "--file", str(text), env=env, timeout=120)
    assert again.returncode == 0 and again.stdout.startswith("Already saved: the prompt cache of"), again
    (kept,) = json.loads(run_cli("cache", "ls", "--json", env=env).stdout)[-1:]
    assert kept["created"] == first["created"] and kept["hits"] == 0  # the intact one kept, not recomputed
    args = ("generate", "--no-server", "-m", str(model_dir), "--max-tokens", "8", SYSTEM + QUESTION)
    computed = run_cli(*args, env={**env, "PROVENDER_CACHE__PROMPT_CACHE_MAX_SIZE": "0"}, timeout=120)
    assert computed.returncode == 0, computed.stderr
    assert "loaded a saved prompt cache" not in computed.stderr
    loaded = run_cli("-v", *args, env=env, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    assert "loaded a saved prompt cache of" in loaded.stderr
    assert loaded.stdout == computed.stdout  # greedy: the same tokens
    rows = json.loads(run_cli("cache", "ls", "--json", env=env).stdout)
    (row,) = [r for r in rows if r["kind"] == "prompt"]
    assert row["hits"] == 1 and row["prompt"]["runtime"] == "mlx-lm"


def test_usage_errors_of_cache_prompt(model_dir: Path, cache_dir: Path) -> None:
    env = {"PROVENDER_CACHE__DIR": str(cache_dir)}
    out = run_cli("cache", "prompt", "-m", str(model_dir), env=env)
    assert out.returncode == 2 and "TEXT or --file" in out.stderr and "Traceback" not in out.stderr
    out = run_cli("cache", "prompt", "-m", str(model_dir), "--file", "/nonexistent/x", env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr


def test_a_damaged_file_is_refused_told_once_and_recomputed(
    model_dir: Path, cache_dir: Path, baseline: GenerationResult, caplog: pytest.LogCaptureFixture
) -> None:
    cm = CacheManager(cache_dir, max_size=10**9)
    saved(str(model_dir), cm)
    (entry,) = cm.prompts.entries()
    state = entry.path / "prompt_cache.safetensors"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte in the tensors
    state.write_bytes(bytes(data))
    p = fresh(str(model_dir), cm)
    with caplog.at_level(logging.WARNING, logger="provender.prompt_cache"):
        result = ask(p, SYSTEM + QUESTION)
        ask(p, SYSTEM + "Another question?")
    warnings = [r.getMessage() for r in caplog.records if "not using the saved prompt cache" in r.getMessage()]
    assert len(warnings) == 1 and "damaged" in warnings[0], warnings
    assert p.prompt_cache().stats.disk_hits == 0
    same(result, baseline)
    (issue,) = cm.verify()
    assert issue.key == entry.key and "sha256" in issue.problem


def test_another_runtime_version_is_refused(
    model_dir: Path, cache_dir: Path, baseline: GenerationResult, caplog: pytest.LogCaptureFixture
) -> None:
    cm = CacheManager(cache_dir, max_size=10**9)
    saved(str(model_dir), cm)
    con = sqlite3.connect(cache_dir / "index.db")
    with con:
        con.execute(
            "UPDATE entries SET metadata=json_set(metadata, '$.prompt.runtime_version', 'mlx-lm 0.0.1, mlx 0.0.1') "
            "WHERE kind='prompt'"
        )
    con.close()
    p = fresh(str(model_dir), cm)
    with caplog.at_level(logging.WARNING, logger="provender.prompt_cache"):
        result = ask(p, SYSTEM + QUESTION)
    assert any("made by mlx-lm 0.0.1" in r.getMessage() for r in caplog.records)
    assert p.prompt_cache().stats.disk_hits == 0
    same(result, baseline)


def test_another_model_never_uses_it(
    model_dir: Path, other_dir: Path, cache_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cm = CacheManager(cache_dir, max_size=10**9)
    saved(str(model_dir), cm)
    other_alone = ask(fresh(str(other_dir), CacheManager(tmp_path / "empty2", max_size=10**9)), SYSTEM + QUESTION)
    p = fresh(str(other_dir), cm)  # another directory, same tokenizer: the tokens match, the model does not
    result = ask(p, SYSTEM + QUESTION)
    assert p.prompt_cache().stats.disk_hits == 0
    same(result, other_alone)
    # the same name with other weights (an entry imported again): refused, and said
    cm.import_model(model_dir, "me/tiny")
    saved("me/tiny", cm)
    from provender_mlx import MLXProvider

    MLXProvider.clear_model_cache()  # the loaded model holds its entry's lease
    cm.import_model(other_dir, "me/tiny", replace=True)
    p = fresh("me/tiny", cm)
    with caplog.at_level(logging.WARNING, logger="provender.prompt_cache"):
        result = ask(p, SYSTEM + QUESTION)
    assert any("other weights" in r.getMessage() for r in caplog.records)
    assert p.prompt_cache().stats.disk_hits == 0
    same(result, other_alone)


def test_auto_save_above_a_length(
    model_dir: Path, cache_dir: Path, baseline: GenerationResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROVENDER_CACHE__PROMPT_CACHE_AUTO_TOKENS", "40")
    cm = CacheManager(cache_dir, max_size=10**9)
    p = fresh(str(model_dir), cm)
    ask(p, "Too short to save.")
    assert cm.prompts.entries() == []
    first = ask(p, SYSTEM + QUESTION)
    (entry,) = cm.prompts.entries()
    assert entry.metadata["prompt"]["tokens"] == first.prompt_tokens  # the prompt, not the reply
    ask(p, SYSTEM + QUESTION)
    assert len(cm.prompts.entries()) == 1  # covered already: not saved twice
    p = fresh(str(model_dir), cm)
    result = ask(p, SYSTEM + QUESTION)  # all but the last token comes from the disk
    assert p.prompt_cache().stats.disk_hits == 1 and p.prompt_cache().stats.last_prefilled == 1
    same(result, baseline)
    same(first, baseline)


def test_a_batch_session_reads_it_too(model_dir: Path, cache_dir: Path) -> None:
    cm = CacheManager(cache_dir, max_size=10**9)
    n = saved(str(model_dir), cm)
    p = fresh(str(model_dir), cm)
    session = p.batch_session()
    try:
        uid = session.insert(SYSTEM + QUESTION, max_tokens=4)
        done = False
        while not done:
            done = any(u == uid and c.finish_reason is not None for u, c in session.step_chunks())
    finally:
        session.close()
    stats = p.prompt_cache().stats
    assert stats.disk_hits == 1 and stats.disk_tokens == n
