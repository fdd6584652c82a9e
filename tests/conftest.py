"""Fixtures shared by every test: an isolated environment, real caches, real processes."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))  # tests/fakehub.py, tests/workers.py

from hypothesis import HealthCheck, settings  # noqa: E402

from fakehub import FakeHub  # noqa: E402

# File and lock work is slower on a loaded 2-core CI machine: no per-example deadline there.
settings.register_profile("dev", deadline=None)
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No user config, cache or Hub token leaks in; every process the test starts inherits this."""
    for key in list(os.environ):
        if key.startswith(("PROVENDER_", "HF_")):
            monkeypatch.delenv(key)
    home = tmp_path / "home"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    from provender._plugins import reset_plugin_manager

    reset_plugin_manager()
    yield
    reset_plugin_manager()


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


@pytest.fixture
def make_files(tmp_path: Path):  # type: ignore[no-untyped-def]
    """make_files("name", {"a.bin": 100, "config.json": b"{}"}) -> a real directory of files."""

    def make(name: str, files: dict[str, int | bytes]) -> Path:
        root = tmp_path / "src" / name
        for rel, content in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content if isinstance(content, bytes) else os.urandom(content))
        return root

    return make


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    hub = FakeHub()
    yield hub
    hub.close()
