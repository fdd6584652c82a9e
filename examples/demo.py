"""The main job, end to end: put a model into the shared cache and use it through a provider.

Runs the real `provender` command for each step and prints it first, so you can
copy any line. The cache is $PROVENDER_CACHE__DIR (tox points it at ./demo-cache).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path


def provender(*args: str) -> str:
    print(f"\n$ provender {shlex.join(args)}", flush=True)
    out = subprocess.run([sys.executable, "-m", "provender", *args], capture_output=True, text=True)
    print(out.stdout, end="", flush=True)
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        raise SystemExit(f"demo step failed: provender {shlex.join(args)}")
    return out.stdout


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # 1. A model directory as you might have it on disk (here: a model of the example echo plugin).
        model = Path(tmp) / "shouty-model"
        model.mkdir()
        (model / "echo.json").write_text(json.dumps({"provider": "echo", "mode": "upper"}))
        (model / "weights.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MB stand-in for weights

        # 2. Sideload it into the shared cache (zero-copy where the filesystem allows).
        provender("cache", "import", str(model), "--name", "demo/shouty", "--replace")
    # 3. It is in the cache, claimed by the provider that can serve it, and usable by name.
    provender("cache", "ls")
    provender("generate", "-m", "demo/shouty", "hello from the shared cache")
    provender("cache", "stats")
    provender("plugins")
    provender("cache", "verify")


if __name__ == "__main__":
    main()
