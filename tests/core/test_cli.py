"""The `provender` command line, run as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fakehub import FakeHub
from helpers import run_cli


@pytest.fixture
def env(cache_dir: Path) -> dict[str, str]:
    return {"PROVENDER_CACHE__DIR": str(cache_dir), "PROVENDER_QUIET_PLUGIN_ERRORS": "1"}


def ok(*args: str, env: dict[str, str], input: str | None = None) -> str:
    out = run_cli(*args, env=env, input=input)
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    return out.stdout


def test_help_imports_nothing_heavy() -> None:
    code = (
        "import sys; from provender._cli import _build; _build(); "
        "heavy = [m for m in ('pydantic', 'pydantic_settings', 'huggingface_hub', 'numpy', 'mlx', 'torch', "
        "'transformers', 'platformdirs', 'provender._cache', 'provender._settings') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    plain = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, provender; print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('pydantic', 'click', 'pluggy', 'huggingface_hub', 'numpy')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert plain.stdout.strip() == "[]"  # `import provender` alone loads none of them


def test_help_lists_commands(env: dict[str, str]) -> None:
    text = ok("--help", env=env)
    for command in ("cache", "config", "generate", "models", "plugins", "pull"):
        assert command in text
    cache_help = ok("cache", "--help", env=env)
    for command in ("ls", "rm", "prune", "stats", "verify", "pin", "unpin", "import", "path"):
        assert command in cache_help


def test_cache_workflow(env: dict[str, str], make_files, cache_dir: Path) -> None:  # type: ignore[no-untyped-def]
    src = make_files("m", {"model.safetensors": 2000, "config.json": b"{}"})
    imported = json.loads(ok("cache", "import", str(src), "--name", "org/model", "--json", env=env))
    assert imported["name"] == "org/model" and imported["size"] == 2002
    assert ok("cache", "path", env=env).strip() == str(cache_dir)
    rows = json.loads(ok("cache", "ls", "--json", env=env))
    assert [r["name"] for r in rows] == ["org/model"]
    assert {"key", "name", "size", "last_used", "providers", "path", "pinned"} <= set(rows[0])
    table = ok("cache", "ls", env=env)
    assert "org/model" in table and "2.0 KB" in table and "just now" in table
    stats = json.loads(ok("cache", "stats", "--json", env=env))
    assert {"hits", "misses", "evictions", "entries", "size", "max_size"} <= set(stats)
    assert (stats["entries"], stats["size"]) == (1, 2002)
    ok("cache", "pin", "org/model", env=env)
    assert json.loads(ok("cache", "ls", "--json", env=env))[0]["pinned"] is True
    refused = run_cli("cache", "rm", "-y", "org/model", env=env)
    assert refused.returncode == 1 and "pinned" in refused.stderr and "Traceback" not in refused.stderr
    ok("cache", "unpin", "org/model", env=env)
    dry = ok("cache", "rm", "--dry-run", "org/model", env=env)
    assert "would remove org/model" in dry and json.loads(ok("cache", "ls", "--json", env=env))
    no_tty = run_cli("cache", "rm", "org/model", env=env, input="")
    assert no_tty.returncode == 2 and "-y" in no_tty.stderr  # no silent deletion without a terminal to ask
    assert "removed org/model" in ok("cache", "rm", "-y", "org/model", env=env)
    assert json.loads(ok("cache", "ls", "--json", env=env)) == []


def test_prune(env: dict[str, str], make_files) -> None:  # type: ignore[no-untyped-def]
    for name in ("a", "b", "c"):
        ok("cache", "import", str(make_files(name, {"w": 1000})), "--name", f"org/{name}", env=env)
    dry = ok("cache", "prune", "--max-size", "2KB", "--dry-run", env=env)
    assert "would evict org/a" in dry and len(json.loads(ok("cache", "ls", "--json", env=env))) == 3
    assert "evicted 1 entries" in ok("cache", "prune", "--max-size", "2KB", "-y", env=env)
    assert sorted(r["name"] for r in json.loads(ok("cache", "ls", "--json", env=env))) == ["org/b", "org/c"]
    bad = run_cli("cache", "prune", "--max-size", "lots", env=env)
    assert bad.returncode == 2 and "lots" in bad.stderr


def test_verify_cli(env: dict[str, str], make_files, cache_dir: Path) -> None:  # type: ignore[no-untyped-def]
    ok("cache", "import", str(make_files("m", {"w.bin": 500})), "--name", "org/m", "--copy", env=env)
    assert json.loads(ok("cache", "verify", "--json", env=env)) == {"ok": True, "issues": []}
    [blob] = list((cache_dir / "objects").glob("*/w.bin"))
    blob.write_bytes(b"\0" + blob.read_bytes()[1:])
    bad = run_cli("cache", "verify", env=env)
    assert bad.returncode == 1 and "CORRUPT org/m" in bad.stdout
    fixed = json.loads(ok("cache", "verify", "--fix", "--json", env=env))
    assert fixed["issues"][0]["fixed"] is True


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["cache", "import", "/no/such/dir", "--name", "org/x"], 2, "no such file"),
        (["cache", "import", ".", "--name", "../../etc"], 2, "invalid name"),
        (["cache", "rm", "-y", "org/ghost"], 1, "no cache entry"),
        (["cache", "pin", "org/ghost"], 1, "no cache entry"),
        (["cache", "ls", "--sort", "weird"], 2, "weird"),
        (["generate", "-m", "nosuch:model", "hi"], 2, "no provider named 'nosuch'"),
        (["generate", "-m", "org/unknown", "hi"], 1, "not in the cache"),
        (["nonsense"], 2, "No such command"),
    ],
)
def test_bad_input_is_one_clear_line(env: dict[str, str], args: list[str], code: int, needle: str) -> None:
    out = run_cli(*args, env=env)
    assert out.returncode == code, out
    assert needle in out.stderr and "Traceback" not in out.stderr


def test_pull_with_progress_and_offline(env: dict[str, str], fake_hub: FakeHub) -> None:
    fake_hub.add("org/tiny", {"config.json": b"{}", "model.safetensors": os.urandom(10_000)})
    hub_env = {**env, "HF_ENDPOINT": fake_hub.endpoint}
    out = run_cli("pull", "org/tiny", env=hub_env)
    assert out.returncode == 0, out.stderr
    assert "Pulled org/tiny" in out.stdout and "Fetching" in out.stderr  # huggingface_hub's progress bar
    rows = json.loads(ok("cache", "ls", "--json", env=env))
    assert rows[0]["name"] == "org/tiny" and rows[0]["kind"] == "hub"
    offline = {**hub_env, "HF_HUB_OFFLINE": "1"}
    assert "Pulled org/tiny" in run_cli("pull", "org/tiny", env=offline).stdout  # cached: fine offline
    missing = run_cli("pull", "org/other", env=offline)
    assert missing.returncode == 1 and "offline" in missing.stderr and "Traceback" not in missing.stderr


def test_debug_shows_traceback(env: dict[str, str]) -> None:
    out = run_cli("--debug", "cache", "rm", "-y", "org/ghost", env=env)
    assert out.returncode == 1 and "Traceback" in out.stderr


# -- a reader that closes the pipe early (issue 19 item 8): quiet, exit 141, in every command --------


def run_into_closed_pipe(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`provender ARGS` writing into a pipe whose reader is already gone: every write meets EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
            timeout=60,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "args",
    [
        ["config"],
        ["config", "--json"],
        ["cache", "ls"],
        ["cache", "ls", "--json"],
        ["cache", "stats"],
        ["plugins"],
        ["plugins", "--json"],
        ["models", "--json"],
        ["echo-modes"],  # a plugin's command (examples/provender-echo)
        ["generate", "-m", "echo:plain", "--stream", "one two three"],
        ["--help"],
        ["cache", "--help"],
        ["--version"],
    ],
)
def test_a_closed_pipe_ends_every_command_quietly(env: dict[str, str], make_files: Any, args: list[str]) -> None:
    ok("cache", "import", str(make_files("m", {"w.bin": 100})), "--name", "me/m", env=env)
    out = run_into_closed_pipe("-m", "provender", *args, env=env)
    assert (out.returncode, out.stderr) == (141, ""), out  # was 1 and "Error: unexpected BrokenPipeError"


def test_a_shell_pipeline_cut_short_is_quiet(env: dict[str, str], tmp_path: Path) -> None:
    """As a user types it: `provender config | head -1`, and a long stream cut by `head -c`."""
    prog = f"{sys.executable} -m provender"
    (tmp_path / "prompt.txt").write_text("word " * 50_000)
    script = (
        f"{prog} config | head -1; echo status=$?; "
        # 250 KB, past the pipe's 64 KB buffer (the default 256 tokens would fit in it, and the
        # writer could finish before `head` exits: status 0, as a loaded CI machine once showed)
        f"set -o pipefail; {prog} generate -m echo:plain --stream --max-tokens 100000 "
        f"< {tmp_path / 'prompt.txt'} | head -c 20; "
        "s=$?; echo; echo status=$s"
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env={**os.environ, **env}, timeout=60)
    lines = out.stdout.splitlines()
    assert lines[0].startswith("config file:") and lines[1] == "status=0"
    assert lines[2] == "word word word word " and lines[3] == "status=141"  # with pipefail: as git and ls
    assert out.stderr == "", out.stderr


PIPE_SCRIPT = """
import socket, sys
from provender._cli import cli, main

@cli.command("buffered")
def buffered():
    print("x" * 100)  # not flushed by the command: the interpreter's final flush meets the closed pipe

@cli.command("hangup")
def hangup():
    mine, peer = socket.socketpair()
    peer.close()
    mine.sendall(b"x" * 1000)  # a BrokenPipeError of the command's own: a failure, not a closed output

main()
"""


def test_buffered_output_and_a_socket_broken_pipe(env: dict[str, str], tmp_path: Path) -> None:
    script = tmp_path / "pipe_cli.py"
    script.write_text(PIPE_SCRIPT)
    out = run_into_closed_pipe(str(script), "buffered", env=env)
    assert (out.returncode, out.stderr) == (141, ""), out  # was 1 and "Error: unexpected BrokenPipeError"
    fine = subprocess.run(
        [sys.executable, str(script), "buffered"], capture_output=True, text=True, env={**os.environ, **env}
    )
    assert (fine.returncode, fine.stdout) == (0, "x" * 100 + "\n")
    failed = subprocess.run(
        [sys.executable, str(script), "hangup"], capture_output=True, text=True, env={**os.environ, **env}
    )
    assert failed.returncode == 1 and failed.stderr.startswith("Error: unexpected BrokenPipeError"), failed
    assert len(failed.stderr.splitlines()) == 1
