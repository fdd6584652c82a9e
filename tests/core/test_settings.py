"""Settings: precedence, human sizes, clear errors (in-process and through the CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import platformdirs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers import run_cli
from provender import ConfigError, load_settings
from provender._config_files import config_file_path, user_config_dir
from provender._sizes import format_ago, format_size, parse_duration, parse_size


def write_config(text: str) -> Path:
    path = config_file_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults(tmp_path: Path) -> None:
    s = load_settings()
    assert s.cache.max_size == 50 * 10**9
    assert s.cache.dir == Path(platformdirs.user_cache_dir("provender", appauthor=False))
    assert s.memory.max_models == 2
    assert s.plugins.disabled == []


def test_precedence_defaults_toml_env_init(monkeypatch: pytest.MonkeyPatch) -> None:
    write_config('[cache]\nmax_size = "10GB"\ndir = "/from/toml"\n[memory]\nmax_models = 3\n')
    s = load_settings()
    assert (s.cache.max_size, str(s.cache.dir), s.memory.max_models) == (10 * 10**9, "/from/toml", 3)
    monkeypatch.setenv("PROVENDER_CACHE__MAX_SIZE", "500MiB")
    s = load_settings()
    assert s.cache.max_size == 500 * 2**20 and str(s.cache.dir) == "/from/toml"
    s = load_settings(cache={"max_size": "1KB"})
    assert s.cache.max_size == 1000


def test_explicit_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "elsewhere.toml"
    path.write_text('[plugins]\ndisabled = ["a", "b"]\n')
    monkeypatch.setenv("PROVENDER_CONFIG", str(path))
    assert load_settings().plugins.disabled == ["a", "b"]
    monkeypatch.setenv("PROVENDER_PLUGINS__DISABLED", "c, d")
    assert load_settings().plugins.disabled == ["c", "d"]


def test_missing_explicit_config_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVENDER_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


@pytest.mark.parametrize(
    ("env", "value", "needle"),
    [
        ("PROVENDER_CACHE__MAX_SIZE", "50XB", "unknown unit"),
        ("PROVENDER_CACHE__MAX_SIZE", "-5GB", "negative"),
        ("PROVENDER_MEMORY__MAX_MODELS", "0", "greater than or equal to 1"),
        ("PROVENDER_MEMORY__KEEP_ALIVE", "soon", "duration"),
    ],
)
def test_bad_env_value_names_setting_source_and_value(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    setting = env.removeprefix("PROVENDER_").replace("__", ".").lower()
    assert setting in message and env in message and repr(value) in message and needle in message
    assert info.value.setting == setting and info.value.source == f"env:{env}"


def test_bad_toml_value_names_the_file() -> None:
    path = write_config("[cache]\nmax_size = -1\n")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "cache.max_size" in str(info.value) and str(path) in str(info.value) and "-1" in str(info.value)


def test_unknown_toml_key_is_an_error() -> None:
    write_config('[cache]\nmax_sise = "1GB"\n')
    with pytest.raises(ConfigError, match=r"unknown setting 'cache\.max_sise'"):
        load_settings()


def test_malformed_toml() -> None:
    path = write_config("[cache\nmax_size = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_settings()
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("setup", "env"),
    [
        ("", {"PROVENDER_CACHE__MAX_SIZE": "50XB"}),
        ("", {"PROVENDER_CACHE__MAX_SIZE": "-1"}),
        ("[cache\n", {}),
        ('[cache]\nmax_size = "lots"\n', {}),
    ],
)
def test_cli_config_errors_exit_2_with_one_line(setup: str, env: dict[str, str]) -> None:
    if setup:
        write_config(setup)
    for args in (["config"], ["cache", "ls"], ["cache", "stats", "--json"]):
        out = run_cli(*args, env=env)
        assert out.returncode == 2, out
        lines = [line for line in out.stderr.splitlines() if not line.startswith("warning:")]
        assert len(lines) == 1 and lines[0].startswith("Error: "), out.stderr
        assert "Traceback" not in out.stderr


def test_config_json_shows_values_and_sources(monkeypatch: pytest.MonkeyPatch) -> None:
    write_config("[memory]\nmax_models = 4\n")
    out = run_cli("config", "--json", env={"PROVENDER_CACHE__MAX_SIZE": "2GB"})
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    rows = {r["setting"]: r for r in data["settings"]}
    assert rows["cache.max_size"]["value"] == 2 * 10**9
    assert rows["cache.max_size"]["source"] == "env:PROVENDER_CACHE__MAX_SIZE"
    assert rows["memory.max_models"]["value"] == 4 and rows["memory.max_models"]["source"].startswith("file:")
    assert rows["memory.keep_alive"]["source"] == "default"
    assert rows["plugins.disabled"]["env"] == "PROVENDER_PLUGINS__DISABLED"


def test_fast_config_dir_agrees_with_platformdirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert user_config_dir() == Path(platformdirs.user_config_dir("provender", appauthor=False))
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert user_config_dir() == Path(platformdirs.user_config_dir("provender", appauthor=False))


# -- sizes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("50GB", 50 * 10**9),
        ("500MiB", 500 * 2**20),
        ("1.5 TB", 1_500_000_000_000),
        ("1024", 1024),
        (2048, 2048),
        ("10k", 10_000),
        (" 3 gib ", 3 * 2**30),
        ("0", 0),
    ],
)
def test_parse_size(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["50XB", "-1", "-1GB", "", "GB", "1.2.3GB", "inf", "nan", True, None, [1], -5, 1.5])
def test_parse_size_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


@given(st.text(max_size=20))
def test_parse_size_fuzz_only_value_error(text: str) -> None:
    try:
        value = parse_size(text)
    except ValueError:
        return
    assert isinstance(value, int) and value >= 0


@given(st.integers(min_value=0, max_value=10**15), st.sampled_from(["B", "KB", "MiB", "GB", "TiB"]))
def test_parse_size_units(n: int, unit: str) -> None:
    factor = {"B": 1, "KB": 1000, "MiB": 2**20, "GB": 10**9, "TiB": 2**40}[unit]
    assert parse_size(f"{n}{unit}") == n * factor


def test_durations_and_formatting() -> None:
    assert parse_duration("5m") == 300 and parse_duration("1h") == 3600 and parse_duration(-1) == -1
    with pytest.raises(ValueError):
        parse_duration("tomorrow")
    assert format_size(1_234_567) == "1.2 MB" and format_size(999) == "999 B"
    assert format_ago(1000.0, now=1000.0 + 180) == "3 minutes ago"
    assert format_ago(None) == "never"
