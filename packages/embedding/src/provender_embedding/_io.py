"""Reading texts for `provender embed -i` and writing vectors for `-o`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from provender_embedding.errors import InputError

OUTPUT_FORMATS = (".jsonl", ".npy", ".parquet")
PARQUET_HINT = 'pip install "provender-embedding[parquet]"'


def read_items(path: Path) -> list[dict[str, Any]]:
    """Items ``{"id", "label", "text", "metadata"}`` from a file.

    ``.jsonl`` (or a file whose first line starts with ``{``): one JSON object per line with
    ``text`` (or ``content``) and optional ``id`` and ``metadata``. Anything else: one text
    per line. ``id`` is None where the file gives none (a collection then derives it from
    the content); ``label`` is the id, else the line number, for output files. Blank
    lines are skipped in both.
    """
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"input file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read input file {str(path)!r}: {exc}") from None
    lines = raw.splitlines()
    first = next((line for line in lines if line.strip()), "")
    as_jsonl = path.suffix == ".jsonl" or first.lstrip().startswith("{")
    items: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if not as_jsonl:
            items.append({"id": None, "label": str(number), "text": line, "metadata": None})
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise InputError(f"{path}:{number}: expected a JSON object with 'text', got {type(obj).__name__}")
        text = obj.get("text", obj.get("content"))
        if not isinstance(text, str):
            raise InputError(f"{path}:{number}: the object has no string 'text' field")
        item_id = obj.get("id")
        if item_id is not None and (not isinstance(item_id, (str, int)) or isinstance(item_id, bool) or item_id == ""):
            raise InputError(f"{path}:{number}: 'id' must be a non-empty string or an integer")
        meta = obj.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise InputError(f"{path}:{number}: 'metadata' must be a JSON object")
        given = str(item_id) if item_id is not None else None
        items.append({"id": given, "label": given or str(number), "text": text, "metadata": meta})
    return items


def write_vectors(path: Path, ids: list[str], vectors: np.ndarray) -> None:
    """Write to ``.jsonl`` (id + embedding per line), ``.npy`` (the matrix) or ``.parquet``.

    Written to a temporary file first and renamed, so an existing file is only ever
    replaced by a complete one.
    """
    suffix = path.suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        raise InputError(f"output {str(path)!r}: use a {', '.join(OUTPUT_FORMATS)} file")
    tmp = path.with_name(f".{path.name}.partial")
    try:
        if suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, vectors.astype(np.float32))
        elif suffix == ".jsonl":
            with open(tmp, "w", encoding="utf-8") as f:
                for item_id, vector in zip(ids, vectors, strict=True):
                    f.write(json.dumps({"id": item_id, "embedding": [round(float(x), 7) for x in vector]}) + "\n")
        else:
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ImportError:
                raise ImportError(f"writing .parquet needs pyarrow: {PARQUET_HINT}") from None
            table = pa.table(
                {"id": ids, "embedding": pa.array(list(vectors.astype(np.float32)), type=pa.list_(pa.float32()))}
            )
            pq.write_table(table, tmp)
        tmp.replace(path)
    except OSError as exc:  # a full disk, no permission, the folder gone meanwhile: one line, the file named
        from provender.errors import ProvenderError

        raise ProvenderError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
