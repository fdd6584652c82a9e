"""What the plugin layer records of a plugin's registrations: `ProviderSpec` (a provider) and
`SectionSpec` (a settings section)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from provender.hookspecs import ProviderFactory


class ProviderSpec:
    """A registered provider: its name, factory, the plugin that brought it, a description and
    its priority (higher: preferred when several claim a model and ``providers.prefer`` does not say)."""

    __slots__ = ("description", "factory", "name", "plugin", "priority")

    def __init__(
        self, name: str, factory: ProviderFactory, plugin: str, description: str = "", priority: int = 0
    ) -> None:
        self.name = name
        self.factory = factory
        self.plugin = plugin
        self.description = description
        self.priority = priority

    def __repr__(self) -> str:
        return f"ProviderSpec({self.name!r}, plugin={self.plugin!r})"


class SectionSpec:
    """A registered settings section: its name, pydantic model and the plugin that brought it."""

    __slots__ = ("model", "name", "plugin")

    def __init__(self, name: str, model: type[Any], plugin: str) -> None:
        self.name = name
        self.model = model
        self.plugin = plugin

    def __repr__(self) -> str:
        return f"SectionSpec({self.name!r}, {self.model.__name__}, plugin={self.plugin!r})"
