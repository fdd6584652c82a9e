"""Hook markers and hook discovery without pluggy.

`provender --help` imports every plugin module, and every plugin module imports
``provender.hookimpl``; pluggy costs about as much to import as click. So the marker
and the reading of a plugin's hooks live here, pluggy-free and compatible with it
(the same ``provender_impl`` / ``provender_spec`` options pluggy reads); pluggy itself
loads only when a hook is called through it.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any, TypeVar, overload

from provender import hookspecs

PROJECT = "provender"
IMPL_ATTR = PROJECT + "_impl"
_F = TypeVar("_F", bound=Callable[..., Any])


class HookimplMarker:
    """``@provender.hookimpl``: marks a hook implementation exactly as ``pluggy.HookimplMarker("provender")``
    does (the same ``provender_impl`` options on the function), without importing pluggy.

    Importing pluggy costs about as much as importing click, and every plugin module
    imports this marker, `provender --help` included; pluggy loads only when a hook
    is called through it.
    """

    def __init__(self, project_name: str) -> None:
        self.project_name = project_name

    @overload
    def __call__(self, function: _F) -> _F: ...

    @overload
    def __call__(
        self,
        function: None = None,
        hookwrapper: bool = False,
        optionalhook: bool = False,
        tryfirst: bool = False,
        trylast: bool = False,
        specname: str | None = None,
        wrapper: bool = False,
    ) -> Callable[[_F], _F]: ...

    def __call__(self, function: _F | None = None, *args: Any, **kwargs: Any) -> _F | Callable[[_F], _F]:
        # the options of the overload above, positional in its order or by name
        if len(args) > len(_IMPL_OPTIONS):
            raise TypeError(f"hookimpl() takes at most {len(_IMPL_OPTIONS) + 1} positional arguments")
        unknown = sorted(set(kwargs) - set(_IMPL_OPTIONS))
        if unknown:
            raise TypeError(f"hookimpl() got an unexpected keyword argument {unknown[0]!r}")
        given = {**dict(zip(_IMPL_OPTIONS, args, strict=False)), **kwargs}
        opts = {name: given.get(name, default) for name, default in _IMPL_DEFAULTS.items()}

        def mark(func: _F) -> _F:
            setattr(func, self.project_name + "_impl", dict(opts))
            return func

        return mark if function is None else mark(function)


_IMPL_OPTIONS = ("hookwrapper", "optionalhook", "tryfirst", "trylast", "specname", "wrapper")
_IMPL_DEFAULTS: dict[str, Any] = {  # as pluggy stores them on the function
    "wrapper": False,
    "hookwrapper": False,
    "optionalhook": False,
    "tryfirst": False,
    "trylast": False,
    "specname": None,
}


hookimpl = HookimplMarker(PROJECT)


class HookFunction:
    """One hook implementation found in a plugin: the hook it implements, the callable, its options.

    (A plain class, not a dataclass: creating a dataclass costs a millisecond at import.)
    """

    __slots__ = ("function", "hook", "opts")

    def __init__(self, hook: str, function: Callable[..., Any], opts: dict[str, Any]) -> None:
        self.hook = hook
        self.function = function
        self.opts = opts

    @property
    def argnames(self) -> tuple[str, ...]:
        """The positional parameters it asks for, as pluggy reads them (no defaults, no self)."""
        func = getattr(self.function, "__func__", self.function)
        code = getattr(func, "__code__", None)
        if code is None:
            return ()
        names = code.co_varnames[: code.co_argcount]
        defaults = getattr(func, "__defaults__", None) or ()
        if defaults:
            names = names[: -len(defaults)]
        if hasattr(self.function, "__self__") and names:
            names = names[1:]
        return tuple(names)

    @property
    def simple(self) -> bool:
        """Callable without pluggy: a plain function or method, no ordering or wrapper options."""
        return hasattr(self.function, "__code__") and not any(
            self.opts.get(k) for k in ("wrapper", "hookwrapper", "tryfirst", "trylast")
        )


def hook_functions(plugin: object) -> list[HookFunction]:
    """The functions of `plugin` marked ``@provender.hookimpl``, read without running descriptors."""
    if isinstance(plugin, types.ModuleType):
        namespace: dict[str, Any] = dict(vars(plugin))
    else:
        namespace = {}
        for klass in reversed(type(plugin).__mro__):
            namespace.update(vars(klass))
        namespace.update(getattr(plugin, "__dict__", {}))
    found = []
    for attr, value in namespace.items():
        try:  # any object can sit in a module; one whose attributes raise is not a hook
            opts = getattr(value, IMPL_ATTR, None)
            if opts is None:
                opts = getattr(getattr(value, "__func__", None), IMPL_ATTR, None)
        except Exception:
            continue
        if not isinstance(opts, dict):
            continue
        if not isinstance(plugin, types.ModuleType):
            try:
                value = getattr(plugin, attr)  # bind methods
            except Exception:
                continue
        if callable(value):
            found.append(HookFunction(opts.get("specname") or attr, value, opts))
    return found


def spec_argnames(modules: list[types.ModuleType | type] | None = None) -> dict[str, tuple[str, ...]]:
    """Each hook specified in `modules` (default: the core's `provender.hookspecs`) -> the
    arguments it passes."""
    specs = {}
    for module in modules if modules is not None else [hookspecs]:
        for name in dir(module):
            func = getattr(module, name)
            if name.startswith(PROJECT + "_") and isinstance(getattr(func, PROJECT + "_spec", None), dict):
                specs[name] = func.__code__.co_varnames[: func.__code__.co_argcount]
    return specs
