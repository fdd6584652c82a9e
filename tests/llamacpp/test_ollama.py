"""`provender cache import --from-ollama`: an Ollama-layout store built here, its blob linked, never copied."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from helpers import run_cli
from provender import CacheManager, ModelNotFoundError, SourceNotFoundError
from provender._cache._ollama import import_from_ollama, parse_ollama_name
from provender.errors import BlobMismatchError
from provender_llamacpp import LlamaCppProvider


def add_blob(store: Path, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    (store / "blobs").mkdir(parents=True, exist_ok=True)
    (store / "blobs" / f"sha256-{digest}").write_bytes(data)
    return digest


def add_model(store: Path, gguf: Path, name: str = "tiny", tag: str = "latest", *, namespace: str = "library") -> Path:
    """A model as `ollama pull` leaves it: blobs named by sha256, a manifest naming them by media type."""
    model = add_blob(store, gguf.read_bytes())
    template = add_blob(store, b"{{ .Prompt }}")
    params = add_blob(store, json.dumps({"stop": ["<|im_end|>"]}).encode())
    config = add_blob(store, json.dumps({"model_format": "gguf", "model_family": "llama"}).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": f"sha256:{config}"},
        "layers": [
            {
                "mediaType": "application/vnd.ollama.image.model",
                "digest": f"sha256:{model}",
                "size": gguf.stat().st_size,
            },
            {"mediaType": "application/vnd.ollama.image.template", "digest": f"sha256:{template}", "size": 13},
            {"mediaType": "application/vnd.ollama.image.params", "digest": f"sha256:{params}", "size": 24},
        ],
    }
    path = store / "manifests" / "registry.ollama.ai" / namespace / name / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return store / "blobs" / f"sha256-{model}"


@pytest.fixture
def store(tmp_path: Path, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "ollama" / "models"
    add_model(root, tiny_gguf, "tiny", "latest")
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    return root


def test_import_links_the_blob_without_copying(store: Path, tiny_gguf: Path) -> None:
    blob = add_model(store, tiny_gguf, "tiny", "latest")  # the fixture's model: its blob path
    entry = import_from_ollama(CacheManager(), "tiny")
    assert entry.name == "ollama/tiny-latest"
    assert sorted(p.name for p in entry.model_path.glob("*.gguf")) == ["tiny-latest.gguf"]
    cached = entry.model_path / "tiny-latest.gguf"
    assert not cached.is_symlink()  # a file of the cache's own, not a pointer into Ollama's store
    assert os.stat(cached).st_ino == os.stat(blob).st_ino  # the same inode: no byte was copied
    assert os.stat(blob).st_nlink == 2
    assert entry.size == tiny_gguf.stat().st_size
    assert entry.metadata["ollama_model"] == "tiny:latest"
    assert entry.metadata["ollama_digest"] == f"sha256:{hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()}"
    out = LlamaCppProvider("ollama/tiny-latest").generate("Hello", max_tokens=10)
    assert out == LlamaCppProvider(str(tiny_gguf)).generate("Hello", max_tokens=10)


def test_cli_import_ls_generate_verify(store: Path, tiny_gguf: Path) -> None:
    out = run_cli("cache", "import", "--from-ollama", "tiny:latest", "--json")
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)
    assert row["name"] == "ollama/tiny-latest"
    rows = json.loads(run_cli("cache", "ls", "--json").stdout)
    assert [(r["name"], r["gguf_files"]) for r in rows] == [("ollama/tiny-latest", ["tiny-latest.gguf"])]
    assert "llamacpp" in rows[0]["providers"]
    gen = run_cli("generate", "-m", "ollama/tiny-latest", "--max-tokens", "5", "Hello")  # claimed by content
    assert gen.returncode == 0 and gen.stdout.strip(), gen.stderr
    assert run_cli("cache", "verify").returncode == 0
    named = run_cli("cache", "import", "--from-ollama", "tiny", "--name", "me/tiny", "--pin")
    assert named.returncode == 0, named.stderr
    assert {r["name"]: r["pinned"] for r in json.loads(run_cli("cache", "ls", "--json").stdout)}["me/tiny"]


def test_corrupted_blob_is_refused(store: Path, tiny_gguf: Path) -> None:
    blob = add_model(store, tiny_gguf, "tiny", "latest")
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    blob.write_bytes(bytes(data))
    with pytest.raises(BlobMismatchError, match="sha256"):
        import_from_ollama(CacheManager(), "tiny")
    assert CacheManager().entries() == []
    out = run_cli("cache", "import", "--from-ollama", "tiny")
    assert out.returncode == 1 and "refusing" in out.stderr and "Traceback" not in out.stderr
    blob.write_bytes(bytes(data[:-10]))  # truncated
    with pytest.raises(BlobMismatchError, match="bytes"):
        import_from_ollama(CacheManager(), "tiny")


def test_corruption_after_import_is_found_by_verify(store: Path, tiny_gguf: Path) -> None:
    blob = add_model(store, tiny_gguf, "tiny", "latest")
    import_from_ollama(CacheManager(), "tiny")
    with open(blob, "r+b") as f:  # the blob and the cache's file are one inode: verify checks Ollama's digest
        f.seek(1000)
        f.write(b"\xff\xfe")
    issues = CacheManager().verify()
    assert [i.name for i in issues] == ["ollama/tiny-latest"] and "sha256" in issues[0].problem


def test_missing_model_blob_and_bad_names(store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelNotFoundError, match="ollama pull"):
        import_from_ollama(CacheManager(), "llama3.2:1b")
    out = run_cli("cache", "import", "--from-ollama", "llama3.2:1b")
    assert out.returncode == 1 and "ollama pull" in out.stderr and "Traceback" not in out.stderr
    for blob in (store / "blobs").glob("sha256-*"):
        blob.unlink()
    with pytest.raises(SourceNotFoundError):
        import_from_ollama(CacheManager(), "tiny")
    bad = run_cli("cache", "import", "--from-ollama", "../../etc:passwd")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    both = run_cli("cache", "import", str(tmp_path), "--from-ollama", "tiny")
    assert both.returncode == 2 and "PATH" in both.stderr
    neither = run_cli("cache", "import")
    assert neither.returncode == 2 and "--name" in neither.stderr


def test_default_store_is_home_dot_ollama(tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    add_model(tmp_path / "home" / ".ollama" / "models", tiny_gguf, "qwen", "0.5b", namespace="someone")
    entry = import_from_ollama(CacheManager(), "someone/qwen:0.5b")
    assert entry.name == "ollama/qwen-0.5b"


def test_hub_models_pulled_by_ollama(tiny_gguf: Path, tmp_path: Path) -> None:
    root = tmp_path / "store"
    blob = add_model(root, tiny_gguf, "tiny-GGUF", "Q8_0", namespace="org")
    manifest = root / "manifests" / "registry.ollama.ai" / "org" / "tiny-GGUF" / "Q8_0"
    target = root / "manifests" / "hf.co" / "org" / "tiny-GGUF" / "Q8_0"
    target.parent.mkdir(parents=True)
    shutil.move(manifest, target)
    entry = import_from_ollama(CacheManager(), "hf.co/org/tiny-GGUF:Q8_0", models_dir=root)
    assert entry.name == "ollama/tiny-GGUF-Q8_0"
    assert os.path.samefile(entry.model_path / "tiny-GGUF-Q8_0.gguf", blob)


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("llama3.2", ("registry.ollama.ai", "library", "llama3.2", "latest")),
        ("llama3.2:1b", ("registry.ollama.ai", "library", "llama3.2", "1b")),
        ("me/model:q4", ("registry.ollama.ai", "me", "model", "q4")),
        ("hf.co/org/repo:Q4_K_M", ("hf.co", "org", "repo", "Q4_K_M")),
    ],
)
def test_parse_ollama_name(name: str, parsed: tuple[str, str, str, str]) -> None:
    assert parse_ollama_name(name) == parsed
