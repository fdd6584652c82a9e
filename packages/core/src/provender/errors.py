"""provender's exceptions (public: ``from provender.errors import CacheError``; every one is
also importable from ``provender``). One root, `ProvenderError`.

Subclasses also inherit the matching builtin where that is natural, so callers
can catch either (`except LookupError` keeps working), and they carry the data
their message names as attributes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from pathlib import Path


def _detailed(message: str, detail: str, sep: str = ": ") -> str:
    """`message`, followed by `detail` after `sep` when there is one."""
    return f"{message}{sep}{detail}" if detail else message


class ProvenderError(Exception):
    """Root of every error provender raises on purpose.

    ``exit_code`` (None: decided by the kind of error) is the code the command line exits
    with: 2 for bad input or configuration, 1 for a failure.
    """

    exit_code: ClassVar[int | None] = None


class ConfigError(ProvenderError, ValueError):
    """A setting has a bad value, or the config file cannot be read."""

    def __init__(
        self, message: str, *, setting: str | None = None, source: str | None = None, value: object = None
    ) -> None:
        super().__init__(message)
        self.setting = setting
        self.source = source
        self.value = value


class PluginError(ProvenderError):
    """A plugin misbehaved (bad registration, duplicate provider name...)."""


class UnsupportedError(ProvenderError, NotImplementedError):
    """A provider was asked for a capability it does not have."""

    def __init__(self, provider: str, capability: str, detail: str = "") -> None:
        super().__init__(_detailed(f"provider {provider!r} does not support {capability}", detail))
        self.provider = provider
        self.capability = capability


class UnknownProviderError(ProvenderError, LookupError):
    """A model name asked for a provider that no installed plugin registers."""

    exit_code = 2

    def __init__(self, provider: str, available: list[str], detail: str = "") -> None:
        have = ", ".join(sorted(available)) or "none installed"
        super().__init__(_detailed(f"no provider named {provider!r} (available: {have})", detail, "; "))
        self.provider = provider
        self.available = available


class ModelNotFoundError(ProvenderError, LookupError):
    """A model name could not be resolved to a provider or to cached files."""

    def __init__(self, model: str, detail: str = "") -> None:
        super().__init__(_detailed(f"model {model!r} not found", detail))
        self.model = model


class InvalidModelNameError(ModelNotFoundError, ValueError):
    """A model name that cannot name anything (empty, blank): bad input, exit code 2."""

    exit_code = 2

    def __init__(self, model: str, reason: str) -> None:
        ProvenderError.__init__(self, f"invalid model name {model!r}: {reason}")
        self.model = model
        self.reason = reason


class ModelPathNotFoundError(ModelNotFoundError, FileNotFoundError):
    """A model given as a local path (``./m``, ``/models/m``, ``~/m``) that does not exist: exit code 2."""

    exit_code = 2

    def __init__(self, model: str) -> None:
        ProvenderError.__init__(self, f"no such file or directory: {model!r} (a model given as a path must exist)")
        self.model = model


class InvalidOptionError(ProvenderError, ValueError):
    """A generation option has a value outside its range (e.g. temperature -1)."""

    def __init__(self, option: str, value: object, expected: str) -> None:
        super().__init__(f"invalid {option}={value!r}: expected {expected}")
        self.option = option
        self.value = value


# -- cache ---------------------------------------------------------------------------------


class CacheError(ProvenderError):
    """Root of the errors of the shared disk cache."""


class InvalidNameError(CacheError, ValueError):
    """A cache key or model name is not allowed (it could leave the cache dir, or is malformed)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"invalid name {name!r}: {reason}")
        self.name = name
        self.reason = reason


class _EntryNamedError(CacheError):
    """An error about the entry a caller named: ``name``, and the message of the class's `template`."""

    template: ClassVar[str]  # ``{name!r}`` stands for the name

    def __init__(self, name: str) -> None:
        super().__init__(self.template.format(name=name))
        self.name = name


class EntryNotFoundError(_EntryNamedError, LookupError):
    """No cache entry has this key or name."""

    template = "no cache entry named {name!r} (see `provender cache ls`)"


class EntryExistsError(_EntryNamedError, FileExistsError):
    """An entry with this name already exists and replacing it was not asked for."""

    template = "a cache entry named {name!r} already exists (remove it first, or replace it)"


class EntryTooLargeError(CacheError):
    """The entry alone is larger than the cache's size limit; nothing was evicted."""

    def __init__(self, name: str, size: int, max_size: int) -> None:
        from provender._sizes import format_size

        super().__init__(
            f"{name!r} is {format_size(size)}, larger than the cache limit cache.max_size="
            f"{format_size(max_size)}; nothing was evicted (raise PROVENDER_CACHE__MAX_SIZE to store it)"
        )
        self.name = name
        self.size = size
        self.max_size = max_size


class EntryInUseError(CacheError):
    """The entry is pinned or held by a live process, so it cannot be removed now."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"cannot remove {name!r}: {reason}")
        self.name = name
        self.reason = reason


class CacheNotWritableError(CacheError, PermissionError):
    """The cache directory (or a file in it) cannot be written."""

    def __init__(self, path: Path, detail: str = "") -> None:
        self.path = path
        super().__init__(_detailed(f"cache directory {str(path)!r} is not writable", detail))


class DiskFullError(CacheError, OSError):
    """The filesystem holding the cache ran out of space; nothing already cached was lost."""

    def __init__(self, path: Path, needed: int | None = None) -> None:
        from provender._sizes import format_size

        need = f" (needed {format_size(needed)})" if needed else ""
        super().__init__(f"no space left on the device holding {str(path)!r}{need}; nothing already cached was lost")
        self.path = path
        self.needed = needed


class SourceNotFoundError(CacheError, FileNotFoundError):
    """The file or directory to put in the cache does not exist."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"no such file or directory: {str(path)!r}")
        self.path = path


class HubError(CacheError):
    """Fetching a repository from the Hugging Face Hub failed."""


class RemoteTierError(CacheError):
    """The remote tier (``remote.url``) failed: unreachable, too slow, refused, or it holds corrupt content.

    Pulls and imports never fail because of the tier (they fall back to the Hub with a warning);
    `CacheManager.push` and listing the tier raise this. ``url`` and ``reason`` say what and why.
    """

    exit_code = 1

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"remote tier {url}: {reason}")
        self.url = url
        self.reason = reason


class RemoteNotConfiguredError(ConfigError):
    """No remote tier is configured (``remote.url`` is empty), or it is read-only where a write was asked."""

    exit_code = 2

    def __init__(self, message: str = "") -> None:
        super().__init__(
            message or 'no remote tier is configured: set remote.url (e.g. PROVENDER_REMOTE__URL="s3://bucket/prefix")',
            setting="remote.url",
        )


class AmbiguousNameError(CacheError, ValueError):
    """A name or a key prefix matches more than one cache entry; ``candidates`` lists them.

    Each candidate is ``(key, description)``; the message names them all, so the caller
    can pick one by its key.
    """

    def __init__(self, name: str, candidates: list[tuple[str, str]], what: str = "name") -> None:
        listed = "; ".join(f"{key[:12]} {desc}" for key, desc in candidates)
        super().__init__(
            f"{what} {name!r} matches {len(candidates)} cache entries: {listed}; give the key of the one you mean"
        )
        self.name = name
        self.candidates = candidates
