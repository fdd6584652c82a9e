"""Plugins installed for real (the example `provender-echo` and the broken fixture) found through entry points."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path

import pytest

from helpers import run_cli
from provender import CacheManager, Provider, UnknownProviderError, get_provider, hookimpl
from provender._plugins import get_plugin_manager
from provender._resolve import parse_model_name

INSTALLED = {ep.name for ep in metadata.entry_points(group="provender")}
pytestmark = pytest.mark.skipif(
    not {"echo", "broken"} <= INSTALLED,
    reason="install examples/provender-echo and tests/plugins/provender-broken (tox does) to run the plugin tests",
)


def test_plugins_lists_loaded_and_failed() -> None:
    out = run_cli("plugins", "--json")
    assert out.returncode == 0
    plugins = {p["name"]: p for p in json.loads(out.stdout)}
    assert plugins["echo"]["status"] == "loaded" and plugins["echo"]["providers"] == ["echo"]
    assert "provender_register_providers" in plugins["echo"]["hooks"]
    assert plugins["broken"]["status"] == "failed"
    assert "nonexistent-runtime" in plugins["broken"]["error"]
    table = run_cli("plugins")
    assert "broken" in table.stdout and "failed" in table.stdout


def test_broken_plugin_never_takes_the_cli_down() -> None:
    out = run_cli("generate", "-m", "echo:upper", "still works")
    assert out.returncode == 0 and out.stdout.strip() == "STILL WORKS"
    assert "broken" in out.stderr and "Traceback" not in out.stderr  # reported, in one line


def test_generate_through_the_example_plugin() -> None:
    assert run_cli("generate", "-m", "echo:reverse", "--max-tokens", "2", "a b c").stdout.strip() == "c b"
    streamed = run_cli("generate", "-m", "echo:upper", "--stream", "x y z")
    assert streamed.stdout.strip() == "X Y Z"
    assert run_cli("generate", "-m", "echo:upper", input="from stdin\n").stdout.strip() == "FROM STDIN"
    bad = run_cli("generate", "-m", "echo:upper", "--temperature", "-1", "x")
    assert bad.returncode == 2 and "temperature" in bad.stderr


def test_plugin_command_registered() -> None:
    out = run_cli("echo-modes")
    assert out.returncode == 0 and "upper" in out.stdout.split()


def test_disabled_plugin_is_not_loaded() -> None:
    env = {"PROVENDER_PLUGINS__DISABLED": "echo"}
    plugins = {p["name"]: p for p in json.loads(run_cli("plugins", "--json", env=env).stdout)}
    assert plugins["echo"]["status"] == "disabled" and plugins["echo"]["providers"] == []
    out = run_cli("generate", "-m", "echo:upper", "x", env=env)
    assert out.returncode == 2 and "no provider named 'echo'" in out.stderr
    assert "echo-modes" not in run_cli("--help", env=env).stdout


def test_claim_by_content(cache_dir: Path, make_files, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PROVENDER_CACHE__DIR", str(cache_dir))
    cm = CacheManager()
    cm.import_model(make_files("e", {"echo.json": b'{"provider": "echo", "mode": "upper"}'}), "me/shouty")
    cm.import_model(make_files("x", {"config.json": b"{}"}), "me/echo-in-name-only")
    provider = get_provider("me/shouty")  # no provider named: the claim hook decides, by content
    assert isinstance(provider, Provider) and provider.name == "echo" and provider.generate("hi") == "HI"
    rows = {r["name"]: r for r in json.loads(run_cli("cache", "ls", "--json").stdout)}
    assert rows["me/shouty"]["providers"] == ["echo"] and rows["me/echo-in-name-only"]["providers"] == []
    models = json.loads(run_cli("models", "--json").stdout)
    assert [m["model"] for m in models] == ["echo:me/shouty"]
    out = run_cli("generate", "-m", "me/echo-in-name-only", "x")
    assert out.returncode == 1 and "no installed provider can serve it" in out.stderr


def test_an_import_no_provider_can_serve_says_so(cache_dir: Path, make_files, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PROVENDER_CACHE__DIR", str(cache_dir))
    package = make_files("pkg", {"__init__.py": b"", "model/config.json": b"{}", "model/w.bin": 64})
    out = run_cli("cache", "import", str(package), "--name", "me/pkg")
    assert out.returncode == 0 and out.stdout.startswith("imported me/pkg")  # it is in: a note, not a failure
    assert "note: no installed provider can serve it" in out.stderr
    assert "its model files are in 'model': import that folder instead" in out.stderr
    out = run_cli("generate", "-m", "me/pkg", "x")
    assert out.returncode == 1 and "though the cache holds it (local entry" in out.stderr
    shouty = make_files("e", {"echo.json": b'{"provider": "echo", "mode": "upper"}'})
    out = run_cli("cache", "import", str(shouty), "--name", "me/shouty", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["providers"] == ["echo"] and "note:" not in out.stderr
    out = run_cli("cache", "import", str(package / "model"), "--name", "me/model")
    assert out.returncode == 0 and "import that folder" not in out.stderr  # unservable, but nothing nested


def test_in_process_plugin_and_model_names() -> None:
    class Shout(Provider):
        name = "shout"

        def generate(self, prompt: str, **options: object) -> str:
            return prompt.upper() + "!"

    class Plugin:
        @hookimpl
        def provender_register_providers(self, register):  # type: ignore[no-untyped-def]
            register("shout", Shout)

    manager = get_plugin_manager()
    manager.register(Plugin(), name="inline")
    assert get_provider("shout:anything").generate("hey") == "HEY!"
    with pytest.raises(UnknownProviderError) as info:
        get_provider("whisper:x")
    assert "shout" in info.value.available
    assert parse_model_name("mlx:org/name") == ("mlx", "org/name")
    assert parse_model_name("org/name") == (None, "org/name")
    assert parse_model_name("C:\\models\\x") == (None, "C:\\models\\x")
    assert parse_model_name("e:x") == ("e", "x")


def test_fast_entry_point_scan_agrees_with_importlib_metadata() -> None:
    from provender._plugins import find_entry_points

    ours = {(ep.name, ep.value, ep.distribution) for ep in find_entry_points("provender")}
    reference = {
        (ep.name, ep.value, ep.dist.name.replace("-", "_") if ep.dist else None)
        for ep in metadata.entry_points(group="provender")
    }
    assert {(n, v, d.replace("-", "_") if d else None) for n, v, d in ours} == reference
    assert {(ep.name, ep.value) for ep in find_entry_points("console_scripts")} >= {
        (ep.name, ep.value) for ep in metadata.entry_points(group="console_scripts") if ep.name == "provender"
    }


def test_a_plugin_failing_in_a_hook_is_isolated(capsys: pytest.CaptureFixture[str]) -> None:
    from click.testing import CliRunner

    from provender._cli import _build

    class Bad:
        @hookimpl
        def provender_register_commands(self, cli):  # type: ignore[no-untyped-def]
            raise RuntimeError("boom")

        @hookimpl
        def provender_register_tools(self, register):  # type: ignore[no-untyped-def]
            raise RuntimeError("boom")

    class Good:
        @hookimpl
        def provender_register_tools(self, register):  # type: ignore[no-untyped-def]
            register(len)
            return "ok"

    manager = get_plugin_manager()
    manager.register(Bad(), name="bad-hooks")
    manager.register(Good(), name="good-hooks")
    called = dict(manager.call_each("provender_register_tools", register=lambda t: None))
    assert called["good-hooks"] == "ok" and "bad-hooks" not in called
    cli = _build()  # warns on stderr while building
    assert "plugin 'bad-hooks' failed to add its commands" in capsys.readouterr().err
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0 and "cache" in result.stdout


# -- issue 20 item 3: hooks are pluggy's, read and called one way --------------------------

PLUGGY_STYLE = '''"""A plugin written as pluggy's docs show: its own marker at module level, a class instance
as the plugin, a hook method decorated with functools.wraps."""
import functools

import pluggy

hookimpl = pluggy.HookimplMarker("provender")


def logged(fn):
    @functools.wraps(fn)
    def inner(*args, **kwargs):
        return fn(*args, **kwargs)

    return inner


class Commands:
    @hookimpl
    @logged
    def provender_register_commands(self, cli):
        import click

        @cli.command("wrapped-hello")
        def hello():
            click.echo("hello from a wrapped hook")

        return "wrapped"


plugin = Commands()
'''

CLASS_STYLE = '''"""A plugin that is a class (its hooks a classmethod and a staticmethod), and a marked
callable instance, which pluggy does not take for a hook (it calls functions and methods)."""
import pluggy

hookimpl = pluggy.HookimplMarker("provender")


class Claimer:
    def __call__(self, entry):
        return "classy"


class Plugin:
    greeting = "hello from a class"

    @hookimpl
    @classmethod
    def provender_register_commands(cls, cli):
        import click

        cli.add_command(click.Command("class-hello", callback=lambda: click.echo(cls.greeting)))

    @hookimpl
    @staticmethod
    def provender_claim_model(entry):
        return None

    provender_cache_evicted = hookimpl(Claimer())
'''


def install_two(root: Path) -> dict[str, str]:
    import os

    root.mkdir(parents=True)
    (root / "provender_pluggystyle.py").write_text(PLUGGY_STYLE)
    (root / "provender_classy.py").write_text(CLASS_STYLE)
    for dist, eps in (
        ("provender_pluggystyle", "pluggystyle = provender_pluggystyle:plugin"),
        ("provender_classy", "classy = provender_classy:Plugin"),
    ):
        info = root / f"{dist}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[provender]\n{eps}\n")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}


def test_wrapped_class_and_callable_hooks_work_from_installed_plugins(tmp_path: Path) -> None:
    env = {**install_two(tmp_path / "site"), "PROVENDER_QUIET_PLUGIN_ERRORS": "1"}
    help_out = run_cli("--help", env=env)
    assert help_out.returncode == 0 and "warning" not in help_out.stderr, help_out.stderr
    assert "wrapped-hello" in help_out.stdout and "class-hello" in help_out.stdout
    assert run_cli("wrapped-hello", env=env).stdout.strip() == "hello from a wrapped hook"
    assert run_cli("class-hello", env=env).stdout.strip() == "hello from a class"
    plugins = {p["name"]: p for p in json.loads(run_cli("plugins", "--json", env=env).stdout)}
    assert plugins["pluggystyle"]["status"] == "loaded" and plugins["classy"]["status"] == "loaded"
    assert plugins["pluggystyle"]["hooks"] == ["provender_register_commands"]
    assert plugins["classy"]["hooks"] == ["provender_claim_model", "provender_register_commands"]  # not the instance


def test_wrapped_and_class_hooks_give_the_same_results_through_call_each_and_pluggy() -> None:
    """The `functools.wraps` method asking for ``(self, cli)``, a class as the plugin (classmethod
    and staticmethod hooks) and a marked callable instance (not a hook, for pluggy): what the
    CLI's isolated calls get is what pluggy's own hook call gets (once a shortcut gave ``[]``
    for the first, and took the last for a hook that pluggy never calls)."""
    import functools

    import pluggy

    from provender._plugins import PluginHost

    marker = pluggy.HookimplMarker("provender")

    def logged(fn):  # type: ignore[no-untyped-def]
        @functools.wraps(fn)
        def inner(*args, **kwargs):  # type: ignore[no-untyped-def]
            return fn(*args, **kwargs)

        return inner

    class Wrapped:
        @marker
        @logged
        def provender_register_commands(self, cli):  # type: ignore[no-untyped-def]
            cli.append("wrapped")
            return "wrapped"

    class Callable:
        def __call__(self, cli: list[str]) -> str:
            cli.append("callable")
            return "callable"

    class AsClass:
        @marker
        @classmethod
        def provender_register_commands(cls, cli):  # type: ignore[no-untyped-def]
            cli.append(cls.__name__)
            return "classmethod"

        @marker
        @staticmethod
        def provender_claim_model(entry):  # type: ignore[no-untyped-def]
            return "static"

    class WithCallable:
        provender_register_commands = marker(Callable())

    host = PluginHost()  # a fresh host: nothing called through pluggy yet
    for name, plugin in (("wrapped", Wrapped()), ("class", AsClass), ("callable", WithCallable())):
        host.register(plugin, name=name)
    assert host.plugins["callable"].hooks == []  # pluggy does not take it for a hook, nor do we
    first: list[str] = []
    results = host.call_each("provender_register_commands", cli=first)
    assert results == [("class", "classmethod"), ("wrapped", "wrapped")]
    again: list[str] = []
    assert host.pm.hook.provender_register_commands(cli=again) == [r for _, r in results]
    assert first == again == ["AsClass", "wrapped"]
    assert host.implementers("provender_register_commands") == ["class", "wrapped"]
    assert host.claim(object()) == ["static"]  # type: ignore[arg-type]
