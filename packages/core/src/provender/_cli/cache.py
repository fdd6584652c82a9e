"""``provender cache ...``: inspect and manage the shared disk cache."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from provender._cli._common import EXIT_FAILURE, echo_json, echo_table, fail, get_cache, json_option

if TYPE_CHECKING:
    from provender._cache import CacheEntry


def _size(value: str | None) -> int | None:
    if value is None:
        return None
    from provender._sizes import parse_size

    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--max-size") from None


def _claims(entries: list[CacheEntry]) -> dict[str, list[str]]:
    from provender._plugins import get_plugin_manager

    manager = get_plugin_manager()
    if not manager.pm.hook.provender_claim_model.get_hookimpls():
        return {}
    return {e.key: manager.claim(e) for e in entries}


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        fail("refusing to delete without confirmation: add -y (or --dry-run to see what would go)", 2)
    if not click.confirm(question, default=False):
        raise click.Abort()


@click.group()
def cache() -> None:
    """Inspect and manage the shared disk cache of models."""


@cache.command("ls")
@json_option
@click.option("--sort", type=click.Choice(["used", "size", "name"]), default="used", show_default=True)
def ls(as_json: bool, sort: str) -> None:
    """List cached entries (Hub repos, imported and stored models)."""
    from provender._sizes import format_ago, format_size

    entries = get_cache().entries(sort=sort)
    claims = _claims(entries)
    if as_json:
        echo_json([e.to_dict(providers=claims.get(e.key, [])) for e in entries])
        return
    if not entries:
        click.echo("The cache is empty.")
        return
    echo_table(
        [
            (
                e.name,
                e.kind,
                format_size(e.size),
                format_ago(e.last_used),
                ", ".join(claims.get(e.key, [])) or "-",
                "yes" if e.pinned else "",
                e.key[:12],
            )
            for e in entries
        ],
        ("NAME", "KIND", "SIZE", "LAST USED", "PROVIDERS", "PINNED", "KEY"),
    )


@cache.command("rm")
@click.argument("names", nargs=-1, required=True, metavar="NAME_OR_KEY...")
@click.option("--dry-run", is_flag=True, help="Show what would be removed, remove nothing.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def rm(names: tuple[str, ...], dry_run: bool, yes: bool) -> None:
    """Remove entries by name or key (refused while pinned or in use)."""
    from provender._sizes import format_size

    cm = get_cache()
    entries = [cm.get(n) for n in names]  # every name must exist before anything is removed
    total = sum(e.size for e in entries)
    if dry_run:
        for e in entries:
            click.echo(f"would remove {e.name} ({format_size(e.size)})")
        click.echo(f"would free {format_size(total)}")
        return
    _confirm(f"Remove {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} ({format_size(total)})?", yes)
    failed = 0
    for e in entries:
        try:
            cm.remove(e.key)
            click.echo(f"removed {e.name} ({format_size(e.size)})")
        except Exception as exc:  # keep going: one refusal must not stop the rest
            click.echo(f"Error: {exc}", err=True)
            failed += 1
    if failed:
        sys.exit(EXIT_FAILURE)


@cache.command()
@click.option("--max-size", help="Target size (default: cache.max_size), e.g. 10GB.")
@click.option("--dry-run", is_flag=True, help="Show what would be evicted, evict nothing.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def prune(max_size: str | None, dry_run: bool, yes: bool) -> None:
    """Evict least-recently-used entries until the cache fits its size limit."""
    from provender._sizes import format_size

    cm = get_cache()
    limit = _size(max_size)
    plan = cm.cleanup_old_models(limit, dry_run=True)
    if not plan:
        click.echo(f"Nothing to prune: the cache fits {format_size(limit if limit is not None else cm.max_size)}.")
        return
    verb = "would evict" if dry_run else "evicting"
    for e in plan:
        click.echo(f"{verb} {e.name} ({format_size(e.size)})")
    if dry_run:
        click.echo(f"would free {format_size(sum(e.size for e in plan))}")
        return
    _confirm(f"Evict {len(plan)} entries ({format_size(sum(e.size for e in plan))})?", yes)
    done = cm.cleanup_old_models(limit)
    click.echo(f"evicted {len(done)} entries, freed {format_size(sum(e.size for e in done))}")


@cache.command()
@json_option
def stats(as_json: bool) -> None:
    """Hits, misses, evictions and totals (kept across processes and restarts)."""
    from provender._sizes import format_size

    s = get_cache().stats()
    if as_json:
        echo_json(s.to_dict())
        return
    rate = f"{s.hit_rate:.0%}" if s.hit_rate is not None else "-"
    rows = [
        ("cache dir", str(s.cache_dir)),
        ("entries", f"{s.entries} ({s.pinned} pinned)"),
        ("size", f"{format_size(s.size)} of {format_size(s.max_size)} ({s.size / s.max_size:.0%})"),
        ("hits", s.hits),
        ("misses", s.misses),
        ("hit rate", rate),
        ("evictions", f"{s.evictions} ({format_size(s.bytes_evicted)})"),
    ]
    echo_table(rows, ("STAT", "VALUE"))


@cache.command()
@click.option("--fix", is_flag=True, help="Drop what is corrupt (Hub files are fetched again on the next pull).")
@json_option
def verify(fix: bool, as_json: bool) -> None:
    """Re-hash cached content and report corruption (exit 1 if any is found)."""
    cm = get_cache()
    total = sum(e.size for e in cm.entries())
    show = not as_json and sys.stderr.isatty()
    with click.progressbar(length=max(total, 1), label="verifying", file=sys.stderr, hidden=not show) as bar:
        issues = cm.verify(fix=fix, progress=bar.update)
    if as_json:
        echo_json({"ok": not issues, "issues": [i.to_dict() for i in issues]})
    else:
        for i in issues:
            click.echo(f"{'FIXED' if i.fixed else 'CORRUPT'} {i.name}: {i.path}: {i.problem}")
        click.echo(
            "All entries verified OK."
            if not issues
            else f"{len(issues)} problem(s) found{'; fixed' if fix else ' (run with --fix to drop them)'}."
        )
    if issues and not fix:
        sys.exit(EXIT_FAILURE)


@cache.command()
@click.argument("name")
def pin(name: str) -> None:
    """Protect an entry from eviction."""
    entry = get_cache().pin(name)
    click.echo(f"pinned {entry.name}")


@cache.command()
@click.argument("name")
def unpin(name: str) -> None:
    """Let an entry be evicted again."""
    entry = get_cache().unpin(name)
    click.echo(f"unpinned {entry.name}")


@cache.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Name to store it under, ORG/NAME.")
@click.option("--copy", "mode", flag_value="copy", help="Copy the bytes (default: clone or hard link, no copy).")
@click.option("--move", "mode", flag_value="move", help="Move the files into the cache.")
@click.option("--replace", is_flag=True, help="Replace an imported entry with the same name.")
@click.option("--pin", is_flag=True, help="Pin it as it lands (never evicted until unpinned).")
@json_option
def import_(path: Path, name: str, mode: str | None, replace: bool, pin: bool, as_json: bool) -> None:
    """Sideload a local model directory or file into the cache (offline, air-gapped)."""
    from provender._sizes import format_size

    entry = get_cache().import_model(path, name, link_mode=mode or "auto", replace=replace, pin=pin)  # type: ignore[arg-type]
    if as_json:
        echo_json(entry.to_dict())
    else:
        click.echo(f"imported {entry.name} ({format_size(entry.size)}) as {entry.key[:12]}")


@cache.command()
def path() -> None:
    """Print the cache directory."""
    from provender._settings import load_settings

    click.echo(str(load_settings().cache.dir))
