"""The core's shape (issue 10): the plugin host over pluggy, hooks packages add themselves,
the core's commands as a default plugin, logging by name prefix, the public errors and CLI
helpers, the one-way layers and the architecture document.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

import provender
from helpers import SIMPLE_PLUGIN
from provender import hookimpl
from provender.errors import PluginError

ROOT = Path(__file__).resolve().parents[2]


def test_plugin_host_is_the_manager_under_both_names() -> None:
    from provender._plugins import PluginHost, PluginManager

    assert PluginManager is PluginHost
    assert isinstance(provender.get_plugin_manager(), PluginHost)


def test_core_commands_come_from_a_default_plugin_not_listed_as_installed() -> None:
    from click.testing import CliRunner

    from provender._cli import _build
    from provender._cli._builtin import NAME

    host = provender.get_plugin_manager()
    cli = _build()
    _build()  # building again registers it once
    assert host.implementers("provender_register_commands").count(NAME) == 1
    assert host.implementers("provender_register_commands")[0] == NAME  # called first: plugins come after
    assert NAME not in host.plugins
    assert {"generate", "models", "plugins", "config", "pull", "cache"} <= set(cli.commands)
    out = CliRunner().invoke(cli, ["plugins", "--json"])
    assert out.exit_code == 0 and NAME not in {p["name"] for p in json.loads(out.stdout)}


def test_the_agent_adds_its_hook_spec_and_the_core_does_not_own_it() -> None:
    from provender import hookspecs

    assert not hasattr(hookspecs, "provender_register_tools")
    host = provender.get_plugin_manager()
    assert host.pm.hook.provender_register_tools.spec.argnames == ("register",)
    typo = types.SimpleNamespace(provender_register_tool=hookimpl(lambda register: None))
    with pytest.raises(PluginError, match=r"did you mean provender_register_tools\?"):
        host.register(typo, name="typo")
    assert host.pm.hook.provender_register_tools.spec is not None  # pluggy has the agent's spec too


def specs_module() -> types.ModuleType:
    from provender.hookspecs import hookspec

    module = types.ModuleType("custom_specs")

    def provender_custom(value):  # type: ignore[no-untyped-def]
        """A hook a package adds."""

    module.provender_custom = hookspec(provender_custom)  # type: ignore[attr-defined]
    return module


def test_a_plugin_adds_hooks_that_others_implement_through_pluggy_too() -> None:
    from provender._plugins import PluginHost

    module = specs_module()
    host = PluginHost()
    implementer = types.SimpleNamespace(provender_custom=hookimpl(lambda value: value * 2))
    with pytest.raises(PluginError, match="unknown hook provender_custom"):
        host.register(implementer, name="early")  # nobody specifies it yet

    adder = types.SimpleNamespace(
        provender_addhooks=hookimpl(lambda pluginmanager: pluginmanager.add_hookspecs(module))
    )
    host.register(adder, name="adder")
    host.register(implementer, name="implementer")
    assert host.call_each("provender_custom", value=21) == [("implementer", 42)]
    host.pm.check_pending()
    assert host.pm.hook.provender_custom(value=1) == [2]  # and pluggy agrees, check_pending passed
    assert host.has_implementations("provender_custom") and not host.has_implementations("provender_claim_model")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]


def test_logging_is_configured_by_the_provender_prefix(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from provender._cli import _configure_logging

    _configure_logging(1, False)  # -v
    logging.getLogger("provender_somepackage.module").info("from a package no one listed")
    logging.getLogger("provender._cache").info("from the core")
    logging.getLogger("unrelated").info("someone else's info")
    logging.getLogger("unrelated").warning("someone else's warning")
    logging.getLogger("provenderish").info("not ours")
    err = capsys.readouterr().err
    assert "INFO: from a package no one listed" in err and "INFO: from the core" in err
    assert "someone else's info" not in err and "not ours" not in err
    assert "someone else's warning" in err
    _configure_logging(0, False)
    logging.getLogger("provender_somepackage").info("quiet now")
    assert "quiet now" not in capsys.readouterr().err
    assert [h.get_name() for h in logging.getLogger().handlers].count("provender") == 1


def test_errors_and_cli_helpers_are_public(capsys: pytest.CaptureFixture[str]) -> None:
    import provender._errors
    import provender.errors
    from provender.cli import EXIT_USAGE, echo_table, is_usage_error

    names = [n for n, v in vars(provender.errors).items() if isinstance(v, type) and issubclass(v, Exception)]
    assert len(names) >= 20 and "InvalidModelNameError" in names
    for name in names:
        assert getattr(provender, name) is getattr(provender.errors, name) is getattr(provender._errors, name)
    assert {n for n in provender.__all__ if n.endswith("Error")} <= set(names)
    assert is_usage_error(provender.errors.ConfigError("bad")) and EXIT_USAGE == 2
    echo_table([("a", 1)], ("NAME", "N"))
    assert capsys.readouterr().out.split("\n")[1].split() == ["a", "1"]


def test_import_layers_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed here (tox -e lint runs it)")
    # lint-imports reads the sources only: every package's src/ on the path, whether or not its
    # runtime (torch, llama.cpp) is installed in this env
    sources = [str(src) for src in sorted((ROOT / "packages").glob("*/src"))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*sources, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stdout[-3000:]
    assert out.stdout.count("KEPT") == 3 and "BROKEN" not in out.stdout


def test_architecture_doc_reaches_every_part_in_one_hop() -> None:
    doc = ROOT / "docs" / "architecture.md"
    text = doc.read_text()
    links = re.findall(r"\]\(([^)#]+)\)", text)
    missing = [link for link in links if not link.startswith("http") and not (doc.parent / link).exists()]
    assert not missing
    targets = {str((doc.parent / link).resolve().relative_to(ROOT)) for link in links}
    for part in (
        "packages/core/src/provender/hookspecs.py",
        "packages/core/src/provender/_cache/_manager.py",
        "packages/core/src/provender/_settings.py",
        "packages/core/src/provender/_cli/__init__.py",
        "packages/core/src/provender/_cli/cache.py",
        "packages/core/src/provender/_provider.py",
        "packages/core/src/provender/_pool.py",
    ):
        assert part in targets, part
    for package in (
        "core",
        "provider-mlx",
        "provider-transformers",
        "provider-llamacpp",
        "serve",
        "embedding",
        "agent",
    ):
        assert any(t.startswith(f"packages/{package}/") for t in targets), package


def test_an_upward_import_inside_a_function_breaks_the_layers(tmp_path: Path) -> None:
    import shutil
    import tomllib

    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed here (tox -e lint runs it)")
    shutil.copytree(ROOT / "packages" / "core" / "src" / "provender", tmp_path / "src" / "provender")
    names = tmp_path / "src" / "provender" / "_cache" / "_names.py"
    names.write_text(names.read_text() + "\n\ndef _settings():\n    from provender._settings import load_settings\n")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    core = [c for c in config["contracts"] if c.get("containers") == ["provender"]]
    lines = ["[importlinter]", "root_packages =", "    provender"]
    for n, contract in enumerate(core):
        lines += [f"[importlinter:contract:{n}]", f"name = {contract['name']}", f"type = {contract['type']}"]
        lines += ["containers =", "    provender", "layers ="] + [f"    {layer}" for layer in contract["layers"]]
        lines += ["ignore_imports ="] + [f"    {i}" for i in contract.get("ignore_imports", [])]
    (tmp_path / ".importlinter").write_text("\n".join(lines) + "\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}
    out = subprocess.run([str(lint), "--no-cache"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert out.returncode == 1, out.stdout[-2000:]
    assert "provender._cache._names -> provender._settings" in out.stdout


def test_a_cache_helper_naming_the_manager_even_for_type_hints_is_a_cycle(tmp_path: Path) -> None:
    """Inside provender._cache the parts (store, catalog, evictor, intake, transfers) never name `CacheManager`,
    the front that composes them: the cycle contract covers the package, counting imports under TYPE_CHECKING."""
    import shutil
    import tomllib

    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed here (tox -e lint runs it)")
    shutil.copytree(ROOT / "packages" / "core" / "src" / "provender", tmp_path / "src" / "provender")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (acyclic,) = [c for c in config["contracts"] if c["type"] == "acyclic_siblings"]
    assert "provender._cache" in acyclic["ancestors"] and not acyclic.get("skip_descendants")
    lines = ["[importlinter]", "root_packages =", "    provender", "[importlinter:contract:0]"]
    lines += [f"name = {acyclic['name']}", "type = acyclic_siblings", "ancestors ="]
    lines += [f"    {a}" for a in acyclic["ancestors"]]
    lines += ["ignore_imports ="] + [f"    {i}" for i in acyclic.get("ignore_imports", [])]
    (tmp_path / ".importlinter").write_text("\n".join(lines) + "\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src")}

    def lint_copy() -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(lint), "--no-cache"], cwd=tmp_path, capture_output=True, text=True, env=env)

    kept = lint_copy()
    assert kept.returncode == 0, kept.stdout[-2000:]  # the tree as it is has no cycle
    helper = tmp_path / "src" / "provender" / "_cache" / "_eviction.py"
    helper.write_text(
        helper.read_text()
        + "\n\nimport typing\n\nif typing.TYPE_CHECKING:\n    from provender._cache._manager import CacheManager\n"
    )
    out = lint_copy()
    assert out.returncode == 1, out.stdout[-2000:]
    assert "No cycles are allowed in provender._cache" in out.stdout
    assert "._manager -> ._eviction" in out.stdout or "._eviction -> ._manager" in out.stdout


HELP_MODULES = """
import sys
from provender._cli import main
try:
    main(["--help"])
except SystemExit:
    pass
print(" ".join(sorted(sys.modules)), file=sys.stderr)
"""


def test_the_core_on_the_help_path_imports_no_logging_pathlib_or_json() -> None:
    """Issue 9 item 13: what `provender --help` and a simple-style plugin import from the core is cheap."""
    code = (
        "import sys; import provender, provender._cli, provender._cli._builtin, provender._cli.core, "
        "provender._plugins, provender._provider; from provender import Provider, hookimpl; "
        "from provender._config_files import disabled_plugins_fast; disabled_plugins_fast(); "
        "print([m for m in ('pathlib', 'json', 'asyncio') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # pluggy and logging do load (issue 20 item 3: measured, a few ms)


def test_help_with_a_simple_plugin_among_100_distributions_does_not_load_logging(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    for i in range(100):
        info = site / f"fakedist{i:03d}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakedist{i:03d}\nVersion: 1.0\n")
    (site / "provender_shout.py").write_text(SIMPLE_PLUGIN)
    (site / "provender_shout-1.0.dist-info").mkdir()
    (site / "provender_shout-1.0.dist-info" / "entry_points.txt").write_text("[provender]\nshout = provender_shout\n")
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    # the test suite's own plugins stay out: one fails on purpose (and logs it), as no user's does
    env = {**os.environ, "PYTHONPATH": path, "PROVENDER_PLUGINS__DISABLED": "broken,scripted"}
    out = subprocess.run([sys.executable, "-c", HELP_MODULES], capture_output=True, text=True, env=env, check=True)
    modules = out.stderr.split()
    assert "Usage:" in out.stdout and "provender_shout" in modules
    assert "asyncio" not in modules
    plugins = subprocess.run(
        [sys.executable, "-m", "provender", "plugins", "--json"], capture_output=True, text=True, env=env, check=True
    )
    assert {"name": "shout", "status": "loaded"}.items() <= {
        k: v for p in json.loads(plugins.stdout) if p["name"] == "shout" for k, v in p.items()
    }.items()


def test_a_plugin_that_fails_is_summarised_not_logged_before_options_are_parsed(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "provender_fails.py").write_text("raise RuntimeError('boom at import')\n")
    (site / "provender_fails-1.0.dist-info").mkdir()
    (site / "provender_fails-1.0.dist-info" / "entry_points.txt").write_text("[provender]\nfails = provender_fails\n")
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    env.pop("PROVENDER_QUIET_PLUGIN_ERRORS", None)
    for args in (["--help"], ["plugins"]):
        out = subprocess.run([sys.executable, "-m", "provender", *args], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        assert "fails" in out.stderr and "failed to load (see `provender plugins`)" in out.stderr
        assert "was skipped" not in out.stderr and "Traceback" not in out.stderr  # the record itself is held back
    listed = subprocess.run([sys.executable, "-m", "provender", "plugins"], capture_output=True, text=True, env=env)
    assert "RuntimeError: boom at import" in listed.stdout


def test_test_modules_that_run_together_have_unique_basenames() -> None:
    """The test dirs have no __init__.py, so pytest imports each module by its basename: two
    modules of one name in one run stop the collection ("import file mismatch", a CI failure
    twice). Each tox env's run is checked (tox.ini's commands); the envs apart may share names."""
    apart = ("transformers", "ray", "llamacpp")
    runs = {
        "tests": [p for p in (ROOT / "tests").iterdir() if p.is_dir() and p.name not in apart]
        + [ROOT / "examples" / "provender-echo" / "tests"],
        "transformers": [ROOT / "tests" / "transformers", ROOT / "tests" / "ray"],
        "llamacpp": [ROOT / "tests" / "llamacpp"],
    }
    for env, dirs in runs.items():
        seen: dict[str, Path] = {}
        for folder in dirs:
            for module in sorted(folder.rglob("test_*.py")):
                if "plugins" in module.parts:  # tests/plugins holds installable packages, not tests
                    continue
                assert module.name not in seen, f"{env}: {module} and {seen[module.name]} share a basename"
                seen[module.name] = module
