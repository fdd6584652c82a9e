"""Issue 19 items 7 and 8: hostile files met by the cache, as real files and processes.

- ``cache import --from-ollama`` hashes and places the same open file: a blob swapped for a
  link (or for another file) between the hash and the link is refused, never imported; a
  blob that leads outside Ollama's models dir is refused.
- A deeply nested Ollama manifest, and GGUF headers that nest arrays without end or whose
  counts and lengths overflow a seek, are one clear error naming the file, not a
  RecursionError or an OverflowError.

The GGUF files here are written byte by byte (the core reads them without llama.cpp).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers import run_cli
from provender import CacheManager
from provender._cache._gguf import gguf_architecture, read_gguf_metadata
from provender._cache._ollama import find_ollama_model, import_from_ollama
from provender.errors import BlobMismatchError, CacheError, GGUFFormatError

# -- GGUF files, byte by byte ----------------------------------------------------------------

STRING, ARRAY, UINT32, UINT64 = 8, 9, 4, 10


def _s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def kv_string(key: str, value: str) -> bytes:
    return _s(key) + struct.pack("<I", STRING) + _s(value)


def kv_nested(key: str, depth: int) -> bytes:
    """An array of an array of ... (`depth` levels) of one uint32."""
    return (
        _s(key)
        + struct.pack("<I", ARRAY)
        + struct.pack("<IQ", ARRAY, 1) * (depth - 1)
        + struct.pack("<IQI", UINT32, 1, 7)
    )


def gguf(*kvs: bytes, padding: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs) + b"\0" * padding


ARCH = kv_string("general.architecture", "llama")
HOSTILE = {
    # arrays nested a hundred thousand deep: the reader recursed once per level (RecursionError)
    "nested": kv_nested("evil.nested", 100_000),
    # 2**63 uint64 items, skipped as a vocabulary is: a seek of 2**66 bytes (OverflowError)
    "huge-array": _s("evil.array") + struct.pack("<I", ARRAY) + struct.pack("<IQ", UINT64, 2**63),
    # 65 strings (more than are kept), the first 2**64 - 1 bytes long: a seek that overflows
    "huge-string": _s("evil.strings")
    + struct.pack("<I", ARRAY)
    + struct.pack("<IQ", STRING, 65)
    + struct.pack("<Q", 2**64 - 1),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_a_hostile_gguf_header_is_one_error_naming_the_file(tmp_path: Path, kind: str) -> None:
    first = tmp_path / f"{kind}-first.gguf"  # before the architecture: a claim meets it too
    first.write_bytes(gguf(HOSTILE[kind], ARCH, padding=1024))
    with pytest.raises(GGUFFormatError) as info:  # was RecursionError / OverflowError
        read_gguf_metadata(first)
    message = str(info.value)
    assert str(first) in message and "\n" not in message and len(message) < 300, message
    assert gguf_architecture(first) is None  # the claim hook: not a readable GGUF, not a crash
    after = tmp_path / f"{kind}-after.gguf"  # after it: a claim stops before, a full read refuses
    after.write_bytes(gguf(ARCH, HOSTILE[kind], padding=1024))
    assert gguf_architecture(after) == "llama"
    with pytest.raises(GGUFFormatError, match="not a readable GGUF"):
        read_gguf_metadata(after)


def test_modest_nesting_and_counts_still_read(tmp_path: Path) -> None:
    path = tmp_path / "ok.gguf"
    many = (
        _s("tokens") + struct.pack("<I", ARRAY) + struct.pack("<IQ", UINT32, 1000) + struct.pack("<1000I", *range(1000))
    )
    path.write_bytes(gguf(ARCH, kv_nested("two.levels", 2), many))
    meta = read_gguf_metadata(path)
    assert meta["general.architecture"] == "llama"
    assert meta["two.levels"] == [[7]] and meta["tokens"] == "<array of 1000>"
    assert read_gguf_metadata(path, max_array=1000)["tokens"] == list(range(1000))


# -- Ollama's store ----------------------------------------------------------------------------

MODEL = gguf(ARCH, kv_string("general.name", "tiny"), padding=4096)  # a valid GGUF header, no tensors
PRIVATE = gguf(ARCH, kv_string("general.name", "private"), padding=4096)  # a file outside the store


def add_model(store: Path, data: bytes = MODEL, name: str = "tiny", *, manifest: Any = None) -> Path:
    """A model as `ollama pull` leaves it: its GGUF blob named by sha256, and a manifest naming it."""
    digest = hashlib.sha256(data).hexdigest()
    blob = store / "blobs" / f"sha256-{digest}"
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    layer = {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}", "size": len(data)}
    path = store / "manifests" / "registry.ollama.ai" / "library" / name / "latest"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest if manifest is not None else {"schemaVersion": 2, "layers": [layer]}))
    return blob


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "ollama" / "models"
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    monkeypatch.setenv("PROVENDER_CACHE__DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PROVENDER_QUIET_PLUGIN_ERRORS", "1")  # tests/plugins/provender-broken is installed
    return root


def cached_bytes(cm: CacheManager) -> list[bytes]:
    """The content of every file in the cache's entries."""
    return [p.read_bytes() for p in cm.objects_dir.rglob("*") if p.is_file() and not p.is_symlink()]


def swap_after_hashing(monkeypatch: pytest.MonkeyPatch, swap: Callable[[], None]) -> list[str]:
    """Run `swap` (a real change on disk) right after the blob is hashed, before it is placed."""
    real = hashlib.file_digest
    done: list[str] = []

    def digest_then_swap(fileobj: Any, digest: Any, /) -> Any:
        result = real(fileobj, digest)
        if not done:
            swap()
            done.append("swapped")
        return result

    monkeypatch.setattr(hashlib, "file_digest", digest_then_swap)
    return done


def test_a_blob_swapped_for_a_link_after_hashing_is_refused(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = add_model(store)
    private = tmp_path / "private" / "secret.gguf"  # the user's file, outside Ollama's store
    private.parent.mkdir()
    private.write_bytes(PRIVATE)
    planted = blob.with_name("planted")

    def plant_link() -> None:  # atomically: the blob's name now leads to the private file
        os.symlink(private, planted)
        os.replace(planted, blob)

    swapped = swap_after_hashing(monkeypatch, plant_link)
    cm = CacheManager()
    with pytest.raises(BlobMismatchError, match="replaced while it was being imported"):
        import_from_ollama(cm, "tiny")  # the old code imported the private file under the blob's digest
    assert swapped and blob.is_symlink()  # the swap really happened between the two steps
    assert PRIVATE not in cached_bytes(cm) and cm.entries() == []
    assert list((cm.cache_dir / "tmp").glob("*/*")) == []  # no staged file left behind


def test_a_blob_replaced_by_another_file_after_hashing_is_refused(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob = add_model(store)
    other = blob.with_name("other")
    other.write_bytes(PRIVATE)
    swap_after_hashing(monkeypatch, lambda: os.replace(other, blob))
    cm = CacheManager()
    with pytest.raises(BlobMismatchError, match="replaced"):
        import_from_ollama(cm, "tiny")
    assert PRIVATE not in cached_bytes(cm) and cm.entries() == []


def test_a_copy_is_made_from_the_checked_file(store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--copy reads the open file: the swap after hashing changes nothing of what is cached."""
    blob = add_model(store)
    other = blob.with_name("other")
    other.write_bytes(PRIVATE)
    swap_after_hashing(monkeypatch, lambda: os.replace(other, blob))
    cm = CacheManager()
    entry = import_from_ollama(cm, "tiny", link_mode="copy")
    assert (entry.model_path / "tiny-latest.gguf").read_bytes() == MODEL
    assert blob.read_bytes() == PRIVATE and PRIVATE not in cached_bytes(cm)


def test_a_racing_process_never_gets_an_outside_file_in(store: Path, tmp_path: Path) -> None:
    """A thread swaps the blob for a link to a private file and back, as fast as it can, while
    the import runs again and again: each import is refused or holds the blob's own bytes."""
    blob = add_model(store)
    keep = blob.with_name("keep")
    os.link(blob, keep)
    private = tmp_path / "secret.gguf"
    private.write_bytes(PRIVATE)
    link = blob.with_name("link")
    os.symlink(private, link)
    stop = threading.Event()

    def race() -> None:
        spare_link, spare_file = blob.with_name("l2"), blob.with_name("k2")
        while not stop.is_set():
            os.link(link, spare_link, follow_symlinks=False)
            os.replace(spare_link, blob)  # the blob is now a link to the private file
            os.link(keep, spare_file)
            os.replace(spare_file, blob)  # and the blob again

    racer = threading.Thread(target=race, daemon=True)
    racer.start()
    outcomes: dict[str, int] = {}
    try:
        for i in range(40):
            cm = CacheManager()
            try:
                entry = import_from_ollama(cm, "tiny", as_name=f"ollama/tiny-{i}")
            except (BlobMismatchError, CacheError) as exc:
                outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
            else:
                assert (entry.model_path / "tiny-latest.gguf").read_bytes() == MODEL
                outcomes["imported"] = outcomes.get("imported", 0) + 1
            assert PRIVATE not in cached_bytes(cm), outcomes
    finally:
        stop.set()
        racer.join()


def test_a_blob_that_leads_outside_the_store_is_refused(store: Path, tmp_path: Path) -> None:
    blob = add_model(store)
    private = tmp_path / "elsewhere.gguf"
    private.write_bytes(MODEL)  # even with the right bytes: it is not Ollama's file
    blob.unlink()
    blob.symlink_to(private)
    with pytest.raises(BlobMismatchError, match="leads outside Ollama's models dir"):
        import_from_ollama(CacheManager(), "tiny")
    blob.unlink()
    blob.symlink_to(tmp_path / "missing")  # a dangling link: refused by name too, not "no such blob"
    with pytest.raises(BlobMismatchError, match="leads outside"):
        import_from_ollama(CacheManager(), "tiny")


def test_links_inside_the_store_and_a_linked_store_are_followed(store: Path, tmp_path: Path) -> None:
    blob = add_model(store)
    inside = store / "elsewhere-in-store"
    os.replace(blob, inside)
    blob.symlink_to(os.path.relpath(inside, blob.parent))  # stays inside: Ollama's file still
    entry = import_from_ollama(CacheManager(), "tiny")
    assert os.stat(entry.model_path / "tiny-latest.gguf").st_ino == os.stat(inside).st_ino
    # a blobs folder moved to another disk and linked back, as a user sets it up
    moved = tmp_path / "big-disk" / "blobs"
    moved.parent.mkdir()
    add_model(store, PRIVATE, "other")
    os.replace(store / "blobs", moved)
    (store / "blobs").symlink_to(moved)
    entry = import_from_ollama(CacheManager(), "other")
    assert (entry.model_path / "other-latest.gguf").read_bytes() == PRIVATE


def test_a_fifo_blob_is_refused_without_hanging(store: Path) -> None:
    blob = add_model(store)
    blob.unlink()
    os.mkfifo(blob)
    out = run_cli("cache", "import", "--from-ollama", "tiny", timeout=30)
    assert out.returncode == 1 and "not a regular file" in out.stderr, out
    assert len(out.stderr.splitlines()) == 1


def test_a_deeply_nested_manifest_is_one_error(store: Path) -> None:
    add_model(store, manifest={"layers": []})
    manifest = store / "manifests" / "registry.ollama.ai" / "library" / "tiny" / "latest"
    manifest.write_text('{"layers": ' + "[" * 100_000 + "]" * 100_000 + "}")  # was RecursionError
    with pytest.raises(CacheError, match="nested too deeply"):
        find_ollama_model("tiny")
    out = run_cli("cache", "import", "--from-ollama", "tiny")
    assert out.returncode == 1, out
    assert out.stderr.startswith(f"Error: Ollama manifest {manifest} is unreadable") and "unexpected" not in out.stderr
    assert len(out.stderr.splitlines()) == 1
    # nested values where strings belong: refused by shape, not by a repr that recurses
    deep = "[" * 900 + "]" * 900
    layer = '{"mediaType": "application/vnd.ollama.image.model", "digest": ' + deep + ', "size": 1}'
    manifest.write_text('{"layers": [' + layer + ', {"mediaType": ' + deep + "}]}")
    with pytest.raises(CacheError, match="no valid sha256 digest"):
        find_ollama_model("tiny")
