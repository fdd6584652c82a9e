"""Sections of the settings that no field reads: a typo is an error, a plugin's a warning.

`Settings` ignores a section it has no field for (a plugin's section must not fail a
process that has not loaded that plugin), so `check_sections` looks at what was given
once the plugins' sections are known (``complete``): an argument naming no section is an
error; a ``[section]`` of the config file that no installed plugin registers is an error
naming the closest known section when one is close (a typo such as ``[servr]``), and a
one-line warning otherwise (a plugin not installed on this machine) or when a disabled or
failed plugin may own it.
"""

from __future__ import annotations

import difflib
import logging
from typing import TYPE_CHECKING, Any

from provender._config_files import config_file_path, locate_key, read_config_file
from provender.errors import ConfigError

if TYPE_CHECKING:
    from pydantic import BaseModel

logger = logging.getLogger(__name__)
_warned: set[str] = set()


def check_sections(cls: type[BaseModel], overrides: dict[str, Any], *, complete: bool) -> None:
    """Raise ConfigError for an unknown section given as an argument or mistyped in the config
    file; warn (once per process) about a config-file section no loaded plugin reads."""
    known = list(cls.model_fields)
    for name in overrides:
        if name not in known:
            raise ConfigError(
                f"unknown setting section {name!r} in argument (known: {', '.join(known)})",
                setting=name,
                source="argument",
                value=overrides[name],
            )
    if not complete:  # the plugins' sections are not known yet: nothing can be said of the others
        return
    path = config_file_path()
    for name, value in read_config_file(path).items():
        if name in known:
            continue
        line = locate_key(path, name)
        where = f"config file {path}" + (f", line {line}" if line else "")
        off = _plugins_off(name)
        close = difflib.get_close_matches(name, known, n=1)
        if close and not off:
            raise ConfigError(
                f"unknown setting section {name!r} in {where} (did you mean {close[0]!r}? known: {', '.join(known)})",
                setting=name,
                source=f"file:{path}",
                value=value,
            )
        if off:
            plugin, status = off[0]
            message = f"section [{name}] of {where} is not read: plugin {plugin!r}, which may own it, is {status}"
        else:
            message = (
                f"section [{name}] of {where} is not a setting of provender or of any installed plugin "
                "(a plugin not installed here?); ignored"
            )
        if message not in _warned:
            _warned.add(message)
            logger.warning("%s", message)


def _plugins_off(section: str) -> list[tuple[str, str]]:
    """(name, status) of disabled or failed plugins whose name looks like `section`'s owner
    (their sections are unknown: a disabled plugin is never imported)."""
    from provender._plugins import plugin_manager_if_loaded

    host = plugin_manager_if_loaded()
    found = []
    for info in host.plugins.values() if host is not None else []:
        if info.status not in ("disabled", "failed"):
            continue
        names = {info.name, (info.distribution or "").replace("-", "_").removeprefix("provender_")}
        if any(n and (n[:4] == section[:4] or n in section or section in n) for n in names):
            found.append((info.name, info.status))
    return found
