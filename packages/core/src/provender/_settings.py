"""The one settings object: defaults < TOML file < ``PROVENDER_*`` environment < arguments."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from provender._config_files import (
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

    dir: Directory = Field(default_factory=default_cache_dir, description="Root of the shared model cache.")
    max_size: SizeLimit = Field(DEFAULT_MAX_SIZE, description="Size limit; LRU entries are evicted above it.")


class MemorySettings(_Section):
    """``[memory]``: models loaded in a process's memory."""

    max_models: int = Field(2, ge=1, description="Loaded models kept per process (LRU).")
    keep_alive: Seconds = Field(300.0, description="Idle seconds before a loaded model is unloaded; <0 = never.")


class PluginSettings(_Section):
    """``[plugins]``: which installed plugins load."""

    disabled: NameList = Field(default_factory=list, description="Plugin (entry point) names not to load.")


class DataSettings(_Section):
    """``[data]``: state that is not a cache (embedding collections, agent sessions)."""

    dir: Directory = Field(default_factory=default_data_dir, description="Root of provender's data.")


class ServerSettings(_Section):
    """``[server]``: where `provender serve` listens and what it may load."""

    host: str = Field("127.0.0.1", min_length=1, description="Address `provender serve` binds (127.0.0.1: local only).")
    port: int = Field(11435, ge=1, le=65535, description="Port of `provender serve`.")
    api_key: SecretStr = Field(SecretStr(""), description="Bearer token clients must send; empty: none required.")
    models: NameList = Field(default_factory=list, description="Models the server may load; empty: any cached.")
    # The server's walls (docs/serve.md, "Security"); read only by provender_serve.
    origins: NameList = Field(
        default_factory=list,
        description="Web-page origins allowed besides the server's own and app://, file://, tauri://, "
        "vscode-webview:// ones (https://app.example, * wildcards).",
    )
    allowed_hosts: NameList = Field(
        default_factory=list,
        description="Host header names allowed besides the server's addresses, localhost and this machine's name "
        "(name or name:port; *: any, behind a proxy).",
    )
    pull: Literal["never", "without-origin", "always"] = Field(
        "without-origin",
        description="Which requests may download a model they name: never, without-origin (not web pages), always.",
    )
    header_timeout: Seconds = Field(
        10.0, gt=0, description="Seconds a connection has to send a complete request head before it is closed."
    )
    max_connections: int = Field(
        0, ge=0, description="Open connections at most; 0: half the file-descriptor limit, 16 to 1024."
    )


class LlamaCppSettings(_Section):
    """``[llamacpp]``: how provender-llamacpp runs GGUF models with llama.cpp."""

    n_ctx: int = Field(4096, ge=0, description="Context size in tokens; 0: the model's own training context.")
    threads: int | None = Field(None, ge=1, description="CPU threads for generation; unset: llama.cpp's default.")
    n_gpu_layers: int = Field(-1, ge=-1, description="Layers offloaded to the GPU (-1: all; 0: CPU only).")


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


def default_prefer() -> list[str]:
    """The provider fastest on this platform first: MLX on Apple silicon, transformers elsewhere
    (measured in benchmarks/README.md); providers not listed follow in registration order."""
    import platform

    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return ["mlx", "transformers"]
    return ["transformers", "mlx"]


class ProvidersSettings(_Section):
    """``[providers]``: which provider serves a model that several claim."""

    prefer: NameList = Field(
        default_factory=default_prefer,
        description="Providers in order of preference when several claim a model (`provider:model` always wins).",
    )


class TransformersSettings(_Section):
    """``[transformers]``: how provender-transformers runs models with PyTorch."""

    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$",
        description="auto (CUDA, then Apple MPS, then CPU), cpu, mps, cuda or cuda:N.",
    )
    dtype: str = Field(
        "auto",
        pattern=r"^(auto|float32|float16|bfloat16)$",
        description="auto (float32 on CPU, the checkpoint's dtype on a GPU), float32, float16 or bfloat16.",
    )
    threads: int | None = Field(None, ge=1, description="CPU threads for PyTorch; unset: PyTorch's default.")


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
    server: ServerSettings = Field(default_factory=lambda: ServerSettings())
    llamacpp: LlamaCppSettings = Field(default_factory=lambda: LlamaCppSettings())
    providers: ProvidersSettings = Field(default_factory=lambda: ProvidersSettings())
    transformers: TransformersSettings = Field(default_factory=lambda: TransformersSettings())
    remote: RemoteSettings = Field(default_factory=lambda: RemoteSettings())

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


class _TomlSource(TomlConfigSettingsSource):
    """pydantic-settings' TOML source, reading the file as `read_config_file` does (a BOM is fine)."""

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        return read_config_file(Path(file_path))


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


def _known(loc: list[str]) -> str:
    model: type[BaseModel] = Settings
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
    and line) and the value.
    """
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(part) for part in err["loc"]][:2]
        setting = ".".join(loc)
        source = setting_source(setting, overrides)
        where = _describe_source(source, setting)
        if err["type"] == "extra_forbidden":
            kind = "setting section" if len(loc) == 1 else "setting"
            message = f"unknown {kind} {setting!r} in {where} (known: {_known(loc)})"
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


def cache_defaults() -> tuple[Path, int]:
    """``(cache.dir, cache.max_size)`` from the settings: what ``CacheManager()`` uses when not
    given them (registered with the cache by ``provender/__init__.py``, see `provender._wiring`)."""
    settings = load_settings()
    return settings.cache.dir, settings.cache.max_size


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


def display_value(setting: str, value: Any) -> str:
    """A setting's value as a person would write it: ``50 GB``, ``5m``, ``a, b``, ``(none)``."""
    section, _, key = setting.partition(".")
    section_field = Settings.model_fields.get(section)
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
    return str(value)


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
                "display": display_value(name, dumped[section][key]),
                "env": env_var_name(name),
                "source": setting_source(name, overrides),
            }
        )
    return rows
