"""`provender rerank` and what `provender similar --rerank` does after retrieving."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from provender_embedding._collection import Collection
    from provender_embedding._items import Hit

# json is imported inside the commands: `provender --help` imports this module.


@click.command()
@click.option(
    "-m", "--model", required=True, help="A reranker (cross-encoder): PROVIDER:MODEL or a cached model's name."
)
@click.argument("query")
@click.argument("documents", nargs=-1)
@click.option("-n", "--top-n", "top_n", type=click.IntRange(min=1), help="Only the N most relevant documents.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts: index, score, document.")
@click.option("--no-server", is_flag=True, help="Run in this process even when `provender serve` is running.")
def rerank(
    model: str, query: str, documents: tuple[str, ...], top_n: int | None, as_json: bool, no_server: bool
) -> None:
    """DOCUMENTS ordered by their relevance to QUERY, as MODEL (a reranker) scores them.

    Documents come from DOCUMENT arguments, or stdin (one per line). Each line shows the
    score (a cross-encoder's: 0..1, higher is more relevant), the document's position in
    the input (from 0) and the document. A running `provender serve` does the work (its
    /v1/rerank) unless --no-server.
    """
    docs = list(documents)
    if not docs:
        if sys.stdin.isatty():
            raise click.UsageError("give DOCUMENT arguments, or pipe documents on stdin (one per line)")
        docs = [line for line in sys.stdin.read().splitlines() if line.strip()]
        if not docs:
            raise click.UsageError("no documents on stdin: nothing to rerank")
    from provender._client import provider_for  # a running `provender serve` keeps the model loaded
    from provender_embedding._reranker import Reranker

    results = Reranker(provider_for(model, use_server=not no_server)).rerank(query, docs, top_n=top_n)
    if as_json:
        import json

        click.echo(json.dumps([r.to_dict() for r in results], indent=2))
        return
    for r in results:
        snippet = r.document.replace("\n", " ")
        click.echo(f"{r.score:.4f}  {r.index}  {snippet[:100]}{'...' if len(snippet) > 100 else ''}")


def similar_reranked(
    collection: Collection,
    query: str,
    n: int,
    model: str,
    candidates: int | None,
    *,
    where: dict[str, Any] | None,
    approximate: bool,
    as_json: bool,
) -> None:
    """`provender similar --rerank MODEL`: the `candidates` (4 x `n`) items most similar to
    `query`, reranked by `model`; the `n` most relevant printed with the reranker's score
    (JSON: each hit, ``score`` its similarity and ``rerank_score`` the reranker's)."""
    from provender_embedding._reranker import Reranker
    from provender_embedding.errors import CollectionError

    hits = collection.similar(query, candidates or 4 * n, where=where, approximate=approximate)
    if any(h.content is None for h in hits):
        raise CollectionError(
            f"collection {collection.name!r} keeps no texts (embedded with --no-store-content): nothing to rerank"
        )
    results = Reranker(model).rerank(query, [h.content or "" for h in hits], top_n=n) if hits else []
    pairs: list[tuple[Hit, float]] = [(hits[r.index], r.score) for r in results]
    if as_json:
        import json

        click.echo(json.dumps([{**hit.to_dict(), "rerank_score": score} for hit, score in pairs], indent=2))
        return
    for hit, score in pairs:
        snippet = (hit.content or "").replace("\n", " ")
        click.echo(f"{score:.4f}  {hit.id}  {snippet[:100]}{'...' if len(snippet) > 100 else ''}")
