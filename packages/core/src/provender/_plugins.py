"""Plugin discovery and the process-wide plugin manager, over pluggy.

Entry points in the ``provender`` group are loaded one at a time: a plugin that
fails to import or to register is logged, remembered with its error (shown by
``provender plugins``) and skipped, so a broken plugin never takes the tool down.

Every hook is read and called by pluggy (its own reading of wrapped functions, classes,
callable instances and ``self``; ``check_pending``): `PluginHost` only adds the isolation
of one plugin from another and what ``provender plugins`` shows.
"""

from __future__ import annotations

import re
import threading
import types
from typing import TYPE_CHECKING, Any

import pluggy

from provender import hookspecs
from provender._entrypoints import PluginInfo, find_entry_points
from provender._hooks import hookimpl  # re-exported: `provender.hookimpl` is read from here
from provender._log import get_logger
from provender._plugin_specs import ProviderSpec, SectionSpec
from provender.errors import ConfigError, PluginError, UnknownProviderError

if TYPE_CHECKING:
    from provender._cache import CacheEntry
    from provender.hookspecs import ProviderFactory

logger = get_logger(__name__)

PROJECT = "provender"
HookimplMarker = pluggy.HookimplMarker
__all__ = [
    "HookimplMarker",
    "PluginError",
    "PluginHost",
    "PluginInfo",
    "PluginManager",
    "get_plugin_manager",
    "hookimpl",
]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


class PluginHost:
    """provender's plugins: pluggy's manager (`pm`) plus what provender remembers about each
    plugin (`plugins`: name -> `PluginInfo`, shown by ``provender plugins``).

    The command line and the libraries use its methods (`providers`, `claim`, `call_each`,
    `implementers`, `has_implementations`, `register`), each a thin layer over pluggy's
    own: a hook implementation is read by pluggy when it is registered and called by pluggy,
    so a ``functools.wraps``-decorated function, a method, a class or a callable instance
    behaves exactly as pluggy's documentation says. `pm` and `hook` are pluggy's.

    Known as ``PluginManager`` before; that name stays an alias.
    """

    def __init__(self, disabled: list[str] | None = None) -> None:
        self.disabled = set(disabled or [])
        self.plugins: dict[str, PluginInfo] = {}
        self._providers: dict[str, ProviderSpec] | None = None
        self._sections: dict[str, SectionSpec] | None = None
        self._section_conflict = ""
        self._lock = threading.RLock()
        self._spec_modules: list[types.ModuleType | type] = [hookspecs]  # the core's, then those plugins add
        self.pm = pluggy.PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        for name in self.disabled:
            self.pm.set_blocked(name)
        # historic: each plugin's ``provender_addhooks`` is called as it registers (pytest's
        # ``pytest_addhooks``), before its other hooks are checked
        self.pm.hook.provender_addhooks.call_historic(kwargs={"pluginmanager": self})

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
            self.pm.add_hookspecs(module)

    def load_entrypoints(self) -> None:
        """Import and register every installed plugin, one at a time.

        Plugins that implement ``provender_addhooks`` register first, so a plugin may
        implement a hook that another plugin (loaded later) specifies. Once all are in,
        ``check_pending()`` finds no hook that nobody specifies (each plugin that has one
        was reported and unregistered before, see `_check`).
        """
        loaded: list[tuple[str, object]] = []
        for ep in find_entry_points(PROJECT):
            info = PluginInfo(name=ep.name, module=ep.value, distribution=ep.distribution, version=ep.version)
            self.plugins[ep.name] = info
            if ep.name in self.disabled:
                info.status = "disabled"  # and blocked in pluggy
                continue
            try:
                loaded.append((ep.name, ep.load()))
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt):
                    raise
                self._fail(ep.name, exc)
        adds_hooks = [(n, p) for n, p in loaded if self.pm.parse_hookimpl_opts(p, "provender_addhooks") is not None]
        for name, plugin in adds_hooks + [item for item in loaded if item not in adds_hooks]:
            try:
                self._register(plugin, name)
            except Exception as exc:
                self._fail(name, exc)
        for name, plugin in loaded:
            if self.pm.is_registered(plugin):
                try:
                    self.plugins[name].hooks = self._check(plugin, name)
                except PluginError as exc:
                    self.pm.unregister(plugin)
                    self._fail(name, exc)
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:  # only a hook whose spec's package is absent
            logger.debug("pluggy: %s", exc)

    def _fail(self, name: str, exc: BaseException | str) -> None:
        error = (
            exc
            if isinstance(exc, str)
            else str(exc)
            if isinstance(exc, PluginError)
            else f"{type(exc).__name__}: {_one_line(exc)}"
        )
        info = self.plugins.get(name)
        if info is not None:
            info.status = "failed"
            info.error = error
        logger.warning("plugin %r failed to load and was skipped: %s", name, error)

    def _register(self, plugin: object, name: str) -> None:
        """``pm.register``, with its validation errors as one `PluginError` line and nothing left half-registered."""
        with self._lock:
            if self.pm.has_plugin(name) or self.pm.is_registered(plugin):
                raise PluginError(f"plugin {name!r} is already registered")
            try:
                self.pm.register(plugin, name=name)
            except Exception as exc:
                if self.pm.has_plugin(name):
                    self.pm.unregister(name=name)
                if isinstance(exc, pluggy.PluginValidationError):
                    raise PluginError(self._explain(plugin, name) or f"plugin {name!r}: {_one_line(exc)}") from None
                raise
            self._providers = self._sections = None

    def _impls_of(self, plugin: object, name: str) -> list[tuple[str, pluggy.HookImpl]]:
        """(hook name, implementation) as pluggy reads them in `plugin` (its own parsing; not registered)."""
        found = []
        for attr in dir(plugin):
            opts = self.pm.parse_hookimpl_opts(plugin, attr)
            if opts is not None:
                found.append((opts.get("specname") or attr, pluggy.HookImpl(plugin, name, getattr(plugin, attr), opts)))
        return found

    def _explain(self, plugin: object, name: str) -> str | None:
        """One line for what pluggy refused (an argument the hook does not pass), if that was it."""
        problems = []
        for hookname, impl in self._impls_of(plugin, name):
            caller = getattr(self.pm.hook, hookname, None)
            spec = getattr(caller, "spec", None)
            if spec is not None:
                extra = [a for a in impl.argnames if a not in spec.argnames]
                if extra:
                    problems.append(f"{hookname} asks for {', '.join(extra)}, which the hook does not pass")
        return f"plugin {name!r}: {'; '.join(problems)}" if problems else None

    def _check(self, plugin: object, name: str) -> list[str]:
        """The hooks registered `plugin` implements; PluginError for one nobody specifies (a
        misspelled name would never be called).

        pluggy's ``check_pending()`` finds such hooks for the whole manager; this does it
        for one plugin, so only that plugin is reported as failed. A hook whose spec belongs
        to a provender package that is not installed (see `SPECS_ELSEWHERE`) is accepted, as
        is one marked ``optionalhook``: nothing calls it.
        """
        callers = self.pm.get_hookcallers(plugin) or []
        problems = []
        for caller in callers:
            if caller.spec is not None or caller.name in SPECS_ELSEWHERE:
                continue
            if all(impl.optionalhook for impl in caller.get_hookimpls() if impl.plugin is plugin):
                continue
            import difflib

            specs = [c.name for c in self._callers() if c.spec is not None]
            close = difflib.get_close_matches(caller.name, specs, n=1)
            problems.append(f"unknown hook {caller.name}" + (f" (did you mean {close[0]}?)" if close else ""))
        if problems:
            specs = sorted(c.name for c in self._callers() if c.spec is not None)
            raise PluginError(f"plugin {name!r}: {'; '.join(problems)}; provender's hooks are {', '.join(specs)}")
        return sorted(caller.name for caller in callers)

    def _callers(self) -> list[pluggy.HookCaller]:
        return [c for c in vars(self.pm.hook).values() if isinstance(c, pluggy.HookCaller)]

    def register(self, plugin: object, name: str, *, default: bool = False) -> None:
        """Register an in-process plugin (tests, applications embedding provender).

        Raises PluginError for a hook that does not exist or that asks for an argument its
        hook does not pass; nothing is left registered then. A `default` plugin is
        provender's own (the core commands): registering it again moves it to the end
        (called first), and ``provender plugins`` does not list it.
        """
        with self._lock:
            if default and self.pm.has_plugin(name):
                self.unregister(name)  # registered again: last, so that it is called first
            self._register(plugin, name)
            try:
                hooks = self._check(plugin, name)
            except PluginError:
                self.pm.unregister(plugin)
                raise
            if not default:
                module = getattr(plugin, "__name__", repr(plugin))
                self.plugins[name] = PluginInfo(name=name, module=module, hooks=hooks)

    def unregister(self, name: str) -> None:
        """Forget the plugin registered as `name`."""
        with self._lock:
            if self.pm.has_plugin(name):
                self.pm.unregister(name=name)
            self.plugins.pop(name, None)
            self._providers = self._sections = None

    def _hookimpls(self, hook: str) -> list[pluggy.HookImpl]:
        """pluggy's implementations of `hook` in the order pluggy calls them (latest registered first)."""
        caller = getattr(self.pm.hook, hook, None)  # None: nobody specifies or implements it
        return list(reversed(caller.get_hookimpls())) if isinstance(caller, pluggy.HookCaller) else []

    def implementers(self, hook: str) -> list[str]:
        """Names of the registered plugins that implement `hook`, in calling order."""
        return [self.pm.get_name(impl.plugin) or "?" for impl in self._hookimpls(hook)]

    def has_implementations(self, hook: str) -> bool:
        """Whether any registered plugin implements `hook`."""
        return bool(self._hookimpls(hook))

    def _call_one(self, hook: str, impl: pluggy.HookImpl, kwargs: dict[str, Any]) -> Any:
        """Call `impl` alone, with the hook's wrappers, as pluggy calls a hook (the same executor:
        ``pm.hook.<hook>(...)`` runs ``pm._hookexec`` over all the implementations at once)."""
        caller = self.pm.hook.__dict__[hook]
        spec = caller.spec
        wrappers = [i for i in caller.get_hookimpls() if i.wrapper or i.hookwrapper]
        firstresult = bool(spec is not None and spec.opts.get("firstresult"))
        result: Any = self.pm._hookexec(hook, [impl, *wrappers], kwargs, firstresult)
        return result if firstresult else (result[0] if result else None)

    def unknown_provider(self, name: str, model: str | None = None) -> UnknownProviderError:
        """The error for a provider name nobody registered, saying why when a plugin that
        could bring it is disabled (by which setting, from where) or failed to load; with
        `model`, the whole name it came from, that no cached model has that name either."""
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
        if model is not None:
            detail = "; ".join(filter(None, [f"nor is {model!r} a cached model's name", detail]))
        return UnknownProviderError(name, available, detail)

    def providers(self) -> dict[str, ProviderSpec]:
        """Provider name -> spec, collecting `provender_register_providers` once."""
        with self._lock:
            if self._providers is not None:
                return self._providers
            found: dict[str, ProviderSpec] = {}
            # pluggy calls the latest registered first; go oldest first so the first registration wins.
            for impl in reversed(self._hookimpls("provender_register_providers")):
                if impl.wrapper or impl.hookwrapper:
                    continue
                plugin_name = self.pm.get_name(impl.plugin) or "?"

                def register(
                    name: str,
                    factory: ProviderFactory,
                    *,
                    description: str = "",
                    priority: int = 0,
                    _plugin: str = plugin_name,
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
                    if not isinstance(priority, int) or isinstance(priority, bool):
                        raise PluginError(
                            f"plugin {_plugin!r} gave provider {name!r} a priority that is not an integer"
                        )
                    found[name] = ProviderSpec(name, factory, _plugin, description, priority)

                try:
                    self._call_one("provender_register_providers", impl, {"register": register})
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

    def settings_sections(self) -> dict[str, SectionSpec]:
        """Section name -> spec, collecting ``provender_register_settings`` once.

        Raises ConfigError, naming both, for a section registered by two plugins or named
        like a core section; a plugin whose hook raises is marked failed and skipped.
        """
        with self._lock:
            if self._sections is None:
                self._sections, self._section_conflict = self._collect_sections()
            if self._section_conflict:
                raise ConfigError(self._section_conflict)
            return self._sections

    def _collect_sections(self) -> tuple[dict[str, SectionSpec], str]:
        from pydantic import BaseModel

        from provender._config_files import CORE_SECTIONS

        found: dict[str, SectionSpec] = {}
        conflicts: list[str] = []
        for impl in reversed(self._hookimpls("provender_register_settings")):  # the first registered first
            if impl.wrapper or impl.hookwrapper:
                continue
            plugin_name = self.pm.get_name(impl.plugin) or "?"

            def register(name: str, model: type[BaseModel], _plugin: str = plugin_name) -> None:
                if not isinstance(name, str) or not _SECTION_NAME.fullmatch(name) or "__" in name:
                    raise PluginError(
                        f"plugin {_plugin!r} registered an invalid settings section name {name!r} "
                        "(lowercase letters, digits and single underscores, starting with a letter)"
                    )
                if not (isinstance(model, type) and issubclass(model, BaseModel)):
                    raise PluginError(f"plugin {_plugin!r}: settings section {name!r} is not a pydantic model")
                if name in CORE_SECTIONS or name.startswith("model_") or name == "section":
                    conflicts.append(
                        f"plugin {_plugin!r} registers the settings section {name!r}, a name of provender's "
                        "own (core) settings; the plugin must choose another"
                    )
                elif name in found:
                    conflicts.append(
                        f"settings section {name!r} is registered by two plugins, {found[name].plugin!r} and "
                        f"{_plugin!r}; disable one of them (plugins.disabled)"
                    )
                else:
                    found[name] = SectionSpec(name, model, _plugin)

            try:
                self._call_one("provender_register_settings", impl, {"register": register})
            except Exception as exc:
                self._fail(plugin_name, f"provender_register_settings raised {type(exc).__name__}: {exc}")
        return found, "; ".join(conflicts)

    def call_each(self, hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call every implementation of `hook` in pluggy's order (the latest registered first),
        each in isolation, through pluggy (a plugin's wrappers of the hook wrap each call).

        Returns ``(plugin name, result)`` pairs. A plugin that raises is logged and left
        out; it never stops the others (unlike ``pm.hook.<name>(...)``, where one failing
        implementation aborts the call).
        """
        return self._isolated(hook, kwargs, self._hookimpls(hook))

    def _isolated(self, hook: str, kwargs: dict[str, Any], impls: list[pluggy.HookImpl]) -> list[tuple[str, Any]]:
        results: list[tuple[str, Any]] = []
        for impl in impls:
            if impl.wrapper or impl.hookwrapper:
                continue
            name = self.pm.get_name(impl.plugin) or "?"
            try:
                results.append((name, self._call_one(hook, impl, kwargs)))
            except Exception as exc:
                logger.warning("plugin %r failed in %s: %s", name, hook, exc)
        return results

    def claim(self, entry: CacheEntry) -> list[str]:
        """Provider names that claim a cache entry, first registered first; never raises."""
        claims: list[str] = []
        hook = "provender_claim_model"
        for _, result in self._isolated(hook, {"entry": entry}, list(reversed(self._hookimpls(hook)))):
            if isinstance(result, str) and result not in claims:
                claims.append(result)
        return claims


PluginManager = PluginHost
"""The name `PluginHost` had before; kept so code written against it keeps working."""

# Hooks whose spec lives in another provender package; implementing one while that package
# is not installed is not an error (pytest's ``optionalhook``), since nothing calls it.
SPECS_ELSEWHERE = {"provender_register_tools": "provender-agent"}

_SECTION_NAME = re.compile(r"[a-z][a-z0-9_]*")

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


def provider_priorities() -> dict[str, int]:
    """Provider name -> the priority it declared when it registered (loads the plugins if needed)."""
    return {name: spec.priority for name, spec in get_plugin_manager().providers().items()}


def tell_plugins_evicted(entry: CacheEntry) -> None:
    """Call ``provender_cache_evicted(entry)`` on the loaded plugins (none loaded: nobody to tell).

    The cache calls this through `provender._wiring` (it does not import the plugin layer).
    """
    manager = _manager
    if manager is None:
        return
    manager.call_each("provender_cache_evicted", entry=entry)  # one plugin failing never stops the others


def reset_plugin_manager() -> None:
    """Forget the loaded plugins (tests; re-reads entry points and settings on next use)."""
    global _manager
    with _manager_lock:
        _manager = None
