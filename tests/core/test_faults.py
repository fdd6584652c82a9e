"""A full disk and a read-only cache, on real small filesystems (tmpfs in a private mount namespace)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import can_mount

pytestmark = pytest.mark.skipif(can_mount() is not None, reason=f"cannot mount a tmpfs here: {can_mount()}")

SCRIPT_HEAD = """
import json, os, sys
from pathlib import Path
from provender import CacheManager, DiskFullError, CacheNotWritableError
cache = Path(sys.argv[1])
src = Path(sys.argv[2])
out = {}
"""


def run_in_namespace(
    tmp_path: Path,
    size: str,
    body: str,
    setup: str = "",
    env: dict[str, str] | None = None,
    shell_after_setup: str = "",
) -> dict[str, object]:
    """Mount a tmpfs of `size` at tmp_path/mnt inside a private namespace and run the script bodies there."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    src = tmp_path / "src"
    src.mkdir()
    (src / "small.bin").write_bytes(os.urandom(300_000))
    (src / "big.bin").write_bytes(os.urandom(900_000))
    scripts = []
    for n, code in enumerate((setup, body)):
        path = tmp_path / f"step{n}.py"
        path.write_text(SCRIPT_HEAD + textwrap.dedent(code) + "\nprint(json.dumps(out))\n")
        scripts.append(path)
    cache = mnt / "cache"
    py = sys.executable
    shell = (
        f"mount -t tmpfs -o size={size} tmpfs {mnt} && "
        f"{py} {scripts[0]} {cache} {src} && {shell_after_setup or 'true'} && {py} {scripts[1]} {cache} {src}"
    )
    proc = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", shell],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def test_disk_full_is_a_clear_error_and_loses_nothing(tmp_path: Path) -> None:
    result = run_in_namespace(
        tmp_path,
        "1m",
        setup="""
        cm = CacheManager(cache, max_size=10**9)
        cm.cache_model(src / "small.bin", "small", link_mode="copy")
    """,
        body="""
        cm = CacheManager(cache, max_size=10**9)
        try:
            cm.cache_model(src / "big.bin", "big", link_mode="copy")
            out["error"] = None
        except DiskFullError as exc:
            out["error"] = str(exc)
        out["entries"] = sorted(e.key for e in cm.entries())
        out["small_ok"] = cm.get_cached_model("small").read_bytes() == (src / "small.bin").read_bytes()
        out["tmp"] = os.listdir(cache / "tmp")
        out["verify"] = [i.problem for i in cm.verify()]
    """,
    )
    assert result["error"] and "no space left" in str(result["error"]), result
    assert result["entries"] == ["small"] and result["small_ok"] is True
    assert result["tmp"] == [] and result["verify"] == []


def test_read_only_cache_is_a_clear_error_and_loses_nothing(tmp_path: Path) -> None:
    result = run_in_namespace(
        tmp_path,
        "4m",
        setup="""
        cm = CacheManager(cache, max_size=10**9)
        cm.cache_model(src / "small.bin", "small", link_mode="copy")
    """,
        shell_after_setup=f"mount -o remount,ro {tmp_path / 'mnt'}",
        body="""
        try:
            CacheManager(cache, max_size=10**9)
            out["error"] = None
        except CacheNotWritableError as exc:
            out["error"] = str(exc)
        out["still_there"] = (cache / "objects" / "small").is_dir()
        import subprocess
        cli = subprocess.run([sys.executable, "-m", "provender", "cache", "ls"], capture_output=True, text=True,
                             env={**os.environ, "PROVENDER_CACHE__DIR": str(cache)})
        out["cli"] = [cli.returncode, cli.stderr]
    """,
    )
    assert result["error"] and "not writable" in str(result["error"]), result
    assert result["still_there"] is True
    code, stderr = result["cli"]  # type: ignore[misc]
    assert code == 1 and "not writable" in stderr and "Traceback" not in stderr
