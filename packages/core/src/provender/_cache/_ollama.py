"""Bring models Ollama has pulled into the shared cache, without copying them.

Ollama keeps a registry-style store (``$OLLAMA_MODELS``, else ``~/.ollama/models``)::

    manifests/registry.ollama.ai/library/llama3.2/1b    JSON: config + layers
    blobs/sha256-<hex>                                   content, named by its sha256

The layer of media type ``application/vnd.ollama.image.model`` is the GGUF file that
llama.cpp runs. `import_from_ollama` checks that blob against the manifest (size and
sha256: a corrupted blob is refused before anything is written), then places it in a new
entry without copying: a hard link to the same inode (a copy-on-write clone on
filesystems that have them; a copy only across filesystems, or when asked).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provender._cache._gguf import is_gguf
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
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CacheError(f"Ollama manifest {manifest_path} is unreadable: {exc}") from None
    models = [item for item in layers if item.get("mediaType") == MODEL_MEDIA_TYPE]
    if len(models) != 1:
        raise CacheError(
            f"Ollama manifest {manifest_path} has {len(models)} model layers ({MODEL_MEDIA_TYPE}); expected one"
        )
    layer = models[0]
    match = _DIGEST.fullmatch(str(layer.get("digest", "")))
    size = layer.get("size")
    if match is None or not isinstance(size, int) or size < 0:
        raise CacheError(f"Ollama manifest {manifest_path}: the model layer has no valid sha256 digest and size")
    digest = match.group(1)
    blobs = store / "blobs"
    blob = next((p for p in (blobs / f"sha256-{digest}", blobs / f"sha256:{digest}") if p.exists()), None)
    if blob is None:
        raise SourceNotFoundError(blobs / f"sha256-{digest}")
    return OllamaModel(
        name=shown,
        manifest=manifest_path,
        blob=blob,
        digest=digest,
        size=size,
        layers=tuple(str(item.get("mediaType")) for item in layers),
    )


def check_blob(found: OllamaModel, path: Path | None = None) -> None:
    """Refuse a blob whose size or sha256 differ from the manifest's, or that is not a GGUF file.

    `path` is the file to hash (default: the blob itself; a link to it or a copy of it).
    """
    path = path or found.blob
    if path.is_symlink() or not path.is_file():
        raise BlobMismatchError(f"{found.blob} is not a regular file; refusing to import {found.name}")
    actual_size = path.stat().st_size
    if actual_size != found.size:
        raise BlobMismatchError(
            f"Ollama blob {found.blob} is {actual_size} bytes, its manifest says {found.size}: "
            f"refusing to import a corrupted model (run `ollama pull {found.name}` again)"
        )
    with open(path, "rb") as f:
        actual = hashlib.file_digest(f, "sha256").hexdigest()
    if actual != found.digest:
        raise BlobMismatchError(
            f"Ollama blob {found.blob} does not match its sha256 in the manifest (got {actual[:12]}..., "
            f"expected {found.digest[:12]}...): refusing to import a corrupted model "
            f"(run `ollama pull {found.name}` again)"
        )
    if not is_gguf(path):
        raise BlobMismatchError(f"the model layer of {found.name} ({found.blob}) is not a GGUF file")


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
    check_blob(found)  # refused before anything is written
    with tempfile.TemporaryDirectory(prefix="provender-ollama-") as tmp:
        # A directory holding a link named MODEL-TAG.gguf: the cache follows such links to the
        # file itself and hard-links that (or clones it), so the entry shares the blob's bytes.
        os.symlink(found.blob.resolve(), Path(tmp) / filename)
        entry = cm.import_model(
            Path(tmp),
            target,
            link_mode=link_mode,
            replace=replace,
            pin=pin,
            ollama_model=found.name,
            ollama_digest=f"sha256:{found.digest}",
        )
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
