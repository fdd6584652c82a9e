"""provender's own GGUF header reader (the core reads headers without llama.cpp or the gguf package)."""

from __future__ import annotations

from pathlib import Path

import pytest

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
