"""Bring models Ollama has pulled into the shared cache, without copying them.

Ollama keeps a registry-style store (``$OLLAMA_MODELS``, else ``~/.ollama/models``)::

    manifests/registry.ollama.ai/library/llama3.2/1b    JSON: config + layers
    blobs/sha256-<hex>                                   content, named by its sha256

The layer of media type ``application/vnd.ollama.image.model`` is the GGUF file that
llama.cpp runs. `import_from_ollama` checks that blob against the manifest (size and
sha256: a corrupted blob is refused before anything is written), then places it in a new
entry without copying: a hard link to the same inode (a copy-on-write clone on
filesystems that have them; a copy only across filesystems, or when asked).

The blob is opened once, and what is hashed is what is placed: the clone and the copy are
made from that open file, and a hard link made by name is checked to be that same inode.
A blob swapped for another file or a link in between is refused, and so is a blob whose
real path leaves Ollama's models dir (a link to a file elsewhere).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provender._cache._gguf import GGUF_MAGIC
from provender.errors import (
    BlobMismatchError,
    CacheError,
    EntryTooLargeError,
    InvalidNameError,
    ModelNotFoundError,
    SourceNotFoundError,
)

if TYPE_CHECKING:
    from provender._cache._entry import CacheEntry
    from provender._cache._fsops import LinkMode
    from provender._cache._manager import CacheManager

logger = logging.getLogger(__name__)

MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
DEFAULT_REGISTRY = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_DIGEST = re.compile(r"sha256[:-]([0-9a-f]{64})")
MAX_MANIFEST = 1 << 20


def ollama_models_dir() -> Path:
    """Ollama's store: ``$OLLAMA_MODELS``, else ``~/.ollama/models``."""
    env = os.environ.get("OLLAMA_MODELS")
    return Path(env).expanduser() if env else Path.home() / ".ollama" / "models"


def parse_ollama_name(name: str) -> tuple[str, str, str, str]:
    """``llama3.2:1b`` -> (``registry.ollama.ai``, ``library``, ``llama3.2``, ``1b``), as Ollama reads names.

    ``user/model:tag`` has its own namespace; ``host/namespace/model:tag`` its own registry
    (``hf.co/org/repo:Q4_K_M``). The tag defaults to ``latest``.
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidNameError(str(name), "an Ollama model name cannot be empty")
    rest, sep, tag = name.strip().rpartition(":")
    if not sep or "/" in tag:
        rest, tag = name.strip(), DEFAULT_TAG
    parts = rest.split("/")
    if len(parts) == 1:
        parts = [DEFAULT_REGISTRY, DEFAULT_NAMESPACE, *parts]
    elif len(parts) == 2:
        parts = [DEFAULT_REGISTRY, *parts]
    if len(parts) != 3:
        raise InvalidNameError(
            name, "an Ollama name is MODEL[:TAG], NAMESPACE/MODEL[:TAG] or HOST/NAMESPACE/MODEL[:TAG]"
        )
    for part in (*parts, tag):
        if not _PART.fullmatch(part) or ".." in part:
            raise InvalidNameError(name, "use ASCII letters, digits, '.', '_' and '-' in each part")
    host, namespace, model = parts
    return host, namespace, model, tag


@dataclass(frozen=True)
class OllamaModel:
    """A model in an Ollama store: its manifest and the GGUF blob of its model layer."""

    name: str  # as Ollama shows it: llama3.2:1b
    manifest: Path
    blob: Path
    digest: str  # hex sha256, from the manifest
    size: int  # bytes, from the manifest
    layers: tuple[str, ...]  # every layer's media type
    store: Path | None = None  # Ollama's models dir it was found in (default: two levels above the blob)

    @property
    def model(self) -> str:
        return parse_ollama_name(self.name)[2]

    @property
    def tag(self) -> str:
        return parse_ollama_name(self.name)[3]


def find_ollama_model(name: str, models_dir: str | os.PathLike[str] | None = None) -> OllamaModel:
    """Read the manifest of `name` in Ollama's store and locate its model blob (nothing is hashed yet)."""
    host, namespace, model, tag = parse_ollama_name(name)
    store = Path(models_dir).expanduser() if models_dir is not None else ollama_models_dir()
    shown = f"{model}:{tag}" if (host, namespace) == (DEFAULT_REGISTRY, DEFAULT_NAMESPACE) else name
    manifest_path = store / "manifests" / host / namespace / model / tag
    if not manifest_path.is_file():
        where = "OLLAMA_MODELS" if os.environ.get("OLLAMA_MODELS") else "~/.ollama/models (set OLLAMA_MODELS)"
        raise ModelNotFoundError(shown, f"Ollama has no such model in {store} ({where}); pull it with `ollama pull`")
    try:
        if manifest_path.stat().st_size > MAX_MANIFEST:
            raise ValueError("too large for a manifest")
        manifest = json.loads(manifest_path.read_text())
        layers = manifest["layers"]
        if not isinstance(layers, list) or not all(isinstance(item, dict) for item in layers):
            raise ValueError("layers is not a list of objects")
    except RecursionError:  # JSON nested thousands deep: no manifest Ollama writes
        raise CacheError(f"Ollama manifest {manifest_path} is unreadable: its JSON is nested too deeply") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CacheError(f"Ollama manifest {manifest_path} is unreadable: {exc}") from None
    models = [item for item in layers if item.get("mediaType") == MODEL_MEDIA_TYPE]
    if len(models) != 1:
        raise CacheError(
            f"Ollama manifest {manifest_path} has {len(models)} model layers ({MODEL_MEDIA_TYPE}); expected one"
        )
    layer = models[0]
    digest_field = layer.get("digest")
    match = _DIGEST.fullmatch(digest_field) if isinstance(digest_field, str) else None
    size = layer.get("size")
    if match is None or not isinstance(size, int) or size < 0:
        raise CacheError(f"Ollama manifest {manifest_path}: the model layer has no valid sha256 digest and size")
    digest = match.group(1)
    blobs = store / "blobs"
    # lexists: a link, dangling or leading out of the store, is found here and refused by name when opened
    blob = next((p for p in (blobs / f"sha256-{digest}", blobs / f"sha256:{digest}") if os.path.lexists(p)), None)
    if blob is None:
        raise SourceNotFoundError(blobs / f"sha256-{digest}")
    return OllamaModel(
        name=shown,
        manifest=manifest_path,
        blob=blob,
        digest=digest,
        size=size,
        layers=tuple(t if isinstance(t := item.get("mediaType"), str) else "?" for item in layers),
        store=store,
    )


def _within(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _opened_path(fd: int) -> str | None:
    """Where the open file `fd` really is (Linux /proc, macOS F_GETPATH); None where the system cannot say."""
    if sys.platform.startswith("linux"):
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return None
    if sys.platform == "darwin":
        import fcntl

        try:
            raw = fcntl.fcntl(fd, fcntl.F_GETPATH, bytes(1024))  # type: ignore[attr-defined,unused-ignore]
        except (OSError, AttributeError):
            return None
        return os.fsdecode(raw.split(b"\0", 1)[0])
    return None


def open_blob(found: OllamaModel) -> tuple[int, str]:
    """Open the model blob once, for everything that follows: (file descriptor, its real path).

    Refused (BlobMismatchError): a blob whose real path leaves Ollama's models dir (a link to
    a file elsewhere; the store and its blobs folder may themselves be links, as the user set
    them up), a blob that is not a regular file, and a blob swapped for a link between being
    located and being opened.
    """
    store = found.store if found.store is not None else found.blob.parent.parent
    roots = {os.path.realpath(store), os.path.realpath(store / "blobs")}
    try:
        real = os.path.realpath(found.blob)
    except OSError as exc:  # the name changed from a link to a file while it was being resolved
        raise BlobMismatchError(
            f"{found.blob} changed while it was being located ({exc.strerror}): refusing to import {found.name}"
        ) from None
    outside = f"{found.blob} leads outside Ollama's models dir {store} (to {{}}): refusing to import {found.name}"
    if not any(_within(root, real) for root in roots):
        raise BlobMismatchError(outside.format(real))
    try:
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise SourceNotFoundError(found.blob) from None
    except OSError as exc:  # ELOOP: swapped for a link since it was resolved
        raise BlobMismatchError(
            f"{found.blob} cannot be opened as a file ({exc.strerror}): refusing to import {found.name}"
        ) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a FIFO, a device: O_NONBLOCK kept the open from hanging
            raise BlobMismatchError(f"{found.blob} is not a regular file; refusing to import {found.name}")
        where = _opened_path(fd)
        if where is not None and not any(_within(root, where) for root in roots):  # a folder swapped meanwhile
            raise BlobMismatchError(outside.format(where))
    except BaseException:
        os.close(fd)
        raise
    return fd, real


def check_open_blob(found: OllamaModel, fd: int) -> None:
    """Refuse the open blob if its size or sha256 differ from the manifest's, or if it is not a GGUF file."""
    actual_size = os.fstat(fd).st_size
    if actual_size != found.size:
        raise BlobMismatchError(
            f"Ollama blob {found.blob} is {actual_size} bytes, its manifest says {found.size}: "
            f"refusing to import a corrupted model (run `ollama pull {found.name}` again)"
        )
    os.lseek(fd, 0, os.SEEK_SET)
    with open(fd, "rb", closefd=False) as f:
        head = f.read(8)
        f.seek(0)
        actual = hashlib.file_digest(f, "sha256").hexdigest()
    if actual != found.digest:
        raise BlobMismatchError(
            f"Ollama blob {found.blob} does not match its sha256 in the manifest (got {actual[:12]}..., "
            f"expected {found.digest[:12]}...): refusing to import a corrupted model "
            f"(run `ollama pull {found.name}` again)"
        )
    if head[:4] != GGUF_MAGIC or int.from_bytes(head[4:8], "little") not in (1, 2, 3):
        raise BlobMismatchError(f"the model layer of {found.name} ({found.blob}) is not a GGUF file")


def check_blob(found: OllamaModel) -> None:
    """Refuse a blob that leaves the store, is not a regular file, or differs from its manifest (see `open_blob`)."""
    fd, _real = open_blob(found)
    try:
        check_open_blob(found, fd)
    finally:
        os.close(fd)


def default_cache_name(found: OllamaModel) -> str:
    """``llama3.2:1b`` -> ``ollama/llama3.2-1b``."""
    return f"ollama/{found.model}-{found.tag}"[:120]


def import_from_ollama(
    cm: CacheManager,
    name: str,
    *,
    as_name: str | None = None,
    models_dir: str | os.PathLike[str] | None = None,
    link_mode: LinkMode = "auto",
    replace: bool = False,
    pin: bool = False,
) -> CacheEntry:
    """Import Ollama's model `name` (``llama3.2:1b``) into the cache as `as_name` (default ``ollama/MODEL-TAG``).

    The blob is checked against the manifest first (BlobMismatchError if it is corrupt), then
    linked into the cache (``link_mode="auto"``; ``"copy"`` copies it). The entry holds one
    file, ``MODEL-TAG.gguf``; its recorded sha256 is Ollama's, so ``provender cache verify``
    checks it against the manifest too.
    """
    found = find_ollama_model(name, models_dir)
    if found.size > cm.max_size:
        raise EntryTooLargeError(as_name or found.name, found.size, cm.max_size)
    target = as_name or default_cache_name(found)
    filename = f"{found.model}-{found.tag}.gguf"
    from provender._cache._fsops import fs_errors, place_open_file

    fd, real = open_blob(found)  # opened once: what is checked is what is placed
    try:
        check_open_blob(found, fd)  # refused before anything is written
        # A staging folder of the cache's own (crash-safe, cleaned up) holding MODEL-TAG.gguf:
        # the blob's inode linked there (or a clone or copy of the open file), then imported from
        # there, hard-linked again on the same filesystem, so the entry shares the blob's bytes.
        with cm.store.staging() as stage:
            stage.mkdir()
            with fs_errors(cm.cache_dir, found.size):
                how = place_open_file(fd, real, str(stage / filename), "copy" if link_mode == "copy" else "auto")
            if how == "changed":
                raise BlobMismatchError(
                    f"Ollama blob {found.blob} was replaced while it was being imported (by another file or a "
                    f"link): refusing to import {found.name}; nothing was imported"
                )
            entry = cm.import_model(
                stage,
                target,
                link_mode="auto",
                replace=replace,
                pin=pin,
                ollama_model=found.name,
                ollama_digest=f"sha256:{found.digest}",
            )
    finally:
        os.close(fd)
    _record_digest(entry, filename, found.digest)
    logger.info("imported %s from Ollama as %s (%s)", found.name, entry.name, entry.model_path)
    return entry


def _record_digest(entry: CacheEntry, filename: str, digest: str) -> None:
    """Write the verified sha256 into the entry's manifest, so `verify` checks it from now on."""
    from provender._cache._repair import MANIFEST

    path = entry.path / MANIFEST
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
        info = manifest["files"][filename]
        info["sha256"] = digest
        tmp = path.with_suffix(".ollama-tmp")
        tmp.write_text(json.dumps(manifest, indent=1, default=str))
        os.replace(tmp, path)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # verify learns the digest itself then
        logger.warning("could not record the sha256 of %s in its manifest: %s", entry.name, exc)
