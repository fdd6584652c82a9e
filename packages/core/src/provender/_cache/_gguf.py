"""GGUF files in the shared cache: recognising them by content, and one quantisation at a time.

A GGUF repo on the Hub holds many quantisations of one model (``model-Q4_K_M.gguf``,
``model-Q8_0.gguf``, ...), each gigabytes. ``org/repo-GGUF:Q4_K_M`` (the ``repo:quant``
convention of llama.cpp's ``-hf`` and of Ollama) names one of them; `quant_request` turns
it into the exact files to download (that file, or every part of a split GGUF), so the
rest of the repo is never fetched. Only the standard library is used: the core must not
depend on llama.cpp or on the ``gguf`` package.
"""

from __future__ import annotations

import logging
import os
import re
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from provender.errors import GGUFFormatError, InvalidNameError, ModelNotFoundError

if TYPE_CHECKING:
    from provender._cache._entry import CacheEntry

logger = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
DEFAULT_QUANT = "Q4_K_M"  # what llama.cpp's -hf and Ollama pick when a repo offers several
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_QUANT_TOKEN = re.compile(r"^(?:I?Q\d[A-Z0-9_]*|B?F16|F32|F64|TQ\d_\d|MXFP4(?:_MOE)?)$", re.IGNORECASE)
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# GGUF value types (gguf.h): size in bytes of the fixed-size ones
_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_FORMATS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_MAX_STRING = 64 * 1024 * 1024  # a chat template is kilobytes; anything near this is not a GGUF header


def is_gguf(path: str | os.PathLike[str]) -> bool:
    """True if `path` is a regular file (or a link to one) that starts with the GGUF magic and a known version."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return False
    return len(head) == 8 and head[:4] == GGUF_MAGIC and struct.unpack("<I", head[4:])[0] in (1, 2, 3)


_MAX_DEPTH = 8  # arrays of arrays: real files nest one level; a hostile one a million (RecursionError)


class _Header:
    """A GGUF header being read: the file, its version and size, and the checks every count must pass."""

    def __init__(self, f: BinaryIO, max_array: int) -> None:
        self.f = f
        self.max_array = max_array
        self.version = 3
        try:
            self.size = os.fstat(f.fileno()).st_size
        except (OSError, ValueError):
            self.size = 1 << 62

    def read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise GGUFFormatError("truncated GGUF header")
        return data

    def min_item(self, etype: int) -> int:
        """The fewest bytes one array item of type `etype` takes: a count needing more than is left is a lie."""
        width = 4 if self.version == 1 else 8
        if etype == _STRING:
            return width  # its length; an empty string has no bytes after it
        if etype == _ARRAY:
            return 4 + width  # its element type and count
        if etype in _FIXED:
            return _FIXED[etype]
        raise GGUFFormatError(f"unknown GGUF value type {etype} in an array")

    def length(self) -> int:
        """A count or a string length (32 bits in version 1, 64 after)."""
        return int(struct.unpack("<I" if self.version == 1 else "<Q", self.read(4 if self.version == 1 else 8))[0])

    def check_fits(self, count: int, item: int, what: str) -> None:
        """Refuse a count of items that cannot fit in the rest of the file (before looping or seeking on it)."""
        left = self.size - self.f.tell()
        if count * item > left:
            raise GGUFFormatError(f"{what} of {count} items, {item} or more bytes each, runs past the end of the file")

    def skip(self, n: int, what: str) -> None:
        """Seek `n` bytes on, refusing offsets past the end of the file (an overflowing seek included)."""
        if n > self.size - self.f.tell():
            raise GGUFFormatError(f"{what} of {n} bytes runs past the end of the file")
        self.f.seek(n, os.SEEK_CUR)

    def string(self) -> str:
        n = self.length()
        if n > _MAX_STRING:
            raise GGUFFormatError(f"a string of {n} bytes in a GGUF header")
        if n > self.size - self.f.tell():
            raise GGUFFormatError(f"a string of {n} bytes runs past the end of the file")
        return self.read(n).decode("utf-8", errors="replace")

    def value(self, vtype: int, depth: int = 0) -> Any:
        if vtype in _FIXED:
            return struct.unpack(_FORMATS[vtype], self.read(_FIXED[vtype]))[0]
        if vtype == _STRING:
            return self.string()
        if vtype != _ARRAY:
            raise GGUFFormatError(f"unknown GGUF value type {vtype}")
        if depth >= _MAX_DEPTH:
            raise GGUFFormatError(f"arrays nested more than {_MAX_DEPTH} deep")
        (etype,) = struct.unpack("<I", self.read(4))
        item = self.min_item(etype)
        count = self.length()
        self.check_fits(count, item, "an array")
        if count <= self.max_array:
            return [self.value(etype, depth + 1) for _ in range(count)]
        # a large array (the vocabulary, token types, merges): skipped, not kept
        if etype in _FIXED:
            self.skip(count * _FIXED[etype], "an array")
        elif etype == _STRING:
            for _ in range(count):
                self.skip(self.length(), "a string")
        else:
            for _ in range(count):
                self.value(etype, depth + 1)
        return f"<array of {count}>"


def read_gguf_metadata(
    path: str | os.PathLike[str], *, until: str | None = None, max_array: int = 64
) -> dict[str, Any]:
    """The key/value metadata of a GGUF file's header (its tensors are not read).

    Arrays longer than `max_array` (the vocabulary) are summarised as ``"<array of N>"``.
    With `until`, reading stops after that key (``general.architecture`` comes first in
    files written by llama.cpp's tools, so a claim reads a few hundred bytes).
    Raises GGUFFormatError (a ValueError) naming the file if it is not a readable GGUF: a
    hostile header (arrays nested without end, counts and lengths past the end of the file,
    offsets that overflow a seek) included.
    """
    with open(path, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise GGUFFormatError(f"{path} is not a GGUF file (no GGUF magic)")
        header = _Header(f, max_array)
        try:
            (version,) = struct.unpack("<I", header.read(4))
            if version not in (1, 2, 3):
                raise GGUFFormatError(f"unsupported GGUF version {version}")
            header.version = version
            _tensors = header.length()
            count = header.length()  # each pair read reads bytes: a count past the end stops at the end
            meta: dict[str, Any] = {"GGUF.version": version}
            for _ in range(count):
                key = header.string()
                (vtype,) = struct.unpack("<I", header.read(4))
                meta[key] = header.value(vtype)
                if key == until:
                    break
        except (GGUFFormatError, struct.error, OverflowError) as exc:
            raise GGUFFormatError(f"{path} is not a readable GGUF file: {exc}") from None
    return meta


def gguf_architecture(path: str | os.PathLike[str]) -> str | None:
    """``general.architecture`` of a GGUF file (``llama``, ``bert``...), or None if it is not a readable GGUF."""
    if not is_gguf(path):
        return None
    try:
        arch = read_gguf_metadata(path, until="general.architecture").get("general.architecture")
    except (OSError, GGUFFormatError) as exc:
        logger.debug("unreadable GGUF header in %s: %s", path, exc)
        return None
    return arch if isinstance(arch, str) and arch else None


# -- which files of a directory or repo are GGUF models --------------------------------------


def is_projector(name: str) -> bool:
    """Multimodal projectors (``mmproj-*.gguf``) sit next to models but are not models themselves."""
    return Path(name).name.lower().startswith("mmproj")


def split_part(name: str) -> tuple[int, int] | None:
    """``model-00002-of-00003.gguf`` -> (2, 3); None for a file that is not a split part."""
    m = _SPLIT.search(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[-./\\ ]", name) if t]


def quant_of(name: str) -> str | None:
    """The quantisation tag in a GGUF file name (``Llama-3.2-1B-Q4_K_M.gguf`` -> ``Q4_K_M``), or None."""
    found = [t for t in _tokens(name.removesuffix(".gguf")) if _QUANT_TOKEN.match(t)]
    return found[-1].upper() if found else None


def model_files(names: Iterable[str]) -> list[str]:
    """The GGUF model files among `names` (relative paths): ``*.gguf``, projectors left out, sorted."""
    return sorted(n for n in names if n.lower().endswith(".gguf") and not is_projector(n))


def _group(files: list[str]) -> dict[str, list[str]]:
    """Files grouped into models: a split GGUF's parts are one model, named by its first part."""
    groups: dict[str, list[str]] = {}
    for name in files:
        part = split_part(name)
        stem = _SPLIT.sub("", name) if part else name
        groups.setdefault(stem, []).append(name)
    return {sorted(parts)[0]: sorted(parts) for parts in groups.values()}


def select_quant(names: Iterable[str], quant: str | None, *, repo: str = "") -> list[str]:
    """The files of one GGUF model among `names` (a repo's or a folder's files): the one whose
    name carries the quantisation tag `quant` (any case), with all its split parts, first part first.

    Without `quant`: the only model there is, else the ``Q4_K_M`` one. Raises ModelNotFoundError
    naming the quantisations on offer when the choice is missing or ambiguous.
    """
    groups = _group(model_files(names))
    label = repo or "this folder"
    if not groups:
        raise ModelNotFoundError(label, "it holds no .gguf model file")
    offered = sorted({quant_of(first) or first for first in groups})
    if quant is None:
        if len(groups) == 1:
            return next(iter(groups.values()))
        quant = DEFAULT_QUANT
        picked = [parts for first, parts in groups.items() if _has_tag(parts[0], quant)]
        if len(picked) != 1:
            raise ModelNotFoundError(
                label,
                f"it holds {len(groups)} GGUF models ({', '.join(offered)}); name one: {repo or 'MODEL'}:{offered[0]}",
            )
        return picked[0]
    picked = [parts for parts in groups.values() if _has_tag(parts[0], quant)]
    if not picked:
        raise ModelNotFoundError(
            f"{label}:{quant}", f"no GGUF file with the tag {quant!r}; it offers {', '.join(offered)}"
        )
    if len(picked) > 1:
        names_ = ", ".join(p[0] for p in picked)
        raise ModelNotFoundError(f"{label}:{quant}", f"{len(picked)} GGUF models carry that tag ({names_})")
    return picked[0]


def _has_tag(name: str, quant: str) -> bool:
    return quant.lower() in (t.lower() for t in _tokens(name.removesuffix(".gguf")))


def split_tag(name: str) -> tuple[str, str | None]:
    """``org/repo-GGUF:Q4_K_M`` -> (``org/repo-GGUF``, ``Q4_K_M``); a name without a tag -> (name, None)."""
    base, sep, tag = name.rpartition(":")
    if sep and base and "/" not in tag and "\\" not in tag and _TAG.match(tag):
        return base, tag
    return name, None


# Files that are never GGUF, whatever their content: not even opened (a claim must be quick).
_NOT_GGUF = (".json", ".md", ".txt", ".safetensors", ".py", ".jinja", ".gitattributes", ".model", ".npz", ".lock")


def _files(root: Path, depth: int) -> list[Path]:
    out: list[Path] = []
    try:
        with os.scandir(root) as it:
            items = sorted(it, key=lambda e: e.name)
    except OSError:
        return out
    for item in items:
        if item.name.startswith(".") or item.name.lower().endswith(_NOT_GGUF):
            continue
        try:
            if item.is_file():  # follows links: a Hub snapshot's files link to its blobs
                out.append(Path(item.path))
            elif depth > 1 and item.is_dir(follow_symlinks=False):
                out.extend(_files(Path(item.path), depth - 1))
        except OSError:
            continue
    return out


def gguf_in(path: Path) -> list[Path]:
    """GGUF model files at `path` (a file, or a directory searched two levels deep), decided by content."""
    if path.is_file():
        return [path] if is_gguf(path) else []
    return [p for p in _files(path, 2) if not is_projector(p.name) and is_gguf(p)]


def entry_gguf_files(entry: CacheEntry) -> list[str]:
    """What GGUF files a cache entry holds, relative to its model path (for ``cache ls``)."""
    root = entry.model_path
    files = gguf_in(root)
    return [p.name if p == root else str(p.relative_to(root)) for p in files]


def describe_files(files: list[str]) -> str:
    """``a-Q4_K_M.gguf, b-00001-of-00002.gguf (+1 part)``: split parts collapsed."""
    out = []
    for first, parts in _group(files).items():
        out.append(first if len(parts) == 1 else f"{first} (+{len(parts) - 1} part{'s' if len(parts) > 2 else ''})")
    return ", ".join(out)


# -- the Hub side: which files of a repo to download -----------------------------------------


class HubFolder(Protocol):
    """What `quant_request` reads of a cache: its Hub folder (a `CacheManager`, or the cache's `Store`)."""

    @property
    def hub_dir(self) -> Path: ...


def quant_request(
    cm: HubFolder,
    name: str,
    *,
    revision: str | None,
    repo_type: str,
    allow_patterns: list[str] | str | None,
    endpoint: str | None,
    pick_default: bool = False,
) -> tuple[str, list[str] | str | None]:
    """For ``org/repo:QUANT``: the repo id and the exact files to download (one quantisation).

    The repo's file list comes from the Hub; offline (or when the Hub cannot be reached),
    from the cached snapshot, so a quantisation already pulled is found without a network.
    A name without a tag comes back unchanged, unless `pick_default` asks for the repo's
    default GGUF (its only one, else ``Q4_K_M``), as a provider loading ``org/repo-GGUF`` does.
    """
    repo_id, quant = split_tag(name)
    if quant is None and not pick_default:
        return name, allow_patterns
    if allow_patterns:
        raise InvalidNameError(name, "a :QUANT tag already chooses the files; drop --include")
    files = _repo_files(cm, repo_id, revision=revision, repo_type=repo_type, endpoint=endpoint)
    chosen = select_quant(files, quant, repo=repo_id)
    logger.info("%s: pulling %s", name, ", ".join(chosen))
    return repo_id, chosen


def _repo_files(
    cm: HubFolder, repo_id: str, *, revision: str | None, repo_type: str, endpoint: str | None
) -> list[str]:
    from huggingface_hub import HfApi, constants

    from provender._cache._names import check_name

    check_name(repo_id)
    if not constants.HF_HUB_OFFLINE:
        try:
            return list(HfApi(endpoint=endpoint).list_repo_files(repo_id, revision=revision, repo_type=repo_type))
        except Exception as exc:  # no network, Hub down, no such repo: the cached snapshot may still answer
            logger.info("could not list %s on the Hub (%s); looking in the cache", repo_id, exc)
            cached = _cached_files(cm, repo_id, revision, repo_type)
            if cached:
                return cached
            from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

            if isinstance(exc, (RepositoryNotFoundError, GatedRepoError)):
                raise ModelNotFoundError(repo_id, "the Hub has no such repo, or it needs a token") from None
            raise ModelNotFoundError(repo_id, f"the Hub cannot be reached and it is not cached ({exc})") from None
    cached = _cached_files(cm, repo_id, revision, repo_type)
    if not cached:
        raise ModelNotFoundError(repo_id, "not in the cache, and HF_HUB_OFFLINE is set")
    return cached


def _cached_files(cm: HubFolder, repo_id: str, revision: str | None, repo_type: str) -> list[str]:
    from provender._cache import _hub

    snapshot = _hub.snapshot_path(cm.hub_dir / _hub.folder_name(repo_id, repo_type), revision)
    if snapshot is None:
        return []
    return [str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file()]
