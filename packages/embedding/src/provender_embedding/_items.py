"""Items given to `Collection.add_many`, checked and normalised before anything is embedded or written."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from provender_embedding.errors import CollectionError


@dataclass(frozen=True)
class Hit:
    """One result of `Collection.similar`: cosine ``score`` in [-1, 1], higher is closer."""

    id: str
    score: float
    content: str | None
    metadata: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "content": self.content, "metadata": self.metadata}


@dataclass
class AddResult:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    ids: list[str] = field(default_factory=list)


@dataclass
class Item:
    id: str | None
    text: str | None
    metadata: dict[str, Any] | None
    vector: np.ndarray | None  # unit length, float32, when the caller gave an embedding
    digest: str = ""


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def vector_hash(text: str | None, vector: np.ndarray) -> str:
    """The hash of an item given with its embedding: its text (if any) and the vector's bytes."""
    h = hashlib.sha256(b"v\0" + (text or "").encode("utf-8") + b"\0")
    h.update(vector.tobytes())
    return h.hexdigest()


def content_id(digest: str, known: dict[str, str]) -> str:
    """The id of an item given without one: the first 16 hex digits of its content's sha256.

    The same text always gets the same id (stored once), and a different text never takes
    an existing item's id: if the short id is taken by other content, the whole hash is used.
    """
    short = digest[:16]
    return short if known.get(short, digest) == digest else digest


def unit_vector(value: Any, where: str) -> np.ndarray:
    """`value` (a sequence of numbers) as a unit float32 vector; one clear line if it is not one."""
    if type(value) is np.ndarray and value.dtype == np.float32 and value.ndim == 1 and value.size:
        squared = float(np.dot(value, value))  # NaN or infinite if any value is (or if it overflows)
        if 0.0 < squared < math.inf:  # the common case, checked in one pass: the same result as below
            unit: np.ndarray = value / np.float32(math.sqrt(squared))
            return unit
    try:
        vector = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        raise CollectionError(f"{where}: the embedding must be a sequence of numbers") from None
    if vector.ndim != 1 or vector.size == 0:
        raise CollectionError(f"{where}: the embedding must be one non-empty vector, got shape {vector.shape}")
    if not np.isfinite(vector).all():
        raise CollectionError(f"{where}: the embedding holds NaN or infinite values")
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:
        raise CollectionError(f"{where}: the embedding is all zeros (it has no direction to compare)")
    return (vector / norm).astype(np.float32)


def normalise_item(item: Any, n: int, embedding: Any = None, *, checked: bool = False) -> Item:
    """A text, ``(id, text)``, ``(id, text, metadata)`` or a dict with id/text/metadata/embedding.

    `embedding` is the item's row of ``embeddings=``; `checked`: it is already a unit float32 vector.
    """
    vector: Any = embedding
    item_id: Any
    text: Any
    meta: Any
    if isinstance(item, str):
        item_id, text, meta = None, item, None
    elif isinstance(item, dict):
        item_id, text, meta = item.get("id"), item.get("text", item.get("content")), item.get("metadata")
        if item.get("embedding") is not None:
            if embedding is not None:
                raise CollectionError(f"item {n}: an embedding in the item and in embeddings=; give one")
            vector = item["embedding"]
    elif isinstance(item, (tuple, list)) and len(item) in (2, 3):
        item_id, text, meta = item[0], item[1], item[2] if len(item) == 3 else None
    else:
        raise CollectionError(f"item {n}: expected (id, text), (id, text, metadata) or a dict, got {item!r:.60}")
    if isinstance(item_id, int) and not isinstance(item_id, bool):
        item_id = str(item_id)
    if item_id is not None and (not isinstance(item_id, str) or not item_id):
        raise CollectionError(f"item {n}: the id must be a non-empty string or None, got {item_id!r}")
    label = f"item {n}" + (f" ({item_id})" if item_id else "")
    if text is None and vector is None:
        raise CollectionError(f"{label}: the text must be a string (or give its embedding), got None")
    if text is not None and not isinstance(text, str):
        raise CollectionError(f"{label}: the text must be a string, got {type(text).__name__}")
    if meta is not None and not isinstance(meta, dict):
        raise CollectionError(f"{label}: metadata must be a JSON object")
    result = Item(item_id, text, meta, None)
    if vector is not None:
        result.vector = vector if checked and vector is embedding else unit_vector(vector, label)
        result.digest = vector_hash(text, result.vector)
    else:
        assert text is not None
        result.digest = content_hash(text)
    return result


def check_embeddings(embeddings: Any, count: int) -> np.ndarray | None:
    """``embeddings=`` of `add_many` as unit float32 rows, one per item (None if not given)."""
    if embeddings is None:
        return None
    try:
        rows = np.asarray(embeddings, dtype=np.float32)
    except (TypeError, ValueError):
        raise CollectionError("embeddings= must be one vector per item, all of one length") from None
    if rows.ndim != 2 or rows.shape[0] != count or rows.shape[1] == 0:
        raise CollectionError(f"embeddings= has shape {rows.shape}; expected ({count}, dimension), one row per item")
    bad = np.flatnonzero(~np.isfinite(rows).all(axis=1))
    if len(bad):
        raise CollectionError(f"item {bad[0]}: the embedding holds NaN or infinite values")
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    if (norms == 0).any():
        raise CollectionError(f"item {int(np.flatnonzero(norms == 0)[0])}: the embedding is all zeros")
    unit_rows: np.ndarray = rows / norms
    return unit_rows


def check_vector_dimensions(items: list[Item], expected: int | None, name: str) -> None:
    """Vectors given precomputed: all of one length, the collection's (`expected`) if it has one."""
    first: tuple[int, Item] | None = None
    for n, item in enumerate(items):
        if item.vector is None:
            continue
        size = item.vector.shape[0]
        label = f"item {n}" + (f" ({item.id!r})" if item.id else "")
        if expected is not None and size != expected:
            raise CollectionError(
                f"{label} has a {size}-dimensional embedding; collection {name!r} holds {expected}-dimensional vectors"
            )
        if first is None:
            first = (n, item)
        elif size != first[1].vector.shape[0]:  # type: ignore[union-attr]
            raise CollectionError(
                f"{label} has a {size}-dimensional embedding, item {first[0]} a "
                f"{first[1].vector.shape[0]}-dimensional one"  # type: ignore[union-attr]
            )


def top_k(scores: np.ndarray, k: int, slots: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The `k` best ``(slots, scores)``, best first (`slots`: what each score's position stands for)."""
    if k < len(scores):  # partial selection (the k largest last: no negated copy), then sort just them
        best = np.argpartition(scores, len(scores) - k)[len(scores) - k :]
        best = best[np.argsort(-scores[best], kind="stable")]
    else:
        best = np.argsort(-scores, kind="stable")
    return (best if slots is None else slots[best]), scores[best]


def best_hits(
    n: int,
    total: int,
    candidates: Callable[[int], tuple[np.ndarray, np.ndarray]],
    rows: Callable[[list[int]], dict[int, tuple[str, str | None, str | None]]],
    spare: int = 16,
) -> list[Hit]:
    """The `n` best live items among `candidates(k)` (slots and scores, best first), asking for
    more while dead rows fill the top (`spare` more from the start: 0 where the matrix has no dead
    rows). `rows` reads the live slots' ``(id, content, metadata JSON)``; only the hits returned
    have their metadata parsed."""
    k = min(total, n + spare)
    while True:
        slots, scores = candidates(k)
        found = slots.tolist()
        live = rows(found)
        best: list[tuple[tuple[str, str | None, str | None], float]] = []
        for slot, score in zip(found, scores.tolist(), strict=True):
            row = live.get(slot)
            if row is not None:
                best.append((row, score))
                if len(best) == n:
                    break
        if len(best) == n or k >= total:
            metadata = parse_metadata([row[2] for row, _ in best])
            return [Hit(row[0], score, row[1], meta) for (row, score), meta in zip(best, metadata, strict=True)]
        k = min(total, k * 4)


def parse_metadata(texts: list[str | None]) -> list[Any]:
    """Stored metadata (JSON objects, or None) parsed, in one `json.loads` where they are several."""
    if len(texts) > 1:
        parsed = json.loads("[" + ",".join(t or "null" for t in texts) + "]")
        if isinstance(parsed, list) and len(parsed) == len(texts):  # else one of them is not one JSON value
            return parsed
    return [json.loads(t) if t else None for t in texts]


def check_id(id: object) -> str:
    """`id` if it is an item's id (a non-empty string), else a `CollectionError` naming it."""
    if not isinstance(id, str) or not id:
        raise CollectionError(f"an id must be a non-empty string, got {id!r:.60}")
    return id


def check_ids(ids: object) -> list[str]:
    """The ids of `delete_many`, in order, once each; a string alone is refused, not split into characters."""
    if isinstance(ids, str | bytes):
        raise CollectionError(f"expected a list of ids, got the string {ids!r:.60} (for one id, use delete)")
    try:
        given = list(ids)  # type: ignore[call-overload]
    except TypeError:
        raise CollectionError(f"expected a list of ids, got {type(ids).__name__}") from None
    return list(dict.fromkeys(check_id(i) for i in given))


def check_n(n: object) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise CollectionError(f"n must be an integer >= 1, not {n!r}")
