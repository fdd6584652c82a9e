"""Where settings come from, readable without pydantic.

`provender --help` must start fast, yet it needs `plugins.disabled` to know which
plugins to load; importing pydantic-settings alone costs ~220 ms here. This module
finds and reads the TOML file and the environment with the stdlib only; the full
`Settings` model (in `_settings.py`) uses the same functions, so both agree.
"""

from __future__ import annotations

import os
import re
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

CORE_SECTIONS = ("cache", "memory", "plugins", "data", "providers", "remote")
"""The core's settings sections; a plugin's section may not take one of these names."""

ENV_PREFIX = "PROVENDER_"
ENV_NESTED_DELIMITER = "__"
CONFIG_ENV_VAR = "PROVENDER_CONFIG"


def user_config_dir() -> Path:
    """platformdirs' ``user_config_dir("provender")``.

    Importing platformdirs costs ~18 ms here, a sixth of `provender --help`; on Linux
    and macOS its rule is two lines, so the fast path applies it directly (a test
    checks both agree) and other platforms ask platformdirs.
    """
    from pathlib import Path

    return Path(_user_config_dir())


def _user_config_dir() -> str:
    if sys.platform.startswith("linux"):
        xdg = os.environ.get("XDG_CONFIG_HOME", "").strip()
        return os.path.join(xdg if xdg else os.path.expanduser("~/.config"), "provender")
    if sys.platform == "darwin":
        return os.path.expanduser("~/Library/Application Support/provender")
    import platformdirs

    return str(platformdirs.user_config_dir("provender", appauthor=False))


def config_file_path() -> Path:
    """``$PROVENDER_CONFIG``, else ``<user_config_dir>/provender/config.toml``."""
    from pathlib import Path

    return Path(_config_file())


def _config_file() -> str:
    """`config_file_path` as a string (the plugin layer's fast path has no use for pathlib)."""
    explicit = os.environ.get(CONFIG_ENV_VAR)
    if explicit:
        return os.path.expanduser(explicit)
    return os.path.join(_user_config_dir(), "config.toml")


def read_config_file(path: Path | str) -> dict[str, Any]:
    """The TOML file as a dict; ``{}`` if it does not exist.

    Raises ConfigError naming the file for unreadable or malformed TOML.
    """
    from provender.errors import ConfigError

    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        if os.environ.get(CONFIG_ENV_VAR):
            raise ConfigError(
                f"config file {str(path)!r} (from ${CONFIG_ENV_VAR}) does not exist", source=str(path)
            ) from None
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}", source=str(path)) from None
    import tomllib  # here, not above: without a config file, `provender --help` never needs it

    try:
        return tomllib.loads(data.decode("utf-8-sig"))  # -sig: a byte-order mark (Windows editors) is fine
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {exc}", source=str(path)) from None


def locate_key(path: Path, section: str, key: str | None = None) -> int | None:
    """The line (1-based) of the config file where ``[section]`` or its `key` is written, if found.

    tomllib gives values, not positions; this finds the ``[section]`` header (or a
    ``section.key =`` dotted key, or an inline ``section = {...}``) and then the ``key =``
    line inside it. Good enough to point a user at a typo; None when not found.
    """
    try:
        lines = path.read_bytes().decode("utf-8-sig", errors="replace").splitlines()
    except OSError:
        return None

    def name(word: str) -> str:  # bare, "quoted" or 'quoted'
        w = re.escape(word)
        return rf"""(?:{w}|"{w}"|'{w}')"""

    header = re.compile(rf"^\s*\[\s*{name(section)}\s*\]")
    any_header = re.compile(r"^\s*\[")
    wanted = re.compile(rf"^\s*{name(key)}\s*=") if key else None
    dotted = re.compile(rf"^\s*{name(section)}\s*\.\s*{name(key)}\s*=" if key else rf"^\s*{name(section)}\s*[.=]")
    inside = False
    for number, line in enumerate(lines, start=1):
        if any_header.match(line):
            inside = bool(header.match(line))
            if inside and wanted is None:
                return number
        elif wanted.match(line) if inside and wanted is not None else not inside and dotted.match(line):
            return number
    return None


_VIRTUAL_ROOTS = ("/proc", "/sys", "/dev")


def check_directory(value: object) -> Path:
    """A directory setting (``cache.dir``, ``data.dir``) as an absolute path, ``~`` expanded.

    Raises ValueError (a message fit for a user) for a value that cannot be meant: empty,
    relative (it would follow the current directory), under ``/proc``, ``/sys`` or
    ``/dev``, a file, a broken symbolic link, or below a file. A directory that does not
    exist yet is fine: it is created when first used.
    """
    from pathlib import Path

    if isinstance(value, Path):
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        raise ValueError(f"{value!r} is not a path")
    if not text.strip():
        raise ValueError("the path is empty; give an absolute path, or unset it for the default")
    path = Path(os.path.expanduser(text))
    if text.startswith("~") and str(path).startswith("~"):
        raise ValueError(f"cannot expand {text!r} (no such user)")
    if not path.is_absolute():
        raise ValueError(
            f"{text!r} is a relative path, which would follow the current directory; give an absolute path"
        )
    path = Path(os.path.normpath(path))
    if os.name == "posix":
        real = os.path.realpath(path)
        for root in _VIRTUAL_ROOTS:
            if real == root or real.startswith(root + "/") or str(path).startswith(root + "/"):
                raise ValueError(f"{str(path)!r} is under {root}, a virtual filesystem that cannot hold files")
    if path.is_symlink() and not path.exists():
        raise ValueError(f"{str(path)!r} is a broken symbolic link (to {os.readlink(path)!r})")
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"{str(path)!r} exists and is not a directory")
        return path
    for parent in path.parents:
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise ValueError(f"{str(path)!r} cannot be created: {str(parent)!r} is not a directory")
            break
    return path


def env_var_name(setting: str) -> str:
    """``cache.max_size`` -> ``PROVENDER_CACHE__MAX_SIZE``."""
    return ENV_PREFIX + setting.replace(".", ENV_NESTED_DELIMITER).upper()


def find_env(setting: str) -> tuple[str, str] | None:
    """(variable name, value) of the environment variable that sets `setting`, if any."""
    wanted = env_var_name(setting)
    for key, value in os.environ.items():
        if key.upper() == wanted:
            return key, value
    return None


def split_names(value: object) -> list[str]:
    """A list of names from a list, a JSON list string, or a comma-separated string."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                raise ValueError(f"{value!r} is not a JSON list of names") from None
        else:
            return [part.strip() for part in text.split(",") if part.strip()]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise ValueError(f"{value!r} is not a list of names")


def disabled_plugins_source() -> str:
    """Where `plugins.disabled` comes from, in words (the variable, or the file and line)."""
    found = find_env("plugins.disabled")
    if found:
        return f"environment variable {found[0]}"
    path = config_file_path()
    line = locate_key(path, "plugins", "disabled")
    return f"config file {path}" + (f", line {line}" if line else "")


def disabled_plugins_fast() -> list[str]:
    """`plugins.disabled` without importing pydantic (env wins over the TOML file).

    Errors are not raised here: the full settings report them when a command runs.
    """
    try:
        found = find_env("plugins.disabled")
        if found:
            return split_names(found[1])
        section = read_config_file(_config_file()).get("plugins", {})
        return split_names(section.get("disabled", [])) if isinstance(section, dict) else []
    except ValueError:  # ConfigError included; `load_settings` reports it where settings are used
        return []
