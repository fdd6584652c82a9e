"""The one settings object: defaults < TOML file < ``PROVENDER_*`` environment < arguments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import platformdirs
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from provender._config_files import (
    ENV_NESTED_DELIMITER,
    ENV_PREFIX,
    config_file_path,
    find_env,
    read_config_file,
    split_names,
)
from provender._errors import ConfigError
from provender._sizes import parse_duration, parse_size

ByteSize = Annotated[int, BeforeValidator(parse_size)]
Seconds = Annotated[float, BeforeValidator(parse_duration)]
NameList = Annotated[list[str], NoDecode, BeforeValidator(split_names)]

DEFAULT_MAX_SIZE = 50 * 10**9


def default_cache_dir() -> Path:
    """``platformdirs.user_cache_dir("provender")`` (Linux ``~/.cache/provender``)."""
    return Path(platformdirs.user_cache_dir("provender", appauthor=False))


def default_data_dir() -> Path:
    """Where libraries keep state that is not a cache (collections, agent sessions)."""
    return Path(platformdirs.user_data_dir("provender", appauthor=False))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class CacheSettings(_Section):
    """``[cache]``: the shared disk cache of models."""

    dir: Path = Field(default_factory=default_cache_dir, description="Root of the shared model cache.")
    max_size: ByteSize = Field(DEFAULT_MAX_SIZE, description="Size limit; LRU entries are evicted above it.")


class MemorySettings(_Section):
    """``[memory]``: models loaded in a process's memory."""

    max_models: int = Field(2, ge=1, description="Loaded models kept per process (LRU).")
    keep_alive: Seconds = Field(300.0, description="Idle seconds before a loaded model is unloaded; <0 = never.")


class PluginSettings(_Section):
    """``[plugins]``: which installed plugins load."""

    disabled: NameList = Field(default_factory=list, description="Plugin (entry point) names not to load.")


class DataSettings(_Section):
    """``[data]``: state that is not a cache (embedding collections, agent sessions)."""

    dir: Path = Field(default_factory=default_data_dir, description="Root of provender's data.")


class Settings(BaseSettings):
    """All of provender's settings. Build it with `load_settings()` for friendly errors."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        validate_default=True,
    )

    cache: CacheSettings = Field(default_factory=lambda: CacheSettings())
    memory: MemorySettings = Field(default_factory=lambda: MemorySettings())
    plugins: PluginSettings = Field(default_factory=lambda: PluginSettings())
    data: DataSettings = Field(default_factory=lambda: DataSettings())

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
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=path)


def _leaf_settings(model: type[BaseModel] = Settings, prefix: str = "") -> list[str]:
    names: list[str] = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            names.extend(_leaf_settings(ann, f"{prefix}{name}."))
        else:
            names.append(prefix + name)
    return names


def setting_source(setting: str, init: dict[str, Any] | None = None) -> str:
    """Where the effective value of `setting` (``"cache.max_size"``) comes from.

    One of ``"argument"``, ``"env:PROVENDER_..."``, ``"file:<path>"`` or ``"default"``.
    """
    section, _, key = setting.partition(".")
    if init and (setting in init or key in (init.get(section) or {})):
        return "argument"
    found = find_env(setting) or find_env(section)
    if found:
        return f"env:{found[0]}"
    path = config_file_path()
    data = read_config_file(path)
    if isinstance(data.get(section), dict) and key in data[section]:
        return f"file:{path}"
    return "default"


def _describe_source(source: str) -> str:
    kind, _, where = source.partition(":")
    return {"env": f"environment variable {where}", "file": f"config file {where}"}.get(kind, source)


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning any validation problem into one clear `ConfigError`.

    ``overrides`` are init arguments (highest precedence), e.g. ``cache={"max_size": "1GB"}``.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(part) for part in err["loc"]]
        setting = ".".join(loc)
        source = setting_source(setting, overrides) if len(loc) == 2 else "unknown"
        if err["type"] == "extra_forbidden":
            message = f"unknown setting {setting!r} in {_describe_source(setting_source(setting, overrides))}"
            if len(loc) == 1 and source == "default":
                message = f"unknown setting section {setting!r} in config file {config_file_path()}"
        else:
            reason = str(err.get("ctx", {}).get("error", "")) or err["msg"]
            message = f"invalid setting {setting} from {_describe_source(source)}: {reason} (got {err.get('input')!r})"
        raise ConfigError(message, setting=setting, source=source, value=err.get("input")) from None
    except ConfigError:
        raise
    except Exception as exc:  # e.g. pydantic-settings' own SettingsError on a bad env JSON value
        raise ConfigError(f"invalid settings: {exc}") from None


def effective_settings(settings: Settings, overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every leaf setting with its value, env var name and source (for `provender config`)."""
    from provender._config_files import env_var_name

    rows = []
    dumped = settings.model_dump(mode="json")
    for name in _leaf_settings():
        section, key = name.split(".")
        rows.append(
            {
                "setting": name,
                "value": dumped[section][key],
                "env": env_var_name(name),
                "source": setting_source(name, overrides),
            }
        )
    return rows
