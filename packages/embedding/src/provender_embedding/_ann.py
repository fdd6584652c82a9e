"""The optional approximate index (usearch's HNSW, ``provender-embedding[ann]``) over a collection's matrix.

The index is derived data: its keys are matrix slots, and it lives beside the matrix file as
``<store>.<generation>.<rows>.usearch``, the number of rows it covers in its name. It is
written to a temporary file and renamed, so a kill leaves the previous index or the new one,
never half of one; an index that is missing, or covers fewer rows than are committed, is
brought up to date (the missing rows added) on the next approximate search. Deleted and
replaced items' rows stay in it and are dropped by the same SQLite check as exact search.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from provender_embedding.errors import CollectionError

ANN_HINT = 'pip install "provender-embedding[ann]"'
# Chosen on 5,000 clustered 384-d vectors (recall@10, build time on this 2-core machine):
# f32 expansion_add 128: 0.964, 17.5 s; f32 64: 0.946, 9.1 s; f16 64: 0.946, 5.4 s; i8 64: 0.89, 3.7 s.
DTYPE = "f16"  # the index's own copy of the vectors; the matrix file stays float32
CONNECTIVITY = 16
EXPANSION_ADD = 64
EXPANSION_SEARCH = 128


def _usearch() -> Any:
    try:
        from usearch.index import Index  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        raise CollectionError(f"approximate search needs usearch: {ANN_HINT}") from None
    return Index


def index_files(matrix: Path) -> list[tuple[int, Path]]:
    """``(rows, path)`` of every index built for this matrix file, largest first."""
    prefix = matrix.name[: -len(".f32")] + "."
    found = []
    for path in matrix.parent.glob(prefix + "*.usearch"):
        middle = path.name[len(prefix) : -len(".usearch")]
        if middle.isdigit():
            found.append((int(middle), path))
    return sorted(found, reverse=True)


class ApproximateIndex:
    """An HNSW index over the first ``rows`` rows of a matrix file, opened as a memory map."""

    def __init__(self) -> None:
        self.key: tuple[str, int] | None = None
        self._index: Any = None

    def get(self, matrix_file: Path, matrix: np.ndarray, threads: int = 0) -> Any:
        rows = matrix.shape[0]
        key = (str(matrix_file), rows)
        if key == self.key:
            return self._index
        Index = _usearch()
        built = index_files(matrix_file)
        target = matrix_file.with_name(f"{matrix_file.name[: -len('.f32')]}.{rows}.usearch")
        if built and built[0][0] == rows:
            index = Index.restore(str(built[0][1]), view=True)
        else:
            index = Index(
                ndim=matrix.shape[1],
                metric="ip",
                dtype=DTYPE,
                connectivity=CONNECTIVITY,
                expansion_add=EXPANSION_ADD,
                expansion_search=EXPANSION_SEARCH,
            )
            start = 0
            if built and built[0][0] < rows:
                index.load(str(built[0][1]))
                start = built[0][0]
            if rows > start:
                index.add(np.arange(start, rows, dtype=np.uint64), matrix[start:], threads=threads)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
            index.save(str(tmp))
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            tmp.replace(target)
            for _, old in built:
                if old != target:
                    old.unlink(missing_ok=True)
            index = Index.restore(str(target), view=True)
        index.expansion_search = EXPANSION_SEARCH
        self._index, self.key = index, key
        return index

    def search(self, matrix_file: Path, matrix: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(slots, scores)``: the index's `k` best rows for `query`, best first."""
        index = self.get(matrix_file, matrix)
        found = index.search(query, min(k, matrix.shape[0]))
        keys = np.asarray(found.keys, dtype=np.int64)
        scores = 1.0 - np.asarray(found.distances, dtype=np.float32)  # "ip" distance is 1 - dot
        return keys, scores
