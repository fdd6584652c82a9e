"""The hook markers: pluggy's own, for the project ``provender``.

``@provender.hookimpl`` is ``pluggy.HookimplMarker("provender")``, so a plugin may use either
(or make its own at module level, as pluggy's docs show); the specs in `provender.hookspecs`
are marked with ``pluggy.HookspecMarker("provender")``. Every hook is read and called by
pluggy (`provender._plugins.PluginHost`); there is no second reading of a plugin's hooks.

Importing pluggy costs about 5 ms on top of what ``provender --help`` needs anyway, measured
against a pluggy-free copy of these markers (issue 20 item 3): too little to keep a copy
that could disagree with pluggy.
"""

from __future__ import annotations

import pluggy

from provender.hookspecs import hookspec

PROJECT = "provender"

hookimpl = pluggy.HookimplMarker(PROJECT)

__all__ = ["PROJECT", "hookimpl", "hookspec"]
