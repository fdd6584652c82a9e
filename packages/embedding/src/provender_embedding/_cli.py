"""`provender embed`, `provender similar` and `provender collections ...` (`provender rerank`: _rerank_cli)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from pathlib import Path

# json and pathlib are imported inside the commands: `provender --help` imports this module.


def _texts(texts: tuple[str, ...], input_file: Path | None) -> list[dict[str, Any]]:
    from provender_embedding._io import read_items

    if input_file is not None and texts:
        raise click.UsageError("give TEXT arguments or -i FILE, not both")
    if input_file is not None:
        return read_items(input_file)
    # No id given: "label" numbers the texts in the output; a collection derives ids from content.
    if texts:
        return [{"id": None, "label": str(n), "text": t, "metadata": None} for n, t in enumerate(texts)]
    if sys.stdin.isatty():
        raise click.UsageError("give TEXT arguments, -i FILE, or pipe texts on stdin (one per line)")
    return [
        {"id": None, "label": str(n), "text": line, "metadata": None}
        for n, line in enumerate(sys.stdin.read().splitlines(), start=1)
        if line.strip()
    ]


@click.command()
@click.option("-m", "--model", required=True, help="An embedding model: PROVIDER:MODEL or a cached model's name.")
@click.argument("texts", nargs=-1)
@click.option(
    "-i",
    "--input",
    "input_name",
    type=click.Path(),  # a str: with --ray, a URL or a folder ending in /
    help="Texts to embed: one per line, or JSONL with id/text/metadata.",
)
@click.option(
    "-o",
    "--output",
    "output_name",
    type=click.Path(),  # a str: with --ray, a URL or a folder ending in /
    help="Write vectors to FILE.jsonl, FILE.npy or FILE.parquet instead of stdout.",
)
@click.option("-c", "--collection", help="Store the texts and vectors in this collection (created if new).")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--no-normalize", is_flag=True, help="Do not L2-normalise the vectors.")
@click.option("--no-store-content", is_flag=True, help="With --collection: keep vectors and ids, not the texts.")
@click.option("--no-server", is_flag=True, help="Run in this process even when `provender serve` is running.")
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[ADDRESS]",
    help="Embed the corpus -i on Ray Data into -o: no ADDRESS starts a local Ray instance; "
    "'auto' or HOST:PORT (the head's GCS) joins a cluster (needs provender-embedding[ray]).",
)
@click.option("--text-column", help="With --ray: the column holding the texts.  [default: text]")
@click.option("--vector-column", help="With --ray: the column the vectors go to.  [default: embedding]")
@click.option("--concurrency", type=click.IntRange(min=1), help="With --ray: up to N actors (the pool grows from 1).")
@click.option("--num-cpus", type=click.FloatRange(min=0), help="With --ray: CPUs per actor.  [default: 1]")
@click.option("--num-gpus", type=click.FloatRange(min=0), help="With --ray: GPUs per actor.")
def embed(
    model: str,
    texts: tuple[str, ...],
    input_name: str | None,
    output_name: str | None,
    collection: str | None,
    batch_size: int,
    no_normalize: bool,
    no_store_content: bool,
    no_server: bool,
    ray_address: str | None,
    text_column: str | None,
    vector_column: str | None,
    concurrency: int | None,
    num_cpus: float | None,
    num_gpus: float | None,
) -> None:
    """Embed texts with MODEL: JSON to stdout, a file (-o) or a collection (-c).

    Texts come from TEXT arguments, -i FILE, or stdin (one per line). In a collection, a
    text without an id (JSONL "id") is stored under an id derived from its content, so it
    never replaces another text; an item is updated only when its id is given.

    With --ray, -i is a corpus (.parquet, .csv, .jsonl, a folder of .parquet files, or a
    URL) and -o a .parquet file or a folder: every input column plus the vectors.
    """
    ray_options = {
        "--text-column": text_column,
        "--vector-column": vector_column,
        "--concurrency": concurrency,
        "--num-cpus": num_cpus,
        "--num-gpus": num_gpus,
    }
    if ray_address is not None:
        from provender_embedding._ray_cli import check_ray_usage, run_ray

        source, reader, target, kind = check_ray_usage(
            texts=texts,
            input_file=input_name,
            output_file=output_name,
            collection=collection,
        )
        run_ray(
            address=ray_address,
            model=model,
            source=source,
            reader=reader,
            target=target,
            kind=kind,
            text_column=text_column or "text",
            vector_column=vector_column or "embedding",
            batch_size=batch_size,
            normalize=not no_normalize,
            concurrency=concurrency,
            num_cpus=1 if num_cpus is None else num_cpus,
            num_gpus=num_gpus,
        )
        return
    given = [name for name, value in ray_options.items() if value is not None]
    if given:
        raise click.UsageError(f"{given[0]} applies to --ray only")
    if collection is not None and output_name is not None:
        raise click.UsageError("-o and -c contradict each other: the vectors go to a file or a collection, give one")
    from pathlib import Path

    input_file = None if input_name is None else Path(input_name)
    output_file = None if output_name is None else Path(output_name)
    from provender_embedding import Collection, Embedder
    from provender_embedding._io import OUTPUT_FORMATS, write_vectors

    if output_file is not None and output_file.suffix.lower() not in OUTPUT_FORMATS:
        raise click.BadParameter(f"use a {', '.join(OUTPUT_FORMATS)} file", param_hint="-o")
    if output_file is not None and (output_file.is_dir() or not output_file.absolute().parent.is_dir()):
        # before the model loads and the texts are embedded: nothing computed only to be lost
        parent = str(output_file.absolute().parent)
        why = "is a folder, not a file" if output_file.is_dir() else f"cannot be written: there is no folder {parent!r}"
        raise click.BadParameter(f"{str(output_file)!r} {why}", param_hint="-o")
    items = _texts(texts, input_file)
    from provender._client import provider_for  # a running `provender serve` keeps the model loaded

    embedder = Embedder(provider_for(model, use_server=not (no_server or no_normalize)), batch_size=batch_size)
    start = time.perf_counter()
    show = sys.stderr.isatty() and len(items) >= 64
    with click.progressbar(length=len(items), label="embedding", file=sys.stderr, hidden=not show) as bar:
        if collection is not None:
            if no_normalize:
                raise click.UsageError("collections store normalised vectors; drop --no-normalize")
            coll = Collection(collection, model, embedder=embedder)
            result = coll.add_many(
                items, batch_size=batch_size, store_content=not no_store_content, progress=bar.update
            )
            vectors = None
        else:
            vectors = embedder.embed([i["text"] for i in items], normalize=not no_normalize, progress=bar.update)
    elapsed = time.perf_counter() - start
    ids = [i["id"] if i["id"] is not None else i["label"] for i in items]
    if collection is not None:
        summary = (
            f"collection {collection!r}: {result.added} added, {result.updated} updated, "
            f"{result.unchanged} unchanged (now {coll.count()} items)"
        )
    elif output_file is not None:
        assert vectors is not None
        write_vectors(output_file, ids, vectors)
        summary = f"wrote {output_file}"
    else:
        import json

        assert vectors is not None
        click.echo(
            json.dumps(
                [{"id": i, "embedding": [round(float(x), 7) for x in v]} for i, v in zip(ids, vectors, strict=True)]
            )
        )
        summary = ""
    rate = len(items) / elapsed if elapsed > 0 else float("inf")
    click.echo(
        f"{len(items)} texts, dimension {embedder.dimension}, {rate:.1f} texts/s" + (f"; {summary}" if summary else ""),
        err=True,
    )


@click.command()
@click.argument("collection")
@click.argument("query")
@click.option("-n", "--number", "n", type=click.IntRange(min=1), default=5, show_default=True)
@click.option(
    "--where",
    "where_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Only items whose metadata KEY is VALUE (a string, or the number, true, false or null it spells); repeatable.",
)
@click.option("--approximate", is_flag=True, help="Search the HNSW index (needs provender-embedding[ann]).")
@click.option(
    "--rerank", "rerank_model", metavar="MODEL", help="Retrieve --candidates items, then rerank them with MODEL."
)
@click.option(
    "--candidates", type=click.IntRange(min=1), help="With --rerank: how many items to retrieve.  [default: 4 x N]"
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def similar(
    collection: str,
    query: str,
    n: int,
    where_pairs: tuple[str, ...],
    approximate: bool,
    rerank_model: str | None,
    candidates: int | None,
    as_json: bool,
) -> None:
    """The N items of COLLECTION most similar to QUERY (cosine); with --rerank, the N of the
    --candidates most similar that MODEL (a reranker) finds most relevant, its score shown."""
    from provender_embedding import Collection
    from provender_embedding._filters import parse_where

    try:
        where = parse_where(where_pairs)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--where") from None
    if candidates is not None and rerank_model is None:
        raise click.UsageError("--candidates applies to --rerank only")
    if rerank_model is not None:  # retrieve, then rerank
        from provender_embedding._rerank_cli import similar_reranked

        coll = Collection(collection)
        similar_reranked(
            coll, query, n, rerank_model, candidates, where=where, approximate=approximate, as_json=as_json
        )
        return
    hits = Collection(collection).similar(query, n, where=where, approximate=approximate)
    if as_json:
        import json

        click.echo(json.dumps([h.to_dict() for h in hits], indent=2))
        return
    for hit in hits:
        snippet = (hit.content or "").replace("\n", " ")
        click.echo(f"{hit.score:.3f}  {hit.id}  {snippet[:100]}{'...' if len(snippet) > 100 else ''}")


@click.group()
def collections() -> None:
    """List and delete embedding collections."""


@collections.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def collections_ls(as_json: bool) -> None:
    """List collections with their model and size."""
    from provender.cli import echo_table
    from provender_embedding import Collection

    rows = Collection.list()
    if as_json:
        import json

        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        click.echo("No collections yet (create one with `provender embed -m MODEL -c NAME -i FILE`).")
    else:
        echo_table(
            [(r["name"], r["model"], r["count"], r["dimension"] or "-") for r in rows],
            ("COLLECTION", "MODEL", "ITEMS", "DIMENSION"),
        )


@collections.command("rm")
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def collections_rm(name: str, yes: bool) -> None:
    """Delete a collection and everything in it."""
    from provender_embedding import Collection

    coll = Collection(name)
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("refusing to delete without confirmation: add -y")
        click.confirm(f"Delete collection {name!r} ({coll.count()} items)?", abort=True)
    count = coll.count()
    coll.drop()
    click.echo(f"deleted collection {name!r} ({count} items)")


def register(cli: click.Group) -> None:
    from provender_embedding._rerank_cli import rerank

    for command in (embed, similar, collections, rerank):
        cli.add_command(command)
