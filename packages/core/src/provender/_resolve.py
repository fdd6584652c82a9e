"""How a model name finds its provider and its files: the colon rule (`parse_model_name`,
`resolve_provider`), the order of claims (`prefer_order`), and which names may be read as local
paths (`confine_local_paths`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from provender.errors import InvalidModelNameError, ModelNotFoundError, ModelPathNotFoundError, UnsupportedError

if TYPE_CHECKING:
    from pathlib import Path

    from provender._cache import CacheEntry, CacheManager, Lease
    from provender._provider import Provider


def parse_model_name(model: str) -> tuple[str | None, str]:
    """``"mlx:org/name"`` -> (``"mlx"``, ``"org/name"``); ``"org/name"`` -> (None, ``"org/name"``)."""
    if not isinstance(model, str) or not model.strip():
        raise InvalidModelNameError(str(model), "a model name cannot be empty")
    prefix, sep, rest = model.partition(":")
    windows_drive = len(prefix) == 1 and rest.startswith(("\\", "/"))  # C:\\models is a path
    if sep and rest and not windows_drive and prefix.replace("-", "").replace("_", "").isalnum():
        return prefix, rest
    return None, model


def resolve_provider(model: str, cache: CacheManager | None = None) -> Provider:
    """Find the provider for `model` and return it bound to the model.

    ``provider:model`` names the provider; a bare name is claimed through the
    ``provender_claim_model`` hook from the cache entry (or local directory) it names,
    and when several providers claim it, ``providers.prefer`` picks (`prefer_order`).
    The colon rule: the part before the first colon names a provider only when such a
    provider is installed; otherwise the whole name is the model's (Ollama's ``name:tag``, its
    ``:latest`` dropped, or GGUF's ``repo:QUANT``) when the cache has it, and an unknown
    provider's error when it does not.
    """
    from provender._plugins import get_plugin_manager
    from provender._provider import Provider

    manager = get_plugin_manager()
    providers = manager.providers()
    provider_name, model_name = parse_model_name(model)
    entry = None
    if provider_name is not None and provider_name not in providers:
        # the colon rule: a prefix that names no installed provider is part of the model's name,
        # an Ollama name:tag (``:latest`` dropped) or a GGUF repo:QUANT, when the cache has it
        found = _tagged_entry(model, cache)
        if found is None:
            raise manager.unknown_provider(provider_name, model)
        provider_name, (model_name, entry) = None, found
    if provider_name is None:
        if entry is None and model_name.endswith(":latest"):  # org/m:latest is org/m, as on Ollama
            model_name, entry = _tagged_entry(model_name, cache) or (model_name, None)
        entry = entry or _entry_for(model_name, cache)
        if entry is None:
            raise ModelNotFoundError(
                model_name,
                "it is not in the cache; pull it (`provender pull "
                f"{model_name}`) or name the provider (`PROVIDER:{model_name}`)",
            )
        claims = prefer_order([c for c in manager.claim(entry) if c in providers])
        if not claims:
            raise ModelNotFoundError(
                model_name,
                f"no installed provider can serve it (providers: {', '.join(sorted(providers)) or 'none'}), "
                f"though the cache holds it ({entry.kind} entry {entry.key[:12]}: `provender cache ls`)",
            )
        provider_name = claims[0]
    spec = providers.get(provider_name)
    if spec is None:
        raise manager.unknown_provider(provider_name)
    provider = spec.factory(model_name)
    if not isinstance(provider, Provider):
        raise UnsupportedError(
            provider_name,
            "the Provider contract",
            f"its factory returned {type(provider).__name__}, not a provender.Provider",
        )
    return provider


def prefer_order(claims: list[str], prefer: list[str] | None = None) -> list[str]:
    """`claims` (provider names) ordered by `prefer` (default: the ``providers.prefer`` setting);
    names it does not list follow, highest declared priority first (`ProviderSpec.priority`),
    ties in their order. The first one serves."""
    if prefer is None:
        from provender._settings import load_settings

        prefer = load_settings().providers.prefer
    from provender._plugins import provider_priorities

    rank = {name: i for i, name in enumerate(prefer)}
    priority = provider_priorities()  # what each provider declared when it registered
    # stable: ties keep their order
    return sorted(claims, key=lambda name: (rank.get(name, len(rank)), -priority.get(name, 0)))


def _tagged_entry(name: str, cache: CacheManager | None) -> tuple[str, CacheEntry] | None:
    """The name and cache entry of a ``name:tag`` whose prefix is no provider: the name without
    Ollama's ``:latest`` tag, else the name itself; None when the cache has neither."""
    from provender.errors import InvalidNameError

    for candidate in dict.fromkeys((name.removesuffix(":latest"), name)):
        try:
            entry = _entry_for(candidate, cache)
        except (InvalidNameError, ModelPathNotFoundError):  # not a name the cache can hold
            entry = None
        if entry is not None:
            return candidate, entry
    return None


def _entry_for(name: str, cache: CacheManager | None) -> CacheEntry | None:
    """The cache entry (or local path) `name` names; None if the cache has no such entry.

    Errors other than "not there" (a bad setting, an unreadable cache) propagate as they are.
    """
    from pathlib import Path

    from provender._cache import CacheEntry, CacheManager

    pathlike = looks_like_path(name)
    try:
        path = Path(name).expanduser()
        local = may_read_path(name) and (path.is_dir() or (pathlike and path.is_file()))
    except (OSError, RuntimeError):  # too long for a path (ENAMETOOLONG), ~nosuchuser: no such local path
        local = False
    if local:
        st = path.stat()
        size = 0 if path.is_dir() else st.st_size
        return CacheEntry(key="", name=name, kind="path", path=path.absolute(), size=size, created=st.st_mtime)
    if pathlike:
        raise ModelPathNotFoundError(name)
    from provender._cache._names import MAX_NAME_LENGTH, check_name

    if len(name) > MAX_NAME_LENGTH:  # no entry has such a name: InvalidNameError, the name cut short
        check_name(name)
    cm = cache or CacheManager()
    entry = cm.find(name)
    if entry is None and ":" in name:  # org/repo-GGUF:Q4_K_M names a file of the repo's entry
        from provender._cache._gguf import split_tag

        base, tag = split_tag(name)
        entry = cm.find(base) if tag else None
    return entry


_readable_paths: frozenset[str] | None = None  # None: any name may be read as a local path


def confine_local_paths(allowed: Iterable[str] | None) -> None:
    """In this process, read a model name as a path on the local disk only when it is one of
    `allowed` (None, the default: any name). ``provender serve`` calls it for
    ``server.local_paths``: a relative name is then looked up in the cache whatever the
    working directory holds, so an answer never tells what is on the server's disk."""
    global _readable_paths
    _readable_paths = None if allowed is None else frozenset(allowed)


def may_read_path(name: str) -> bool:
    """Whether `name` may be read as a local path (see `confine_local_paths`)."""
    return _readable_paths is None or name in _readable_paths


def looks_like_path(name: str) -> bool:
    """True for names only a path can mean: ``/m``, ``./m``, ``../m``, ``~/m``, ``C:\\m``, ``m\\n``."""
    return (
        name.startswith(("/", "./", "../", "~", ".\\", "..\\"))
        or name in (".", "..")
        or "\\" in name
        or (len(name) > 2 and name[1] == ":" and name[2] in "/\\")
    )


def resolve_model_files(
    model: str, *, cache: CacheManager | None = None, fetch: Callable[[CacheManager], object] | None = None
) -> tuple[Path, Lease | None]:
    """Where a provider finds `model`'s files: a local directory as it is (no lease), else the cache
    entry of that name held by a `Lease` (release it when the model is unloaded).

    On a miss, ``fetch(cache)`` downloads it (the provider picks which files, e.g.
    ``cache.fetch(model, allow_patterns=[...])``), then it is acquired. A name that cannot be a
    directory, an entry or a Hub repo id raises ModelNotFoundError.
    """
    from pathlib import Path

    from provender._cache import CacheManager
    from provender.errors import EntryNotFoundError, InvalidNameError

    local = Path(model).expanduser()
    if may_read_path(model) and local.is_dir():
        return local, None
    cm = cache or CacheManager()
    try:
        lease = cm.acquire(model)
    except EntryNotFoundError:
        if fetch is None:
            raise
        try:
            fetch(cm)
        except InvalidNameError:
            raise ModelNotFoundError(model, "no such directory, cached model or Hub repo id") from None
        lease = cm.acquire(model)
    return lease.entry.model_path, lease
