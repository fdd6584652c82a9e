"""Every hook a provender plugin can implement, in one place.

A plugin is a module (named by an entry point in the ``provender`` group) with
functions decorated ``@provender.hookimpl`` whose names match these specs (or specs a
plugin added through ``provender_addhooks``: provender-agent's ``provender_register_tools``
lives in `provender_agent.hookspecs`). A plugin
implements only the hooks it needs; argument names must match, but a plugin may
accept fewer arguments than the spec passes.

Keep plugin modules light: they are imported by ``provender --help``. Import heavy
libraries (mlx, torch, numpy) inside the provider, not at module level.
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Protocol

import pluggy

if TYPE_CHECKING:
    import click
    from pydantic import BaseModel

    from provender._cache._entry import CacheEntry
    from provender._provider import Provider

hookspec = pluggy.HookspecMarker("provender")
"""Marks a hook specification (``pluggy.HookspecMarker("provender")``): a package adding hooks
of its own through ``provender_addhooks`` marks them with it."""


class ProviderFactory(Protocol):
    def __call__(self, model: str) -> Provider: ...


class RegisterProvider(Protocol):
    def __call__(self, name: str, factory: ProviderFactory, *, description: str = "", priority: int = 0) -> None: ...


class RegisterSettings(Protocol):
    def __call__(self, name: str, model: type[BaseModel]) -> None: ...


class HookHost(Protocol):
    """What ``provender_addhooks`` receives: the plugin host, reduced to what that hook needs."""

    def add_hookspecs(self, module: types.ModuleType | type) -> None: ...


@hookspec(historic=True)
def provender_addhooks(pluginmanager: HookHost) -> None:
    """Add hook specs of your own, as pytest's ``pytest_addhooks`` does.

    Called once, when this plugin is registered and before any of its other hooks are
    checked; call ``pluginmanager.add_hookspecs(module)`` with a module whose functions
    are marked ``@provender.hookspecs.hookspec``. Other plugins may then implement
    those hooks, and your package calls them. provender-agent adds
    ``provender_register_tools`` this way (`provender_agent.hookspecs`). Returns nothing.
    """


@hookspec
def provender_register_providers(register: RegisterProvider) -> None:
    """Register the providers this plugin brings.

    Called once per process, the first time providers are needed (resolving a model,
    `provender plugins`, `provender models`). Call ``register(name, factory)`` for each
    provider; ``factory(model)`` must return a `provender.Provider` bound to that model.
    It is called lazily, only when that provider is used, so importing the runtime
    (mlx, torch...) belongs inside the factory. ``priority`` (default 0) says how good a
    choice the provider is on this machine when several claim a model and the setting
    ``providers.prefer`` does not decide: the highest serves (provender-mlx declares 20 on
    Apple silicon, provender-transformers 10). Returns nothing.
    """


@hookspec
def provender_register_settings(register: RegisterSettings) -> None:
    """Register this plugin's settings sections.

    Call ``register("acme", AcmeSettings)`` with a pydantic model (`provender.Section` is
    a base that makes unknown keys errors): the section is then read like the core's,
    ``provender.load_settings().acme.greeting`` (typed:
    ``load_settings().section("acme", AcmeSettings)``), from ``[acme]`` in the config file
    and ``PROVENDER_ACME__GREETING``, with the same precedence and errors, and shown by
    ``provender config``. A name is lowercase letters, digits and single underscores; a
    core section's name (cache, memory, plugins, data, providers, remote) or one another
    plugin registered is an error naming both. Called once per process, the first time
    settings need the plugins' sections; import the model's module inside the hook.
    Returns nothing.
    """


@hookspec
def provender_register_commands(cli: click.Group) -> None:
    """Add commands or command groups to the ``provender`` command line.

    Called while the CLI is built, before arguments are parsed, including for
    ``provender --help``: add commands with ``cli.add_command(...)`` or ``@cli.command()``
    and keep their imports inside the command functions. Returns nothing.
    """


@hookspec
def provender_claim_model(entry: CacheEntry) -> str | None:
    """Say whether this plugin's provider can serve a cached model.

    Called for each cache entry when a model is named without a provider
    (``provender generate -m org/name``) and when listings show who can serve an entry.
    Decide by the entry's content (``entry.path``: config files, weight formats,
    quantization metadata), never by the words in its name, and be quick: read small
    files only. Return the provider name to claim it, or None. All claims are
    collected; the first registered plugin's claim wins when several claim.
    """


@hookspec
def provender_cache_evicted(entry: CacheEntry) -> None:
    """Hear that the disk cache dropped an entry (eviction, `cache rm`, `verify --fix`).

    Called in the process that removed it, after its files are gone, so a provider
    can drop in-memory copies loaded from it. Other processes cannot be told; an
    entry they hold in use is never removed. Returns nothing.
    """
