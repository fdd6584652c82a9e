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


# -- issue 20 item 1: a plugin owns its settings section --------------------------------------

ACME = Path(__file__).resolve().parents[1] / "plugins" / "provender-acme"


@pytest.fixture(scope="session")
def acme_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/plugins/provender-acme (written from docs/plugins.md alone) installed for real into
    a folder of its own, put on PYTHONPATH by the tests (the shared env stays as it is)."""
    import shutil
    import subprocess
    import sys

    target = tmp_path_factory.mktemp("acme-site")
    uv = shutil.which("uv")
    if uv:
        cmd = [uv, "pip", "install", "--python", sys.executable, "--no-deps", "--target", str(target), str(ACME)]
    else:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "-t",
            str(target),
            str(ACME),
        ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (target / "provender_acme" / "plugin.py").is_file()
    return target


def with_site(site: Path, **extra: str) -> dict[str, str]:
    import os

    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])), **extra}


def acme_loaded(monkeypatch: pytest.MonkeyPatch, site: Path) -> None:
    """This process sees the acme plugin as installed (its folder on sys.path, plugins reloaded)."""
    from provender._plugins import get_plugin_manager, reset_plugin_manager

    monkeypatch.syspath_prepend(str(site))
    reset_plugin_manager()
    assert get_plugin_manager().plugins["acme"].status == "loaded"


def test_a_plugin_section_reads_toml_env_and_arguments_in_order(
    acme_site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    acme_loaded(monkeypatch, acme_site)
    from provender_acme.settings import AcmeSettings

    assert load_settings().acme.greeting == "hello"  # the model's default
    write_config('[acme]\ngreeting = "from toml"\nrepeat = 2\n')
    typed = load_settings().section("acme", AcmeSettings)
    assert isinstance(typed, AcmeSettings) and (typed.greeting, typed.repeat) == ("from toml", 2)
    monkeypatch.setenv("PROVENDER_ACME__GREETING", "from env")
    assert (load_settings().acme.greeting, load_settings().acme.repeat) == ("from env", 2)
    assert load_settings(acme={"greeting": "from init"}).acme.greeting == "from init"
    with pytest.raises(TypeError, match="'cache' is a CacheSettings, not a AcmeSettings"):
        load_settings().section("cache", AcmeSettings)


def test_a_plugin_section_errors_name_the_setting_and_its_source(
    acme_site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    acme_loaded(monkeypatch, acme_site)
    monkeypatch.setenv("PROVENDER_ACME__REPEAT", "50")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value) == (
        "invalid setting acme.repeat from environment variable PROVENDER_ACME__REPEAT: "
        "Input should be less than or equal to 10 (got '50')"
    )
    assert (info.value.setting, info.value.source) == ("acme.repeat", "env:PROVENDER_ACME__REPEAT")
    monkeypatch.delenv("PROVENDER_ACME__REPEAT")
    path = write_config('[acme]\ngreting = "typo"\n')
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value) == (
        f"unknown setting 'acme.greting' in config file {path}, line 2 (known: greeting, repeat)"
    )


def test_a_plugin_section_through_the_cli(acme_site: Path) -> None:
    env = with_site(acme_site, PROVENDER_QUIET_PLUGIN_ERRORS="1")
    path = write_config('[acme]\ngreeting = "hi"\n')
    out = run_cli("acme-greet", env={**env, "PROVENDER_ACME__REPEAT": "3"})
    assert out.returncode == 0 and out.stdout.strip() == "hi hi hi", out
    rows = {r["setting"]: r for r in json.loads(run_cli("config", "--json", env=env).stdout)["settings"]}
    assert rows["acme.greeting"] == {
        "setting": "acme.greeting",
        "value": "hi",
        "display": "hi",
        "env": "PROVENDER_ACME__GREETING",
        "source": f"file:{path}",
        "plugin": "acme",
    }
    assert rows["acme.repeat"]["source"] == "default" and rows["cache.dir"]["plugin"] is None
    table = run_cli("config", env={**env, "PROVENDER_ACME__REPEAT": "2"}).stdout
    [line] = [line for line in table.splitlines() if line.startswith("acme.repeat")]
    assert line.split()[1:] == ["2", "env:PROVENDER_ACME__REPEAT", "PROVENDER_ACME__REPEAT"]
    bad = run_cli("acme-greet", env={**env, "PROVENDER_ACME__REPEAT": "zero"})
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    [error] = [line for line in bad.stderr.splitlines() if line.startswith("Error:")]
    assert "acme.repeat" in error and "PROVENDER_ACME__REPEAT" in error and "'zero'" in error


def test_unknown_sections_typo_error_absent_plugin_warning_disabled_warning(acme_site: Path) -> None:
    env = with_site(acme_site, PROVENDER_QUIET_PLUGIN_ERRORS="1")
    path = write_config('[cache]\nmax_size = "1GB"\n\n[acmee]\ngreeting = "x"\n')
    typo = run_cli("config", env=env)
    assert typo.returncode == 2, typo
    [error] = [line for line in typo.stderr.splitlines() if line.startswith("Error:")]
    assert f"unknown setting section 'acmee' in config file {path}, line 4 (did you mean 'acme'?" in error
    write_config('[elsewhere]\nthing = 1\n[acme]\ngreeting = "x"\n')
    absent = run_cli("config", env=env)
    assert absent.returncode == 0, absent
    assert absent.stderr.count("warning:") == 1 and "section [elsewhere]" in absent.stderr
    assert "not installed here" in absent.stderr
    disabled = run_cli("config", env={**env, "PROVENDER_PLUGINS__DISABLED": "acme"})
    assert disabled.returncode == 0, disabled
    assert "section [acme]" in disabled.stderr and "plugin 'acme', which may own it, is disabled" in disabled.stderr
    assert "acme.greeting" not in disabled.stdout


CLASHING = '''"""Two sections: one another plugin owns, one named like a core section."""
from provender import Section, hookimpl


class Other(Section):
    greeting: str = "other"


@hookimpl
def provender_register_settings(register):
    register({name!r}, Other)
'''


@pytest.mark.parametrize(
    ("section", "needle"),
    [
        ("acme", "settings section 'acme' is registered by two plugins, "),
        ("cache", "plugin 'clash' registers the settings section 'cache', a name of provender's own (core)"),
    ],
)
def test_a_section_registered_twice_or_named_like_a_core_one_names_both(
    acme_site: Path, tmp_path: Path, section: str, needle: str
) -> None:
    site = tmp_path / "clash-site"
    site.mkdir()
    (site / "provender_clash.py").write_text(CLASHING.format(name=section))
    info = site / "provender_clash-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: provender-clash\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[provender]\nclash = provender_clash\n")
    import os

    env = with_site(acme_site, PROVENDER_QUIET_PLUGIN_ERRORS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])
    out = run_cli("config", env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out
    [error] = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert needle in error and "'clash'" in error and ("'acme'" in error or section == "cache")


def test_reading_settings_loads_no_plugin_and_help_no_pydantic(acme_site: Path) -> None:
    import subprocess
    import sys

    code = (
        "import sys, provender; from provender._plugins import plugin_manager_if_loaded; "
        "provender.CacheManager(); s = provender.load_settings(); "
        "from provender_acme.settings import AcmeSettings; g = s.section('acme', AcmeSettings).greeting; "
        "print(plugin_manager_if_loaded() is None, 'provender_acme.plugin' in sys.modules, g)"
    )
    import os

    env = {**os.environ, **with_site(acme_site), "PROVENDER_ACME__GREETING": "typed"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["True", "False", "typed"]  # no plugin loaded, yet the section read
    code = (
        "import sys, provender; print(provender.load_settings().acme.greeting, 'provender_acme.plugin' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["typed", "True"]  # by attribute: the plugins load to find the model
    code = (
        "import sys; from provender.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass\n"
        "print('pydantic' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().endswith("False")


def test_the_server_section_keeps_its_names_and_the_one_default_port() -> None:
    pytest.importorskip("provender_serve")
    from provender import _client
    from provender_serve.settings import ServerSettings

    assert ServerSettings().port == _client.DEFAULT_PORT and ServerSettings().host == _client.DEFAULT_HOST
    write_config("[server]\nport = 12000\n")
    assert load_settings().section("server", ServerSettings).port == 12000 == _client.server_settings_fast()[1]
    rows = {r["setting"]: r for r in json.loads(run_cli("config", "--json").stdout)["settings"]}
    assert rows["server.port"]["value"] == 12000 and rows["server.port"]["plugin"] == "serve"
    assert rows["server.port"]["env"] == "PROVENDER_SERVER__PORT"


def test_providers_declare_a_priority_and_prefer_lists_come_first() -> None:
    from provender import Provider, hookimpl
    from provender._plugins import get_plugin_manager
    from provender._resolve import prefer_order

    class Plugin:
        @hookimpl
        def provender_register_providers(self, register):  # type: ignore[no-untyped-def]
            register("slow", Provider, priority=-5)
            register("plain", Provider)
            register("fast", Provider, priority=50)

    get_plugin_manager().register(Plugin(), name="ranked")
    assert prefer_order(["slow", "plain", "fast"], []) == ["fast", "plain", "slow"]
    assert prefer_order(["slow", "plain", "fast"], ["slow"]) == ["slow", "fast", "plain"]
    assert load_settings().providers.prefer == []  # the core names no plugin


def test_cache_manager_imports_neither_the_plugin_layer_nor_pluggy(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        f"import sys, provender; provender.CacheManager({str(tmp_path / 'c')!r}); provender.CacheManager(); "
        "print([m for m in ('provender._plugins', 'pluggy') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
