"""Is a model's weights file whole? A cheap check, run before a load makes room in memory.

A download or an import cut short leaves a file whose header promises more bytes than the
file has. Loading it fails only after the pool has unloaded other models to make room for
it; reading the header first (kilobytes, whatever the model's size) lets that load fail
before anything is evicted. Two formats are read, with the standard library alone:

- safetensors: an 8-byte header length, a JSON header, then every tensor's
  ``data_offsets``; the file must hold the header and the largest end offset.
- GGUF: the key/value metadata, then each tensor's shape, type and offset; the file must
  reach every tensor's start, and its end for the types whose size is exact here (F32, F16,
  BF16, F64, the integer types, Q4_0, Q8_0). Other quantisations are checked by offset.

`incomplete_weights` never raises for a file it cannot judge: it only reports what it can prove.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from provender._cache._gguf import GGUF_MAGIC, _Header, split_part
from provender.errors import GGUFFormatError

_MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # safetensors' own limit
_MAX_TENSORS = 1 << 24
# ggml type -> (elements per block, bytes per block): only the types whose layout is certain
_GGML_SIZES = {0: (1, 4), 1: (1, 2), 2: (32, 18), 8: (32, 34), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8)}
_GGML_SIZES |= {28: (1, 8), 30: (1, 2)}
_MAX_FILES = 256


UNREADABLE = "not a readable GGUF file: "  # the GGUF reader's own words for a header it cannot read


def incomplete_weights(path: str | os.PathLike[str]) -> str | None:
    """Why the weights at `path` (a file or a model directory) are not whole, or None.

    Checks every ``*.safetensors`` and ``*.gguf`` file of a directory (two levels deep),
    or the file itself and, for a split GGUF, its sibling parts.
    """
    for file in _weight_files(Path(path)):
        try:
            problem = _check_file(file)
        except OSError:
            continue  # unreadable: the loader says so in its own words
        if problem is not None and problem.startswith(UNREADABLE):  # hostile or damaged, as the GGUF reader says
            return f"{file} is {problem}"
        if problem is not None:
            return f"{file.name} is incomplete: {problem}"
    return None


def _weight_files(path: Path) -> list[Path]:
    if path.is_file():
        files = [path]
        if split_part(path.name) is not None:
            stem = path.name[: -len("-00001-of-00001.gguf")]
            files += sorted(p for p in path.parent.glob(f"{stem}-*-of-*.gguf") if p != path)
        return files[:_MAX_FILES]
    if not path.is_dir():
        return []
    found: list[Path] = []
    for pattern in ("*.safetensors", "*.gguf", "*/*.safetensors", "*/*.gguf"):
        found += sorted(path.glob(pattern))
    return found[:_MAX_FILES]


def _check_file(file: Path) -> str | None:
    if file.name.endswith(".safetensors"):
        return _check_safetensors(file)
    return _check_gguf(file)  # by its magic: a GGUF given by path need not be named .gguf


def _check_safetensors(file: Path) -> str | None:
    with open(file, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            return f"{size} bytes, shorter than a safetensors header"
        (n,) = struct.unpack("<Q", head)
        if n > _MAX_SAFETENSORS_HEADER:
            return None  # not a header safetensors itself would read: its loader says why
        if 8 + n > size:
            return f"its header needs {8 + n} bytes, the file has {size}"
        try:
            header = json.loads(f.read(n))
        except (ValueError, RecursionError):
            return None
    if not isinstance(header, dict):
        return None
    end = 0
    for name, info in header.items():
        if name == "__metadata__" or not isinstance(info, dict):
            continue
        offsets = info.get("data_offsets")
        if isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets):
            end = max(end, offsets[1])
    need = 8 + n + end
    return f"its tensors need {need} bytes, the file has {size}" if need > size else None


def _check_gguf(file: Path) -> str | None:
    with open(file, "rb") as f:
        if f.read(4) != GGUF_MAGIC:
            return None
        header = _Header(f, max_array=0)
        try:
            return _check_gguf_header(header)
        except GGUFFormatError as exc:
            return f"{UNREADABLE}{exc}"
        except (struct.error, OverflowError, ValueError) as exc:
            return f"{UNREADABLE}{type(exc).__name__}"


def _check_gguf_header(header: _Header) -> str | None:
    (version,) = struct.unpack("<I", header.read(4))
    if version not in (1, 2, 3):
        return None
    header.version = version
    tensors, count = header.length(), header.length()
    alignment = 32
    for _ in range(count):
        key = header.string()
        (vtype,) = struct.unpack("<I", header.read(4))
        value = header.value(vtype)
        if key == "general.alignment" and isinstance(value, int) and value > 0:
            alignment = value
    if tensors > _MAX_TENSORS:
        return None
    header.check_fits(tensors, 4 + 4 + 4 + 8, "the tensor table")
    ends: list[tuple[int, str]] = []
    for _ in range(tensors):
        name = header.string()
        (n_dims,) = struct.unpack("<I", header.read(4))
        if n_dims > 8:
            return None
        dims = [header.length() for _ in range(n_dims)]
        (ggml_type,) = struct.unpack("<I", header.read(4))
        (offset,) = struct.unpack("<Q", header.read(8))
        ends.append((offset + _tensor_bytes(ggml_type, dims), name))
    data = -(-header.f.tell() // alignment) * alignment
    for end, name in ends:
        if data + end > header.size:
            return f"tensor {name!r} needs {data + end} bytes, the file has {header.size}"
    return None


def _tensor_bytes(ggml_type: int, dims: list[int]) -> int:
    known = _GGML_SIZES.get(ggml_type)
    if known is None:
        return 0  # a layout not known here: its start is checked, not its end
    elements = 1
    for d in dims:
        elements *= d
    block, nbytes = known
    return -(-elements // block) * nbytes
