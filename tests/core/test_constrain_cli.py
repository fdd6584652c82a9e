"""`provender generate --schema/--choice/--regex/--grammar`, run as real processes.

Bad flags are one line and exit 2 before any model loads; good ones constrain a real random-weight
MLX llama (built on the spot), whose replies then parse and fit.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import jsonschema
import pytest

from helpers import run_cli

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 10},
        "count": {"type": "integer", "minimum": 0, "maximum": 99},
        "tags": {"type": "array", "items": {"enum": ["red", "green"]}, "maxItems": 2},
        "inner": {
            "type": "object",
            "properties": {"ok": {"type": "boolean"}},
            "required": ["ok"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "count", "tags", "inner"],
    "additionalProperties": False,
}


@pytest.fixture
def env(cache_dir: Path) -> dict[str, str]:
    return {"PROVENDER_CACHE__DIR": str(cache_dir), "PROVENDER_QUIET_PLUGIN_ERRORS": "1", "PROVENDER_NO_SERVER": "1"}


def refused(*args: str, env: dict[str, str]) -> str:
    """Run ``provender generate -m echo:plain ARGS hi``: exit 2 and one line, no traceback."""
    out = run_cli("generate", "-m", "echo:plain", *args, "hi", env=env)
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    return lines[0]


def test_a_schema_that_is_not_json(env: dict[str, str]) -> None:
    assert refused("--schema", '{"type": "object",', env=env) == (
        "Error: --schema: the argument is not JSON (Expecting property name enclosed in double quotes"
        " at line 1 column 19)"
    )


def test_a_schema_file_that_is_missing_or_not_json(env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    assert (
        refused("--schema", str(missing), env=env)
        == f"Error: --schema: {str(missing)!r} is neither a JSON Schema nor a file"
    )
    bad = tmp_path / "bad.json"
    bad.write_text("{]")
    assert refused("--schema", str(bad), env=env).startswith(f"Error: --schema: {bad} is not JSON (")


def test_an_invalid_schema(env: dict[str, str]) -> None:
    line = refused("--schema", '{"type": "objekt"}', env=env)
    assert line.startswith("Error: --schema: invalid schema=") and "Invalid type: objekt" in line
    assert "a JSON Schema object" in refused("--schema", "[1, 2]", env=env)


def test_an_invalid_regex(env: dict[str, str]) -> None:
    line = refused("--regex", "[a-", env=env)
    assert line.startswith("Error: --regex: invalid regex='[a-'") and "unclosed character class" in line


def test_an_invalid_or_missing_grammar(env: dict[str, str], tmp_path: Path) -> None:
    grammar = tmp_path / "g.lark"
    grammar.write_text("start: undefined_rule\n")
    assert "unknown name" in refused("--grammar", str(grammar), env=env)
    assert refused("--grammar", str(tmp_path / "none.lark"), env=env).startswith(
        f"Error: --grammar: cannot read {str(tmp_path / 'none.lark')!r}: No such file"
    )


def test_an_empty_choice_and_two_flags(env: dict[str, str]) -> None:
    assert refused("--choice", "yes,,no", env=env) == "Error: --choice: 'yes,,no' has an empty choice (expected A,B,C)"
    assert refused("--choice", "a,b", "--regex", "x+", env=env) == (
        "Error: --choice and --regex: give one of --schema, --choice, --regex, --grammar"
    )


# -- a real model ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_mlx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("mlx_lm")
    from provender_mlx.testing import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama", seed=0)


def generate(tiny_mlx: Path, env: dict[str, str], *args: str) -> str:
    out = run_cli("generate", "-m", f"mlx:{tiny_mlx}", "--max-tokens", "300", *args, "Hello", env=env, timeout=240)
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert out.stdout.endswith("\n")
    return out.stdout[:-1]


def test_schema_on_a_real_model(tiny_mlx: Path, env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(SCHEMA))
    for args in (("--schema", str(path)), ("--schema", json.dumps(SCHEMA), "--temperature", "1", "--seed", "3")):
        jsonschema.validate(json.loads(generate(tiny_mlx, env, *args)), SCHEMA)


def test_a_reply_cut_by_max_tokens_says_so(tiny_mlx: Path, env: dict[str, str]) -> None:
    for stream in ("--no-stream", "--stream"):
        cut = run_cli("generate", "-m", f"mlx:{tiny_mlx}", "--max-tokens", "2", "--schema", json.dumps(SCHEMA),
                      stream, "Hello", env=env, timeout=240)  # fmt: skip
        assert cut.returncode == 0 and "stopped at --max-tokens" in cut.stderr, (cut.stdout, cut.stderr)
    whole = run_cli("generate", "-m", f"mlx:{tiny_mlx}", "--choice", "yes,no", "Hello", env=env, timeout=240)
    assert whole.returncode == 0 and whole.stdout.strip() in ("yes", "no") and "warning" not in whole.stderr


def test_choice_regex_and_grammar_on_a_real_model(tiny_mlx: Path, env: dict[str, str], tmp_path: Path) -> None:
    assert generate(tiny_mlx, env, "--choice", "yes, no ,maybe later") in ("yes", "no", "maybe later")
    assert re.fullmatch(r"[a-z]{3}-[0-9]{2}", generate(tiny_mlx, env, "--regex", r"[a-z]{3}-[0-9]{2}"))
    grammar = tmp_path / "list.lark"
    grammar.write_text('start: "[" num ("," num)* "]"\nnum: /[0-9]{1,2}/\n')
    assert re.fullmatch(r"\[\d{1,2}(,\d{1,2})*\]", generate(tiny_mlx, env, "--grammar", str(grammar), "--stream"))


def test_a_constrained_reply_runs_here_while_a_server_answers(
    tiny_mlx: Path, env: dict[str, str], tmp_path: Path
) -> None:
    """With `provender serve` running, a constrained `generate` still fits: it runs in this process
    (the server's /v1/completions takes no constraint), and the server loads nothing for it."""
    pytest.importorskip("provender_serve")
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    served = {k: v for k, v in env.items() if k != "PROVENDER_NO_SERVER"}
    served |= {"PROVENDER_SERVER__PORT": str(port), "PROVENDER_DATA__DIR": str(tmp_path / "data")}
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "provender", "serve"], env={**os.environ, **served}, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                    if json.loads(response.read()).get("service") == "provender":
                        break
            except OSError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.2)
        assert generate(tiny_mlx, served, "--choice", "yes,no") in ("yes", "no")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/ps", timeout=10) as response:
            assert json.loads(response.read())["models"] == []
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
