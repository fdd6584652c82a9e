"""The remote tier from the command line, as real processes: `cache push`, `remote ls`,
`cache stats` and where `pull` got its bytes.

Two cache directories stand for two machines; the tier is moto's S3 server on 127.0.0.1 or a
``file://`` folder (tests/remote/conftest.py), the Hub the stand-in of tests/fakehub.py, which
counts the requests it answers and the bytes it sends.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fakehub import FakeHub
from helpers import run_cli

WEIGHTS = os.urandom(300_000)
CONFIG = b'{"model_type": "llama"}'
HUB_FILES = {"config.json": CONFIG, "model.safetensors": WEIGHTS}
HUB_SIZE = len(CONFIG) + len(WEIGHTS)
ENTRY_KEYS = {
    "key",
    "name",
    "kind",
    "size",
    "last_used",
    "created",
    "hits",
    "providers",
    "path",
    "model_path",
    "pinned",
}
STATS_KEYS = {
    "hits",
    "misses",
    "hit_rate",
    "evictions",
    "bytes_evicted",
    "entries",
    "size",
    "max_size",
    "pinned",
    "cache_dir",
}
REMOTE_STATS_KEYS = {
    "remote_hits",
    "remote_misses",
    "bytes_from_remote",
    "remote_errors",
    "remote_url",
    "remote_read_only",
}


def ok(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    out = run_cli(*args, env=env)
    assert out.returncode == 0, (args, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    return out


def as_json(*args: str, env: dict[str, str]) -> Any:
    return json.loads(ok(*args, "--json", env=env).stdout)


def error_line(out: subprocess.CompletedProcess[str], code: int) -> str:
    """The command failed with `code` and said why in one line on stderr (no traceback)."""
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), out.stderr
    return lines[0]


def machine(
    tmp_path: Path, name: str, make_env: Any, tier: Any, hub: FakeHub | None = None, **extra: str
) -> dict[str, str]:
    return make_env(tmp_path / name, tier, hub.endpoint if hub else None, PROVENDER_QUIET_PLUGIN_ERRORS="1", **extra)  # type: ignore[no-any-return]


def test_pull_says_where_the_bytes_came_from(tier: Any, fake_hub: FakeHub, make_env: Any, tmp_path: Path) -> None:
    fake_hub.add("org/tiny", HUB_FILES)
    a = machine(tmp_path, "a", make_env, tier, fake_hub)
    b = machine(tmp_path, "b", make_env, tier, fake_hub)

    first = as_json("pull", "org/tiny", env=a)  # machine A: from the Hub, written through
    assert first["source"] == "hub" and first["name"] == "org/tiny" and first["kind"] == "hub"
    assert (first["bytes_from_hub"], first["bytes_from_remote"], first["pushed"]) == (HUB_SIZE, 0, True)
    assert first["remote_url"] == tier.url and first["warnings"] == [] and first["size"] == HUB_SIZE
    assert fake_hub.bytes_sent == HUB_SIZE
    assert set(first) == ENTRY_KEYS | {
        "source",
        "bytes_from_remote",
        "bytes_from_hub",
        "pushed",
        "remote_url",
        "warnings",
    }

    requests, sent = fake_hub.requests, fake_hub.bytes_sent
    second = ok("pull", "org/tiny", env=b)  # machine B: from the tier, not one Hub request
    assert f"Pulled org/tiny from the remote tier {tier.url} (300.0 KB) into " in second.stdout
    assert (fake_hub.requests, fake_hub.bytes_sent) == (requests, sent)
    model_path = Path(second.stdout.strip().rsplit(" into ", 1)[1])
    assert (model_path / "model.safetensors").read_bytes() == WEIGHTS  # Hub layout, as `hf` reads it

    fake_hub.add("org/other", {"config.json": b"{}"})
    text = ok("pull", "org/other", env=a).stdout
    assert "Pulled org/other from the Hub (2 B) into " in text and text.rstrip().endswith(
        f"; wrote it through to {tier.url}"
    )

    again = as_json("pull", "org/tiny", env=b)  # nothing to fetch
    assert (again["source"], again["bytes_from_hub"], again["bytes_from_remote"]) == ("cache", 0, 0)
    text = ok("pull", "org/tiny", env=b).stdout
    assert "Pulled org/tiny (300.0 KB): already in the cache at " in text

    stats_b = as_json("cache", "stats", env=b)
    assert set(stats_b) == STATS_KEYS | REMOTE_STATS_KEYS
    assert stats_b["remote_url"] == tier.url and stats_b["remote_read_only"] is False
    assert (stats_b["remote_hits"], stats_b["bytes_from_remote"], stats_b["remote_errors"]) == (1, HUB_SIZE, 0)
    stats_a = as_json("cache", "stats", env=a)
    assert (stats_a["remote_hits"], stats_a["remote_misses"], stats_a["bytes_from_remote"]) == (0, 2, 0)  # two repos
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in ok("cache", "stats", env=b).stdout.splitlines())
    assert rows["remote tier"] == tier.url and rows["remote hits"] == "1 (300.0 KB from the tier)"
    assert (rows["remote misses"], rows["remote errors"]) == ("0", "0")


def test_push_then_remote_ls(tier: Any, make_env: Any, make_files: Any, tmp_path: Path) -> None:
    local = machine(tmp_path, "a", make_env, None)  # imported with no tier set: nothing written through
    weights = os.urandom(200_000)
    ok("cache", "import", str(make_files("ft", {"model.safetensors": weights, "config.json": CONFIG})),
       "--name", "org/fine-tune", env=local)  # fmt: skip
    no_tier = as_json("cache", "stats", env=local)
    assert (no_tier["remote_url"], no_tier["remote_read_only"], no_tier["remote_hits"]) == (None, None, 0)
    env = machine(tmp_path, "a", make_env, tier)
    assert as_json("remote", "ls", env=env) == {"url": tier.url, "read_only": False, "size": 0, "entries": []}
    assert f"The remote tier {tier.url} holds nothing yet" in ok("remote", "ls", env=env).stdout

    start = time.time()
    pushed = as_json("cache", "push", "org/fine-tune", env=env)
    size = len(weights) + len(CONFIG)
    assert pushed == {
        "key": pushed["key"],
        "name": "org/fine-tune",
        "url": tier.url,
        "files": 2,
        "uploaded": 2,
        "bytes_uploaded": size,
        "already_there": 0,
    }
    again = ok("cache", "push", "org/fine-tune", env=env)
    assert f"org/fine-tune is already in the remote tier {tier.url}: 2 files, 0 uploaded" in again.stdout
    assert as_json("cache", "push", pushed["key"][:12], env=env)["already_there"] == 2  # a key prefix works too

    # a second entry sharing the weights: the tier stores that blob once
    ok("cache", "import", str(make_files("ft2", {"model.safetensors": weights, "config.json": b"{}"})),
       "--name", "org/fine-tune-2", env=local)  # fmt: skip
    second = as_json("cache", "push", "org/fine-tune-2", env=env)
    assert (second["uploaded"], second["bytes_uploaded"], second["already_there"]) == (1, 2, 1)

    other = machine(tmp_path, "b", make_env, tier, PROVENDER_REMOTE__READ_ONLY="1")  # a second, read-only machine
    fetched = as_json("pull", "org/fine-tune", env=other)  # an imported model, from the tier
    assert (fetched["source"], fetched["kind"], fetched["bytes_from_remote"]) == ("remote", "local", size)
    assert as_json("remote", "ls", env=other)["read_only"] is True

    listing = as_json("remote", "ls", env=env)
    assert listing["url"] == tier.url and listing["size"] == size + 2  # blobs, each stored once
    rows = {r["name"]: r for r in listing["entries"]}
    assert sorted(rows) == ["org/fine-tune", "org/fine-tune-2"]
    row = rows["org/fine-tune"]
    assert set(row) == {"key", "name", "kind", "revision", "files", "size", "pushed_at"}
    assert (row["key"], row["kind"], row["files"], row["size"]) == (pushed["key"], "local", 2, size)
    pushed_at = dt.datetime.fromisoformat(row["pushed_at"])
    assert pushed_at.tzinfo is not None and start - 5 <= pushed_at.timestamp() <= time.time() + 5
    table = ok("remote", "ls", env=env).stdout.splitlines()
    assert table[0].split() == ["NAME", "KIND", "REVISION", "FILES", "SIZE", "PUSHED"]
    assert table[1].split()[:5] == ["org/fine-tune", "local", "-", "2", "200.0"]
    assert table[-1] == f"2 entries, 200.0 KB stored in {tier.url} (each blob stored once)"


def test_push_shows_progress(file_tier: Any, make_env: Any, make_files: Any, tmp_path: Path) -> None:
    env = machine(tmp_path, "a", make_env, None)
    ok("cache", "import", str(make_files("big", {"model.safetensors": 3_000_000})), "--name", "org/big", env=env)
    env = machine(tmp_path, "a", make_env, file_tier)
    out = ok("cache", "push", "org/big", env=env)
    assert "pushing org/big" in out.stderr  # the progress bar (its label only, without a terminal)
    assert f"pushed org/big to {file_tier.url}: 1 file, 1 uploaded (3.0 MB)" in out.stdout
    quiet = ok("cache", "push", "org/big", "-q", env=env)
    assert quiet.stderr == ""
    assert as_json("cache", "push", "org/big", env=env)["already_there"] == 1  # --json: stdout is JSON alone


@pytest.mark.parametrize("args", [["remote", "ls"], ["remote", "ls", "--json"], ["cache", "push", "org/model"]])
def test_no_tier_is_a_configuration_error(args: list[str], make_env: Any, make_files: Any, tmp_path: Path) -> None:
    env = machine(tmp_path, "a", make_env, None)
    if args[0] == "cache":
        ok("cache", "import", str(make_files("m", {"w.bin": 100})), "--name", "org/model", env=env)
    line = error_line(run_cli(*args, env=env), 2)
    assert "remote.url" in line and "PROVENDER_REMOTE__URL" in line and "[remote]" in line


@pytest.mark.parametrize(
    ("args", "extra", "code", "needles"),
    [
        (["cache", "push", "org/ghost"], {}, 1, ["no cache entry", "org/ghost"]),
        (["cache", "push", "org/model"], {"PROVENDER_REMOTE__READ_ONLY": "1"}, 2, ["read-only", "remote.read_only"]),
        (["remote", "ls"], {"PROVENDER_REMOTE__URL": "nosuch://bucket/x"}, 2, ["remote.url", "nosuch://bucket/x"]),
        (["cache", "push", "org/model"], {"PROVENDER_REMOTE__URL": "bucket/x"}, 2, ["remote.url", "bucket/x"]),
        (["remote", "ls"], {"PROVENDER_REMOTE__TIMEOUT": "soon"}, 2, ["remote.timeout", "soon"]),
    ],
)
def test_bad_input_is_one_line(
    args: list[str],
    extra: dict[str, str],
    code: int,
    needles: list[str],
    file_tier: Any,
    make_env: Any,
    make_files: Any,
    tmp_path: Path,
) -> None:
    ok("cache", "import", str(make_files("m", {"w.bin": 100})), "--name", "org/model",
       env=machine(tmp_path, "a", make_env, None))  # fmt: skip
    env = machine(tmp_path, "a", make_env, file_tier, **extra)
    line = error_line(run_cli(*args, env=env), code)
    for needle in needles:
        assert needle in line, line
    assert list(file_tier.path.iterdir()) == []  # nothing was written to the tier


def test_unreachable_tier(own_s3_tier: Any, fake_hub: FakeHub, make_env: Any, make_files: Any, tmp_path: Path) -> None:
    fake_hub.add("org/tiny", HUB_FILES)
    env = machine(tmp_path, "a", make_env, None)
    ok("cache", "import", str(make_files("m", {"w.bin": 1000})), "--name", "org/model", env=env)
    env = machine(tmp_path, "a", make_env, own_s3_tier, fake_hub, PROVENDER_REMOTE__TIMEOUT="3")
    own_s3_tier.server.stop()  # connections to the tier are refused from now on

    for args in (["remote", "ls"], ["remote", "ls", "--json"], ["cache", "push", "org/model"]):
        start = time.monotonic()
        line = error_line(run_cli(*args, env=env), 1)
        assert f"remote tier {own_s3_tier.url}" in line, line
        assert time.monotonic() - start < 30  # a dead tier costs seconds, not minutes

    pulled = ok("pull", "org/tiny", "--json", env=env)  # the Hub serves instead, with a warning
    report = json.loads(pulled.stdout)
    assert (report["source"], report["bytes_from_hub"], report["pushed"]) == ("hub", HUB_SIZE, False)
    assert report["warnings"] and own_s3_tier.url in report["warnings"][0]
    assert "warning:" in pulled.stderr and own_s3_tier.url in pulled.stderr
    stats = as_json("cache", "stats", env=env)  # stats never reach the tier: they work while it is down
    assert stats["remote_url"] == own_s3_tier.url and stats["remote_errors"] >= 1


def test_help_imports_no_remote_dependency() -> None:
    code = (
        "import sys\n"
        "from provender._cli import main\n"
        "for argv in (['--help'], ['remote', '--help'], ['cache', 'push', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, exc.code\n"
        "heavy = ('fsspec', 's3fs', 'botocore', 'aiobotocore', 'provender._cache._remote')\n"
        "print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert "ls" in out.stdout and "push" in out.stdout  # the remote group and `cache push` are there


def test_a_tier_that_is_not_there(s3_tier: Any, make_env: Any, make_files: Any, tmp_path: Path) -> None:
    env = machine(tmp_path, "a", make_env, None)
    ok("cache", "import", str(make_files("m", {"w.bin": 1000})), "--name", "org/model", env=env)
    url = "s3://no-such-bucket-r2/models"  # on the S3 server, a bucket nobody made: an error, writes would fail too
    missing = {**machine(tmp_path, "a", make_env, s3_tier), "PROVENDER_REMOTE__URL": url}
    line = error_line(run_cli("remote", "ls", env=missing), 1)
    assert line.startswith(f"Error: remote tier {url}: ") and "bucket" in line and "does not exist" in line, line
    line = error_line(run_cli("cache", "push", "org/model", env=missing), 1)
    assert f"remote tier {url}" in line and "does not exist" in line, line
    folder = tmp_path / "not-mounted"  # a file:// folder that does not exist: said, not an error
    unmounted = machine(tmp_path, "a", make_env, None, PROVENDER_REMOTE__URL=folder.as_uri())
    text = ok("remote", "ls", env=unmounted).stdout
    assert f"its folder {folder} does not exist (nothing was pushed yet, or the filesystem is not mounted)" in text
    assert as_json("remote", "ls", env=unmounted)["entries"] == [] and not folder.exists()
