"""``provender cache prompt``: save a prompt cache into the shared cache; the prompt caches' part of ``cache ls``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from provender._cli._common import echo_json, echo_table, fail, json_option

if TYPE_CHECKING:
    from provender._cache import CacheEntry


def prompt_row(entry: CacheEntry) -> dict[str, Any]:
    """The ``cache ls --json`` row of a saved prompt cache: an entry's row, kind ``prompt``, and what it holds."""
    return {**entry.to_dict(), "provider": None, "providers": [], "prompt": entry.metadata.get("prompt", {})}


def show_prompts(entries: list[CacheEntry]) -> None:
    """The saved prompt caches, as their own table under the models (`cache ls`)."""
    from provender._cache._resolve import short_key
    from provender._sizes import format_ago, format_size

    click.echo(f"\nPrompt caches ({len(entries)}, {format_size(sum(e.size for e in entries))}):")
    rows = []
    for e in entries:
        meta = e.metadata.get("prompt", {})
        rows.append(
            (
                e.name,
                str(meta.get("model", "?")),
                str(meta.get("tokens", "?")),
                str(meta.get("runtime_version", meta.get("runtime", "?"))),
                format_size(e.size),
                format_ago(e.last_used),
                short_key(e.key),
            )
        )
    echo_table(rows, ("NAME", "MODEL", "TOKENS", "RUNTIME", "SIZE", "LAST USED", "KEY"))


@click.command("prompt")
@click.option("-m", "--model", required=True, help="PROVIDER:MODEL, or a cached model name.")
@click.argument("text", required=False)
@click.option("--file", "file_", type=click.Path(path_type=Path, dir_okay=False), help="Read the text from this file.")
@json_option
def prompt(model: str, text: str | None, file_: Path | None, as_json: bool) -> None:
    """Process TEXT (or --file) with MODEL and save its prompt cache into the shared cache.

    Any process that loads MODEL afterwards (`provender generate`, `chat`, a fresh server) and gets a
    prompt starting with TEXT reads the saved state instead of processing those tokens again. It is an
    entry of kind `prompt` (`cache ls`), bounded by cache.prompt_cache_max_size, evicted before models.
    TEXT is taken as `generate` takes a prompt (no chat template)."""
    from provender._client import provider_for
    from provender._sizes import format_size

    if (text is None) == (file_ is None):
        fail("give the TEXT or --file FILE (one of them)", 2)
    if file_ is not None:
        try:
            text = file_.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read {file_}: {exc}", 2)
    assert text is not None
    provider = provider_for(model, use_server=False)  # the state is computed here, with the model's runtime
    started = time.time()
    try:
        save = getattr(provider, "save_prompt", None)
        if save is None:
            fail(f"the {provider.name} provider does not save prompt caches", 1)
        entry = save(text)
    finally:
        provider.close()
    meta = entry.metadata.get("prompt", {})
    if as_json:
        echo_json(prompt_row(entry))
    else:
        what = "Saved" if entry.created >= started else "Already saved:"  # an intact one is kept, not recomputed
        click.echo(
            f"{what} the prompt cache of {meta.get('tokens')} tokens for {meta.get('model')} as {entry.name} "
            f"({format_size(entry.size)}, {meta.get('runtime_version')})"
        )
