"""provender's exceptions, all in this module (``from provender.errors import CacheError``; each is
also importable from ``provender``). One root, `ProvenderError`::

    ProvenderError
    ├── ConfigError (ValueError)                 a setting has a bad value; the config file is unreadable
    │   └── RemoteNotConfiguredError             a remote-tier command without ``remote.url``
    ├── PluginError                              a plugin failed to load or to register
    ├── UnsupportedError (NotImplementedError)   a provider lacks a capability or option
    ├── UnknownProviderError (LookupError)       ``provider:model`` names no installed provider
    ├── ModelNotFoundError (LookupError)         no provider can serve this model
    │   ├── InvalidModelNameError (ValueError)
    │   └── ModelPathNotFoundError (FileNotFoundError)
    ├── InvalidOptionError (ValueError)          a generation option is out of range
    ├── ConstraintViolationError (ValueError)    a token the constraint does not allow was fed to its matcher
    ├── CacheError                               the shared disk cache
    │   ├── InvalidNameError (ValueError)
    │   ├── EntryNotFoundError (LookupError)
    │   ├── EntryExistsError (FileExistsError)
    │   ├── EntryTooLargeError
    │   ├── EntryInUseError
    │   ├── CacheNotWritableError (PermissionError)
    │   ├── DiskFullError (OSError)
    │   ├── SourceNotFoundError (FileNotFoundError)
    │   ├── HubError
    │   ├── RemoteTierError                      the remote tier failed (unreachable, refused...)
    │   │   └── TierContentError                 it answered with invalid content
    │   │       └── CorruptBlobError             a blob that does not match its sha256
    │   ├── AmbiguousNameError (ValueError)
    │   ├── GGUFFormatError (ValueError)         a GGUF whose header cannot be read
    │   ├── BlobMismatchError                    an Ollama blob that does not match its digest
    │   ├── NotACacheError (ValueError)          ``cache.dir`` is not a provender cache (exit 2)
    │   ├── UnsafeCacheError                     a link where provender owns a folder: not followed
    │   └── SourceInCacheError (ValueError)      an import whose source contains the cache
    └── ServerError                              a running ``provender serve`` answered with an error
        └── ServerRequestError (ValueError)      it refused the request as bad input

Subclasses also inherit the matching builtin where that is natural, so callers
can catch either (`except LookupError` keeps working), and they carry the data
their message names as attributes. ``exit_code`` says what the command line exits with.
The packages on top keep their own in ``provender_embedding.errors``,
``provender_agent.errors`` and ``provender_serve.errors``, under the same root.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

__all__ = [
    "AmbiguousNameError",
    "BlobMismatchError",
    "CacheError",
    "CacheNotWritableError",
    "ConfigError",
    "ConstraintViolationError",
    "CorruptBlobError",
    "DiskFullError",
    "EntryExistsError",
    "EntryInUseError",
    "EntryNotFoundError",
    "EntryTooLargeError",
    "GGUFFormatError",
    "HubError",
    "InvalidModelNameError",
    "InvalidNameError",
    "InvalidOptionError",
    "ModelNotFoundError",
    "ModelPathNotFoundError",
    "NotACacheError",
    "PluginError",
    "ProvenderError",
    "RemoteNotConfiguredError",
    "RemoteTierError",
    "ServerError",
    "ServerRequestError",
    "SourceInCacheError",
    "SourceNotFoundError",
    "TierContentError",
    "UnknownProviderError",
    "UnsafeCacheError",
    "UnsupportedError",
]

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


class ConstraintViolationError(ProvenderError, ValueError):
    """A token was given to a constraint's matcher (`provender._constrain.Matcher.accept`) that the
    constraint does not allow there: a provider's decoding loop sampled past the mask."""


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


class GGUFFormatError(CacheError, ValueError):
    """A file that starts like a GGUF but whose header cannot be read."""


class BlobMismatchError(CacheError):
    """An Ollama blob whose content does not match the digest its manifest gives."""


class NotACacheError(CacheError, ValueError):
    """``cache.dir`` is not a provender cache: a foreign non-empty folder, a file or a dangling link.

    Nothing in it was touched. A configuration error (exit 2).
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cache.dir {str(path)!r} is not a provender cache: {reason}")
        self.path = path
        self.reason = reason


class UnsafeCacheError(CacheError):
    """Something provender owns inside the cache is a link (or of the wrong type); it was not followed."""

    def __init__(self, path: Path | str, reason: str) -> None:
        from pathlib import Path  # off `import provender`'s path

        super().__init__(f"refusing to use {str(path)!r}: {reason}")
        self.path = Path(path)
        self.reason = reason


class SourceInCacheError(CacheError, ValueError):
    """A folder to import contains the cache (or, for a move, lies inside it): refused, nothing touched."""

    def __init__(self, source: Path, cache_dir: Path, reason: str) -> None:
        super().__init__(f"cannot import {str(source)!r}: {reason} ({str(cache_dir)!r})")
        self.path = source


class TierContentError(RemoteTierError):
    """The tier answered, with content that is not valid (a damaged manifest, a corrupt blob): refused.
    Unlike an unreachable tier, writing the right content back repairs it."""


class CorruptBlobError(TierContentError):
    """A blob of the tier does not match its sha256 (or is missing): refused, nothing of it kept."""

    def __init__(self, url: str, sha256: str, reason: str) -> None:
        super().__init__(url, f"blob {sha256[:12]}... {reason}; refused (nothing corrupt entered the cache)")
        self.sha256 = sha256


class ServerError(ProvenderError):
    """A running server answered a request with an error (its message is the server's)."""

    def __init__(self, message: str, status: int = 0, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ServerRequestError(ServerError, ValueError):
    """The server refused a request as bad (400, 413): bad input, like an `InvalidOptionError`."""
