"""Helpers shared by the test packages (importable as `helpers`: tests/ is on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

TESTS = Path(__file__).parent


def run_cli(
    *args: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `provender ARGS` in a real process with the test's environment (plus `env`)."""
    return subprocess.run(
        [sys.executable, "-m", "provender", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        input=input,
        timeout=timeout,
    )


def can_mount() -> str | None:
    """None if this machine lets a test mount a tmpfs in its own namespace, else why not."""
    try:
        out = subprocess.run(
            [
                "unshare",
                "--user",
                "--map-root-user",
                "--mount",
                "sh",
                "-c",
                "mount -t tmpfs -o size=64k tmpfs /mnt && echo ok",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if out.stdout.strip() == "ok" else (out.stderr.strip() or "mount refused")


# A provider plugin in the simplest style the docs show (issue 9 item 13: what `--help` pays for it).
SIMPLE_PLUGIN = '''"""A plugin in the simplest style: the Provider subclass defined at import time."""
from provender import Provider, hookimpl


class ShoutProvider(Provider):
    name = "shout"

    def generate(self, prompt, **options):
        return prompt.upper()


@hookimpl
def provender_register_providers(register):
    register("shout", ShoutProvider)
'''


def scrape(server: Any, key: str | None = None) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} from a server's /metrics, read with prometheus_client's parser."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with urllib.request.urlopen(urllib.request.Request(server.url + "/metrics", headers=headers), timeout=30) as r:
        assert r.headers["content-type"].startswith("text/plain")
        text = r.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples
