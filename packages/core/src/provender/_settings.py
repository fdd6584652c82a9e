"""The one settings object: defaults < TOML file < ``PROVENDER_*`` environment < arguments.

The core's sections are fields of `Settings`; a plugin's (``[server]``, ``[llamacpp]``,
``[acme]``...) are registered with ``provender_register_settings(register)`` and become
fields of a subclass built for the registered set (`settings_class`), read from the same
sources with the same precedence and errors. Building the settings never loads the
plugins: sections of plugins already loaded in this process are included, and a section
read by attribute (``load_settings().acme``) loads them if needed; ``section(name, Model)``
reads one with a model given, loading nothing.
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path
from typing import Annotated, Any, TypeVar

import platformdirs
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError, create_model
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from provender._config_files import (
    CORE_SECTIONS,
    ENV_NESTED_DELIMITER,
    ENV_PREFIX,
    check_directory,
    config_file_path,
    find_env,
    locate_key,
    read_config_file,
    split_names,
)
from provender._sizes import format_duration, format_size_exact, parse_duration, parse_limit, parse_size
from provender.errors import ConfigError

ByteSize = Annotated[int, BeforeValidator(parse_size)]
SizeLimit = Annotated[int, BeforeValidator(parse_limit)]
Directory = Annotated[Path, BeforeValidator(check_directory)]
Seconds = Annotated[float, BeforeValidator(parse_duration)]
NameList = Annotated[list[str], NoDecode, BeforeValidator(split_names)]

DEFAULT_MAX_SIZE = 50 * 10**9
DEFAULT_PROMPT_CACHE_MAX_SIZE = 5 * 10**9


def default_cache_dir() -> Path:
    """``platformdirs.user_cache_dir("provender")`` (Linux ``~/.cache/provender``)."""
    return Path(platformdirs.user_cache_dir("provender", appauthor=False))


def default_data_dir() -> Path:
    """Where libraries keep state that is not a cache (collections, agent sessions)."""
    return Path(platformdirs.user_data_dir("provender", appauthor=False))


class Section(BaseModel):
    """A base for a settings section: unknown keys are errors (a typo never passes silently)
    and defaults are validated. A plugin's section may use it or any pydantic model."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


_Section = Section
_M = TypeVar("_M", bound=BaseModel)


class CacheSettings(_Section):
    """``[cache]``: the shared disk cache of models."""

    dir: Directory = Field(default_factory=default_cache_dir, description="Root of the shared model cache.")
    max_size: SizeLimit = Field(DEFAULT_MAX_SIZE, description="Size limit; LRU entries are evicted above it.")
    prompt_cache_max_size: ByteSize = Field(
        DEFAULT_PROMPT_CACHE_MAX_SIZE,
        description="Budget of the saved prompt caches inside max_size (evicted before any model); 0 = none saved.",
    )
    prompt_cache_auto_tokens: int = Field(
        0,
        ge=0,
        description="Save the prompt cache of every prompt of at least this many tokens to the disk cache; 0 = off "
        "(`provender cache prompt` saves one explicitly).",
    )


class MemorySettings(_Section):
    """``[memory]``: models loaded in a process's memory."""

    max_models: int = Field(2, ge=1, description="Loaded models kept per process (LRU).")
    keep_alive: Seconds = Field(
        300.0, description='Idle time before a loaded model is unloaded (at most 3650d); -1 or "forever" = never.'
    )
    prompt_cache_bytes: ByteSize = Field(
        1 << 30,
        description="Prompt caches (KV state) kept per loaded model so a conversation's next turn reads only "
        "its new tokens (LRU); 0 = off.",
    )


class PluginSettings(_Section):
    """``[plugins]``: which installed plugins load."""

    disabled: NameList = Field(default_factory=list, description="Plugin (entry point) names not to load.")


class DataSettings(_Section):
    """``[data]``: state that is not a cache (embedding collections, agent sessions)."""

    dir: Directory = Field(default_factory=default_data_dir, description="Root of provender's data.")


def _check_remote_url(value: Any) -> Any:
    """Empty (no tier), or a URL whose scheme fsspec serves (s3://, gs://, az://, file://...)."""
    if isinstance(value, str) and value.strip():
        from provender._cache._remote import SCHEMES

        scheme, sep, rest = value.strip().partition("://")
        if not sep or not rest or scheme.lower() not in SCHEMES:
            raise ValueError(
                "not a URL of a supported store (s3://bucket/prefix, gs://..., az://..., file:///mnt/shared; "
                f"schemes: {', '.join(SCHEMES)})"
            )
        return value.strip()
    return value


class RemoteSettings(_Section):
    """``[remote]``: a shared remote tier of the cache on an object store (needs ``provender[remote]``)."""

    url: Annotated[str, BeforeValidator(_check_remote_url)] = Field(
        "", description="fsspec URL of the shared tier (s3://bucket/prefix, file:///mnt/shared); empty: none."
    )
    read_only: bool = Field(False, description="Read from the tier, never write to it (no write-through, no push).")
    endpoint_url: str = Field(
        "", description="S3-compatible endpoint (MinIO, R2, Ceph...); empty: AWS_ENDPOINT_URL or AWS itself."
    )
    timeout: Seconds = Field(30.0, gt=0, description="Seconds each request to the tier may take before it is given up.")


class ProvidersSettings(_Section):
    """``[providers]``: which provider serves a model that several claim."""

    prefer: NameList = Field(
        default_factory=list,
        description="Providers in order of preference when several claim a model (`provider:model` always wins); "
        "those it does not list follow by the priority each declares (the fastest on this platform first).",
    )


class Settings(BaseSettings):
    """All of provender's settings. Build it with `load_settings()` for friendly errors.

    The core's sections are fields; a plugin's registered section is a field of the
    subclass `load_settings` builds when that plugin is loaded, and is read by attribute
    either way (``settings.server``: loads the plugins if they are not loaded yet) or,
    typed, with `section`.
    """

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="ignore",  # sections no field names are checked by `check_sections`, with their plugins in mind
        validate_default=True,
    )

    cache: CacheSettings = Field(default_factory=lambda: CacheSettings())
    memory: MemorySettings = Field(default_factory=lambda: MemorySettings())
    plugins: PluginSettings = Field(default_factory=lambda: PluginSettings())
    data: DataSettings = Field(default_factory=lambda: DataSettings())
    providers: ProvidersSettings = Field(default_factory=lambda: ProvidersSettings())
    remote: RemoteSettings = Field(default_factory=lambda: RemoteSettings())

    _overrides: dict[str, Any] = PrivateAttr(default_factory=dict)
    _more: dict[str, BaseModel] = PrivateAttr(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = config_file_path()
        read_config_file(path)  # raises a clear ConfigError for a malformed file
        return init_settings, env_settings, _TomlSource(settings_cls, toml_file=path)

    def section(self, name: str, model: type[_M]) -> _M:
        """The section `name`, validated as `model` (typed: ``section("acme", AcmeSettings).greeting``).

        Read from the same sources with the same precedence and errors as every section,
        without loading the plugins (the model is given). TypeError if the section is
        known as another model (a core section, or another plugin's).
        """
        value = self.__dict__.get(name) if name in type(self).model_fields else self._more.get(name)
        if value is None:
            value = getattr(_build(settings_class({name: model}), self._overrides), name)
            self._more[name] = value
        if not isinstance(value, model):
            raise TypeError(f"settings section {name!r} is a {type(value).__name__}, not a {model.__name__}")
        return value

    def __getattr__(self, name: str) -> Any:
        """A plugin's section not built into this object: the plugins are loaded to find its model."""
        if name.startswith("_"):
            return super().__getattr__(name)  # type: ignore[misc]  # pydantic's private attributes
        sections = plugin_sections(load=True) or {}
        if name in sections:
            return self.section(name, sections[name][0])
        known = ", ".join([*type(self).model_fields, *(n for n in sections if n not in type(self).model_fields)])
        raise AttributeError(f"no settings section {name!r} (known: {known}); is the plugin that owns it installed?")


class _TomlSource(TomlConfigSettingsSource):
    """pydantic-settings' TOML source, reading the file as `read_config_file` does (a BOM is fine)."""

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        return read_config_file(Path(file_path))


def plugin_sections(load: bool = False) -> dict[str, tuple[type[BaseModel], str]] | None:
    """Section name -> (model, plugin) of the plugins' registered sections; None when the plugins
    are not loaded in this process and `load` is false (building the settings never loads them)."""
    if not load and "provender._plugins" not in sys.modules:  # nothing loaded plugins (nor pluggy) here
        return None
    from provender._plugins import get_plugin_manager, plugin_manager_if_loaded

    host = get_plugin_manager() if load else plugin_manager_if_loaded()
    if host is None:
        return None
    return {name: (spec.model, spec.plugin) for name, spec in host.settings_sections().items()}


def settings_class(sections: dict[str, type[BaseModel]]) -> type[Settings]:
    """`Settings` with the plugin sections `sections` as fields (one class per set, kept)."""
    return _settings_class(tuple(sorted(sections.items())))


@functools.lru_cache(maxsize=64)
def _settings_class(sections: tuple[tuple[str, type[BaseModel]], ...]) -> type[Settings]:
    if not sections:
        return Settings
    fields: dict[str, Any] = {name: (model, Field(default_factory=model)) for name, model in sections}
    return create_model("Settings", __base__=Settings, __module__=__name__, **fields)


def _leaf_settings(model: type[BaseModel] = Settings) -> list[str]:
    """``section.key`` of every setting of `model`'s sections."""
    names: list[str] = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            names.extend(f"{name}.{key}" for key in ann.model_fields)
    return names


def setting_source(setting: str, init: dict[str, Any] | None = None) -> str:
    """Where the effective value of `setting` (``"cache.max_size"``, or a section) comes from.

    One of ``"argument"``, ``"env:PROVENDER_..."``, ``"file:<path>"`` or ``"default"``.
    """
    section, _, key = setting.partition(".")
    if init and section in init:
        given = init[section]
        if not key or not isinstance(given, dict) or key in given:
            return "argument"
    found = find_env(setting) if key else None
    found = found or find_env(section)
    if found:
        return f"env:{found[0]}"
    path = config_file_path()
    data = read_config_file(path)
    if (not key and section in data) or (isinstance(data.get(section), dict) and key in data[section]):
        return f"file:{path}"
    return "default"


def _describe_source(source: str, setting: str = "") -> str:
    kind, _, where = source.partition(":")
    if kind == "env":
        return f"environment variable {where}"
    if kind == "file":
        section, _, key = setting.partition(".")
        line = locate_key(Path(where), section, key or None) if section else None
        return f"config file {where}" + (f", line {line}" if line else "")
    return source


def _known(loc: list[str], cls: type[BaseModel] = Settings) -> str:
    model: type[BaseModel] = cls
    for part in loc[:-1]:
        field = model.model_fields.get(part)
        ann = field.annotation if field is not None else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return ""
        model = ann
    return ", ".join(model.model_fields)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning any validation problem into one clear `ConfigError`.

    ``overrides`` are init arguments (highest precedence), e.g. ``cache={"max_size": "1GB"}``.
    The error names the setting, its source (the environment variable, or the config file
    and line) and the value. The sections of the plugins loaded in this process are part
    of it (an override of a plugin's section loads the plugins); a section nobody
    registers is reported by `check_sections`.
    """
    registered = plugin_sections(load=any(name not in CORE_SECTIONS for name in overrides))
    cls = settings_class({name: model for name, (model, _) in (registered or {}).items()})
    settings = _build(cls, overrides)
    from provender._settings_check import check_sections

    check_sections(cls, overrides, complete=registered is not None)
    return settings


def _build(cls: type[Settings], overrides: dict[str, Any]) -> Settings:
    try:
        settings = cls(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(part) for part in err["loc"]][:2]
        setting = ".".join(loc)
        source = setting_source(setting, overrides)
        where = _describe_source(source, setting)
        if err["type"] == "extra_forbidden":
            kind = "setting section" if len(loc) == 1 else "setting"
            message = f"unknown {kind} {setting!r} in {where} (known: {_known(loc, cls)})"
        else:
            reason = str(err.get("ctx", {}).get("error", "")) or err["msg"]
            message = f"invalid setting {setting} from {where}: {reason} (got {err.get('input')!r})"
        raise ConfigError(message, setting=setting, source=source, value=err.get("input")) from None
    except SettingsError as exc:  # pydantic-settings' own, e.g. a section variable that is not JSON
        field = re.search(r'field "(\w+)" from source "EnvSettingsSource"', str(exc))
        found = find_env(field.group(1)) if field else None
        if field and found:
            raise ConfigError(
                f"invalid setting section {field.group(1)} from environment variable {found[0]}: "
                f"expected a JSON object of its settings (got {found[1]!r})",
                setting=field.group(1),
                source=f"env:{found[0]}",
                value=found[1],
            ) from None
        raise ConfigError(f"invalid settings: {exc}") from None
    settings._overrides = dict(overrides)
    return settings


def cache_defaults() -> tuple[Path, int]:
    """``(cache.dir, cache.max_size)`` from the settings: what ``CacheManager()`` uses when not
    given them (registered with the cache by ``provender/__init__.py``, see `provender._wiring`)."""
    settings = load_settings()
    return settings.cache.dir, settings.cache.max_size


def prompt_defaults() -> int:
    """``cache.prompt_cache_max_size``: the prompt caches' budget ``CacheManager()`` uses (`provender._wiring`)."""
    return load_settings().cache.prompt_cache_max_size


def remote_defaults() -> dict[str, Any] | None:
    """The ``[remote]`` settings as ``CacheManager()`` takes them (see `provender._wiring`); None without a URL."""
    remote = load_settings().remote
    if not remote.url:
        return None
    return {
        "url": remote.url,
        "read_only": remote.read_only,
        "endpoint_url": remote.endpoint_url,
        "timeout": remote.timeout,
    }


def display_value(setting: str, value: Any, cls: type[BaseModel] = Settings) -> str:
    """A setting's value as a person would write it: ``50 GB``, ``5m``, ``a, b``, ``(none)``."""
    section, _, key = setting.partition(".")
    section_field = cls.model_fields.get(section)
    model = section_field.annotation if section_field is not None else None
    field = model.model_fields.get(key) if isinstance(model, type) and issubclass(model, BaseModel) else None
    parsers = {getattr(m, "func", None) for m in (field.metadata if field is not None else [])}
    if isinstance(value, int) and not isinstance(value, bool) and parsers & {parse_size, parse_limit}:
        return format_size_exact(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and parse_duration in parsers:
        return format_duration(value)
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "(none)"
    if value is None or value == "":
        return "(none)"
    if isinstance(value, dict):
        import json

        return json.dumps(value)
    return str(value)


def effective_settings(settings: Settings, overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every leaf setting with its value, env var name, source and the plugin owning its section
    (None: the core's) -- what `provender config` shows."""
    from provender._config_files import env_var_name

    cls = type(settings)
    registered = plugin_sections()  # None: the plugins are not loaded in this process
    owners = {name: plugin for name, (_, plugin) in (registered or {}).items()}
    rows = []
    dumped = settings.model_dump(mode="json")
    for name in _leaf_settings(cls):
        section, key = name.split(".", 1)
        display = display_value(name, dumped[section][key], cls)
        if name == "providers.prefer" and not dumped[section][key] and registered is not None:
            from provender._plugins import provider_priorities

            priority = provider_priorities()
            order = sorted(priority, key=lambda provider: -priority[provider])  # stable: registration order
            display = f"(none: by priority, {', '.join(order)})" if order else display
        rows.append(
            {
                "setting": name,
                "value": dumped[section][key],
                "display": display,
                "env": env_var_name(name),
                "source": setting_source(name, overrides if overrides is not None else settings._overrides),
                "plugin": owners.get(section),
            }
        )
    return rows
