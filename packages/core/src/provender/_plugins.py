"""Plugin discovery and the process-wide plugin manager.

Entry points in the ``provender`` group are loaded one at a time: a plugin that
fails to import or to register is logged, remembered with its error (shown by
``provender plugins``) and skipped, so a broken plugin never takes the tool down.
"""

from __future__ import annotations

import threading
import types
from typing import TYPE_CHECKING, Any

from provender import hookspecs
from provender._entrypoints import PluginInfo, find_entry_points
from provender._hooks import (  # hookimpl: re-exported, `provender.hookimpl` is read from here
    HookFunction,
    HookimplMarker,
    hook_functions,
    hookimpl,
    spec_argnames,
)
from provender._log import get_logger
from provender.errors import PluginError, UnknownProviderError

if TYPE_CHECKING:
    import pluggy

    from provender._cache import CacheEntry
    from provender.hookspecs import ProviderFactory

logger = get_logger(__name__)  # `provender --help` loads plugins and never needs logging

PROJECT = "provender"
__all__ = [
    "HookimplMarker",
    "PluginError",
    "PluginHost",
    "PluginInfo",
    "PluginManager",
    "get_plugin_manager",
    "hookimpl",
]


class ProviderSpec:
    """A registered provider: its name, factory, the plugin that brought it and a description."""

    __slots__ = ("description", "factory", "name", "plugin")

    def __init__(self, name: str, factory: ProviderFactory, plugin: str, description: str = "") -> None:
        self.name = name
        self.factory = factory
        self.plugin = plugin
        self.description = description

    def __repr__(self) -> str:
        return f"ProviderSpec({self.name!r}, plugin={self.plugin!r})"


class PluginHost:
    """provender's plugins: pluggy's manager, kept private, plus what provender remembers
    about each plugin (`plugins`: name -> `PluginInfo`, shown by ``provender plugins``).

    The command line and the libraries use its methods (`providers`, `claim`, `call_each`,
    `implementers`, `has_implementations`, `register`); pluggy's own manager is built only
    when a hook must go through it, so ``provender --help`` never imports pluggy. `pm` and
    `hook` remain for tests and for code written against pluggy's API.

    Known as ``PluginManager`` before; that name stays an alias.
    """

    def __init__(self, disabled: list[str] | None = None) -> None:
        self.disabled = set(disabled or [])
        self.plugins: dict[str, PluginInfo] = {}
        self._providers: dict[str, ProviderSpec] | None = None
        self._lock = threading.RLock()
        self._registered: dict[str, object] = {}  # name -> plugin, in registration order
        self._spec_modules: list[types.ModuleType | type] = [hookspecs]  # the core's, then those plugins add
        self._pm: pluggy.PluginManager | None = None

    @property
    def pm(self) -> pluggy.PluginManager:
        """pluggy's manager, built on first use with every spec and plugin registered so far.

        ``check_pending()`` runs once everything is registered: an implementation of a hook
        nobody specifies is an error (provender reports it per plugin before that, see
        `_check_hooks`, so this is the safety net).
        """
        with self._lock:
            if self._pm is None:
                import pluggy

                pm = pluggy.PluginManager(PROJECT)
                for module in self._spec_modules:
                    pm.add_hookspecs(module)
                for name in self.disabled:
                    pm.set_blocked(name)
                for name, plugin in list(self._registered.items()):
                    try:
                        pm.register(plugin, name=name)
                    except Exception as exc:  # pluggy's own validation (e.g. an argument the spec lacks)
                        self._registered.pop(name)
                        self._fail(name, f"{type(exc).__name__}: {exc}")
                        logger.warning("plugin %r failed to register and was skipped: %s", name, exc)
                try:
                    pm.check_pending()
                except pluggy.PluginValidationError as exc:  # only a hook whose spec's package is absent
                    logger.debug("pluggy: %s", exc)
                self._pm = pm
            return self._pm

    @property
    def hook(self) -> Any:
        """pluggy's hook relay (``host.hook.provender_cache_evicted(entry=...)``)."""
        return self.pm.hook

    def add_hookspecs(self, module: types.ModuleType | type) -> None:
        """Add the hook specs in `module` (what a plugin's ``provender_addhooks`` calls)."""
        with self._lock:
            if module in self._spec_modules:
                return
            self._spec_modules.append(module)
            if self._pm is not None:
                self._pm.add_hookspecs(module)

    def load_entrypoints(self) -> None:
        """Import and register every installed plugin, one at a time.

        All are imported and their ``provender_addhooks`` called first, so a plugin may
        implement a hook that another plugin (loaded later) specifies.
        """
        loaded: list[tuple[str, object]] = []
        for ep in find_entry_points(PROJECT):
            info = PluginInfo(name=ep.name, module=ep.value, distribution=ep.distribution, version=ep.version)
            self.plugins[ep.name] = info
            if ep.name in self.disabled:
                info.status = "disabled"  # blocked in pluggy too, when `pm` is built
                continue
            try:
                plugin = ep.load()
                self._add_hooks_of(plugin)
                loaded.append((ep.name, plugin))
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self._fail(ep.name, str(exc) if isinstance(exc, PluginError) else f"{type(exc).__name__}: {exc}")
                logger.warning("plugin %r failed to load and was skipped: %s", ep.name, self.plugins[ep.name].error)
        for name, plugin in loaded:
            try:
                self.plugins[name].hooks = self._check_hooks(plugin, name)
                self._add(plugin, name)
            except Exception as exc:
                self._fail(name, str(exc) if isinstance(exc, PluginError) else f"{type(exc).__name__}: {exc}")
                logger.warning("plugin %r failed to load and was skipped: %s", name, self.plugins[name].error)

    def _fail(self, name: str, error: str) -> None:
        info = self.plugins.get(name)
        if info is not None:
            info.status = "failed"
            info.error = error

    def _add_hooks_of(self, plugin: object) -> None:
        """Call the plugin's ``provender_addhooks(pluginmanager)``, as pytest does ``pytest_addhooks``."""
        for impl in hook_functions(plugin):
            if impl.hook == "provender_addhooks":
                impl.function(*(dict(pluginmanager=self)[a] for a in impl.argnames))

    def _add(self, plugin: object, name: str) -> None:
        with self._lock:
            if name in self._registered or any(p is plugin for p in self._registered.values()):
                raise ValueError(f"plugin {name!r} is already registered")
            if self._pm is not None:
                self._pm.register(plugin, name=name)
            self._registered[name] = plugin
            self._providers = None

    def _check_hooks(self, plugin: object, name: str) -> list[str]:
        """The hooks `plugin` implements; PluginError for one that does not exist (a misspelled
        name would never be called) or that asks for an argument its hook does not pass.

        pluggy's ``check_pending()`` finds unknown hooks for the whole manager; this does it
        for one plugin, before it is registered, so only that plugin is reported as failed.
        A hook whose spec belongs to a provender package that is not installed (see
        `SPECS_ELSEWHERE`) is accepted: nothing calls it.
        """
        specs = spec_argnames(self._spec_modules)
        problems = []
        for impl in hook_functions(plugin):
            if impl.hook in specs:
                extra = [a for a in impl.argnames if a not in specs[impl.hook]]
                if extra:
                    problems.append(f"{impl.hook} asks for {', '.join(extra)}, which the hook does not pass")
            elif not impl.opts.get("optionalhook") and impl.hook not in SPECS_ELSEWHERE:
                import difflib

                close = difflib.get_close_matches(impl.hook, list(specs), n=1)
                problems.append(f"unknown hook {impl.hook}" + (f" (did you mean {close[0]}?)" if close else ""))
        if problems:
            raise PluginError(
                f"plugin {name!r}: {'; '.join(problems)}; provender's hooks are {', '.join(sorted(specs))}"
            )
        return sorted({impl.hook for impl in hook_functions(plugin)})

    def register(self, plugin: object, name: str, *, default: bool = False) -> None:
        """Register an in-process plugin (tests, applications embedding provender).

        Raises PluginError for a hook that does not exist (see `_check_hooks`). A `default`
        plugin is provender's own (the core commands): registering it again moves it to
        the end (called first), and ``provender plugins`` does not list it.
        """
        with self._lock:
            if default and name in self._registered:
                self.unregister(name)  # registered again: last, so that it is called first
            self._add_hooks_of(plugin)
            hooks = self._check_hooks(plugin, name)
            self._add(plugin, name)
            if not default:
                module = getattr(plugin, "__name__", repr(plugin))
                self.plugins[name] = PluginInfo(name=name, module=module, hooks=hooks)

    def unregister(self, name: str) -> None:
        """Forget the plugin registered as `name`."""
        with self._lock:
            plugin = self._registered.pop(name, None)
            if self._pm is not None and plugin is not None:
                self._pm.unregister(name=name)
            self.plugins.pop(name, None)
            self._providers = None

    def implementers(self, hook: str) -> list[str]:
        """Names of the registered plugins that implement `hook`, in calling order."""
        return [name for name, impl in self._impls(hook)]

    def has_implementations(self, hook: str) -> bool:
        """Whether any registered plugin implements `hook` (without loading pluggy)."""
        return bool(self._impls(hook))

    def _impls(self, hook: str) -> list[tuple[str, HookFunction]]:
        """(plugin name, implementation) of `hook`, in the order pluggy calls them (latest registered first)."""
        with self._lock:
            registered = list(self._registered.items())
        return [
            (name, impl)
            for name, plugin in reversed(registered)
            for impl in hook_functions(plugin)
            if impl.hook == hook
        ]

    def unknown_provider(self, name: str) -> UnknownProviderError:
        """The error for a provider name nobody registered, saying why when a plugin that
        could bring it is disabled (by which setting, from where) or failed to load."""
        available = list(self.providers())
        off = [p for p in self.plugins.values() if p.status == "disabled"]
        failed = [p for p in self.plugins.values() if p.status == "failed"]
        wanted = {name, f"provender-{name}", f"provender_{name}"}
        detail = ""
        if off:
            from provender._config_files import disabled_plugins_source

            match = [p.name for p in off if p.name in wanted or (p.distribution or "").replace("_", "-") in wanted]
            source = disabled_plugins_source()
            if match:
                detail = (
                    f"plugin {match[0]!r}, which brings it, is disabled by the setting plugins.disabled "
                    f"(from {source}); remove {match[0]!r} there to use it"
                )
            else:
                names = ", ".join(repr(p.name) for p in off)
                detail = f"disabled plugins: {names} (setting plugins.disabled, from {source})"
        elif failed:
            detail = f"plugin(s) {', '.join(repr(p.name) for p in failed)} failed to load (see `provender plugins`)"
        return UnknownProviderError(name, available, detail)

    def providers(self) -> dict[str, ProviderSpec]:
        """Provider name -> spec, collecting `provender_register_providers` once."""
        with self._lock:
            if self._providers is not None:
                return self._providers
            found: dict[str, ProviderSpec] = {}
            # pluggy calls the latest registered first; go oldest first so the first registration wins.
            for impl in reversed(self.pm.hook.provender_register_providers.get_hookimpls()):
                plugin_name = self.pm.get_name(impl.plugin) or "?"

                def register(
                    name: str, factory: ProviderFactory, *, description: str = "", _plugin: str = plugin_name
                ) -> None:
                    if not isinstance(name, str) or not name or ":" in name:
                        raise PluginError(f"plugin {_plugin!r} registered an invalid provider name {name!r}")
                    if name in found:
                        logger.warning(
                            "provider %r from plugin %r ignored: plugin %r registered it first",
                            name,
                            _plugin,
                            found[name].plugin,
                        )
                        return
                    found[name] = ProviderSpec(name, factory, _plugin, description)

                try:
                    call_impl(impl, register=register)
                except Exception as exc:
                    info = self.plugins.get(plugin_name)
                    if info is not None:
                        info.status = "failed"
                        info.error = f"provender_register_providers raised {type(exc).__name__}: {exc}"
                    logger.warning("plugin %r failed to register providers: %s", plugin_name, exc)
            for spec in found.values():
                if spec.plugin in self.plugins:
                    self.plugins[spec.plugin].providers.append(spec.name)
            self._providers = found
            return found

    def call_each(self, hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call every implementation of `hook` in pluggy's order (the latest registered first),
        each in isolation.

        Returns ``(plugin name, result)`` pairs. A plugin that raises is logged and left
        out; it never stops the others (unlike ``pm.hook.<name>(...)``, where one failing
        implementation aborts the call).
        """
        results: list[tuple[str, Any]] = []
        impls = self._impls(hook)
        if self._pm is None and all(impl.simple for _, impl in impls):  # no need to load pluggy
            for name, found in impls:
                try:
                    results.append((name, found.function(*(kwargs[a] for a in found.argnames))))
                except Exception as exc:
                    logger.warning("plugin %r failed in %s: %s", name, hook, exc)
            return results
        caller = getattr(self.pm.hook, hook, None)  # None: nobody specifies or implements it
        for impl in reversed(caller.get_hookimpls() if caller is not None else []):
            name = self.pm.get_name(impl.plugin) or "?"
            try:
                results.append((name, call_impl(impl, **kwargs)))
            except Exception as exc:
                logger.warning("plugin %r failed in %s: %s", name, hook, exc)
        return results

    def claim(self, entry: CacheEntry) -> list[str]:
        """Provider names that claim a cache entry, first registered first; never raises."""
        claims: list[str] = []
        for impl in reversed(self.pm.hook.provender_claim_model.get_hookimpls()):
            try:
                result = call_impl(impl, entry=entry)
            except Exception as exc:
                logger.warning("plugin %r failed to claim %s: %s", self.pm.get_name(impl.plugin), entry.name, exc)
                continue
            if isinstance(result, str) and result not in claims:
                claims.append(result)
        return claims


def call_impl(impl: Any, **kwargs: Any) -> Any:
    """Call one hook implementation with the arguments it asks for (as pluggy does)."""
    return impl.function(*(kwargs[name] for name in impl.argnames))


PluginManager = PluginHost
"""The name `PluginHost` had before; kept so code written against it keeps working."""

# Hooks whose spec lives in another provender package; implementing one while that package
# is not installed is not an error (pytest's ``optionalhook``), since nothing calls it.
SPECS_ELSEWHERE = {"provender_register_tools": "provender-agent"}

_manager: PluginHost | None = None
_manager_lock = threading.Lock()


def get_plugin_manager() -> PluginHost:
    """The process-wide plugin manager, loading entry points on first use."""
    global _manager
    with _manager_lock:
        if _manager is None:
            from provender._config_files import disabled_plugins_fast

            manager = PluginHost(disabled=disabled_plugins_fast())
            manager.load_entrypoints()
            _manager = manager
        return _manager


def plugin_manager_if_loaded() -> PluginHost | None:
    """The manager if something in this process already loaded plugins (no import cost otherwise)."""
    return _manager


def tell_plugins_evicted(entry: CacheEntry) -> None:
    """Call ``provender_cache_evicted(entry)`` on the loaded plugins (none loaded: nobody to tell).

    The cache calls this through `provender._wiring` (it does not import the plugin layer).
    """
    manager = _manager
    if manager is None:
        return
    try:
        manager.hook.provender_cache_evicted(entry=entry)
    except Exception as exc:
        logger.warning("a plugin failed on provender_cache_evicted(%s): %s", entry.name, exc)


def reset_plugin_manager() -> None:
    """Forget the loaded plugins (tests; re-reads entry points and settings on next use)."""
    global _manager
    with _manager_lock:
        _manager = None
