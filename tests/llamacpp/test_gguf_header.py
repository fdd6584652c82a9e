"""provender's own GGUF header reader (the core reads headers without llama.cpp or the gguf package)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from helpers import run_cli
from provender._cache._gguf import gguf_architecture, is_gguf, read_gguf_metadata
from provender.errors import GGUFFormatError


def test_header_matches_the_gguf_package(tiny_gguf: Path, minilm_gguf: Path) -> None:
    from gguf import GGUFReader

    for path in (tiny_gguf, minilm_gguf):
        ours = read_gguf_metadata(path, max_array=10**6)
        reader = GGUFReader(path)
        for key, field in reader.fields.items():
            if key.startswith("GGUF."):
                continue
            assert ours[key] == field.contents(), key


def test_large_arrays_are_skipped_and_reading_can_stop_early(tiny_gguf: Path) -> None:
    meta = read_gguf_metadata(tiny_gguf)
    assert meta["general.architecture"] == "llama" and meta["llama.context_length"] == 2048
    assert meta["tokenizer.ggml.tokens"].startswith("<array of ")
    assert "<|im_start|>" in meta["tokenizer.chat_template"]
    assert list(read_gguf_metadata(tiny_gguf, until="general.architecture")) == ["GGUF.version", "general.architecture"]
    assert gguf_architecture(tiny_gguf) == "llama"


def test_not_a_gguf(tiny_gguf: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(tiny_gguf.read_bytes()[:200])
    assert is_gguf(truncated)  # the magic is there...
    with pytest.raises(GGUFFormatError):
        read_gguf_metadata(truncated)  # ...the header is not
    assert gguf_architecture(truncated) == "llama"  # a claim reads only up to the architecture
    truncated.write_bytes(tiny_gguf.read_bytes()[:40])
    assert gguf_architecture(truncated) is None
    other = tmp_path / "x.gguf"
    other.write_bytes(b"GGML" + b"\0" * 100)
    assert not is_gguf(other) and gguf_architecture(other) is None
    assert not is_gguf(tmp_path / "missing.gguf") and not is_gguf(tmp_path)


def _hostile_gguf(path: Path) -> Path:
    """A GGUF header whose first key nests arrays 100,000 deep (the reader recursed once per level)."""
    key = b"evil.nested"
    nested = struct.pack("<I", 9) + struct.pack("<IQ", 9, 1) * 99_999 + struct.pack("<IQI", 4, 1, 7)
    arch = struct.pack("<Q", 20) + b"general.architecture" + struct.pack("<IQ", 8, 5) + b"llama"
    body = struct.pack("<Q", len(key)) + key + nested + arch
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 2) + body)
    return path


def test_a_hostile_header_is_one_clear_error_everywhere(tmp_path: Path) -> None:
    """Issue 19 item 8: the claim, the provider and the CLI each say what is wrong, naming the file."""
    from provender import ModelNotFoundError
    from provender_llamacpp import LlamaCppProvider

    evil = _hostile_gguf(tmp_path / "evil.gguf")
    with pytest.raises(ModelNotFoundError, match="arrays nested more than"):  # the server answers 404 with it
        LlamaCppProvider(str(evil)).generate("hi", max_tokens=1)
    env = {"PROVENDER_CACHE__DIR": str(tmp_path / "cache"), "PROVENDER_QUIET_PLUGIN_ERRORS": "1"}
    assert run_cli("cache", "import", str(evil), "--name", "me/evil", env=env).returncode == 0
    listed = run_cli("models", "--json", env=env)  # the claim hook reads the header: was "unexpected RecursionError"
    assert listed.returncode == 0 and listed.stderr == "", listed
    out = run_cli("generate", "-m", f"llamacpp:{evil}", "hi", "--no-server", env=env)
    assert out.returncode == 1 and f"{evil} is not a readable GGUF file: arrays nested" in out.stderr, out
    assert len(out.stderr.splitlines()) == 1 and "unexpected" not in out.stderr
