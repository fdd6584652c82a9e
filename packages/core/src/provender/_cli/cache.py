"""``provender cache ...``: inspect and manage the shared disk cache."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from provender._cli._common import EXIT_FAILURE, echo_json, echo_table, fail, get_cache, json_option

if TYPE_CHECKING:
    from provender._cache import CacheEntry
    from provender._cache._eviction import EvictionPlan


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
    if not manager.has_implementations("provender_claim_model"):
        return {}
    from provender._resolve import prefer_order
    from provender._settings import load_settings

    prefer = load_settings().providers.prefer  # once: building the settings costs ~1 ms
    return {e.key: prefer_order(manager.claim(e), prefer) for e in entries}  # the first serves


#: Files whose presence marks a folder as a model's (a transformers/MLX config, weights, a GGUF).
_MODEL_FILES = ("config.json", "*.safetensors", "*.gguf", "pytorch_model.bin")


def _unservable(entry: CacheEntry) -> str:
    """Why no installed provider claims `entry`, and where its model files are if they sit one
    folder down (a package's ``model/``, a repo's ``snapshot/``)."""

    def holds_model(folder: Path) -> bool:
        return any(next(folder.glob(pattern), None) for pattern in _MODEL_FILES)

    nested: list[str] = []
    root = entry.model_path
    if root.is_dir() and not holds_model(root):
        nested = sorted(d.name for d in root.iterdir() if d.is_dir() and holds_model(d))
    where = f"; its model files are in {nested[0]!r}: import that folder instead" if nested else ""
    return f"no installed provider can serve it (`provender plugins` lists them){where}"


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
    """List cached entries (Hub repos, imported and stored models), then the saved prompt caches apart."""
    from provender._cache._gguf import describe_files, entry_gguf_files
    from provender._cache._resolve import short_key
    from provender._cli.prompts import prompt_row, show_prompts
    from provender._sizes import format_ago, format_size

    everything = get_cache().entries(sort=sort, prompts=True)
    entries = [e for e in everything if e.kind != "prompt"]
    prompts = [e for e in everything if e.kind == "prompt"]  # not models: no provider claims them
    claims = _claims(entries)
    gguf = {e.key: entry_gguf_files(e) for e in entries}  # which GGUF file(s) an entry holds
    if as_json:
        echo_json(
            [
                {
                    **e.to_dict(providers=claims.get(e.key, [])),
                    "provider": next(iter(claims.get(e.key, [])), None),
                    "gguf_files": gguf[e.key],
                }
                for e in entries
            ]
            + [prompt_row(e) for e in prompts]
        )
        return
    if not entries and not prompts:
        click.echo("The cache is empty.")
        return
    if prompts and not entries:
        show_prompts(prompts)
        return
    extra = any(gguf.values())
    echo_table(
        [
            (
                e.name,
                e.kind,
                format_size(e.size),
                format_ago(e.last_used),
                ", ".join(claims.get(e.key, [])) or "-",
                "yes" if e.pinned else "",
                short_key(e.key),
                *([describe_files(gguf[e.key]) or "-"] if extra else []),
            )
            for e in entries
        ],
        ("NAME", "KIND", "SIZE", "LAST USED", "PROVIDERS", "PINNED", "KEY", *(["GGUF"] if extra else [])),
    )
    if prompts:
        show_prompts(prompts)


@cache.command("rm")
@click.argument("names", nargs=-1, required=True, metavar="NAME_OR_KEY...")
@click.option("--dry-run", is_flag=True, help="Show what would be removed (and what refused), remove nothing.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def rm(names: tuple[str, ...], dry_run: bool, yes: bool) -> None:
    """Remove entries by name, key or unique key prefix (refused while pinned, in use, or named by aliases).
    An alias (`cache alias`) given here removes only the alias, never the entry's files."""
    from provender._sizes import format_size
    from provender.errors import EntryInUseError, ProvenderError

    cm = get_cache()
    known = cm.aliases()
    aliases = [n for n in dict.fromkeys(names) if n in known and known[n].name != n]  # only the alias goes
    for alias in aliases:
        if not dry_run:
            cm.unalias(alias)
        click.echo(f"{'would remove' if dry_run else 'removed'} alias {alias} ({known[alias].name} stays)")
    names = tuple(n for n in names if n not in aliases)
    if not names:
        return
    found = {e.key: e for e in (cm.get(n) for n in names)}  # every name must exist (once) before anything goes
    entries = list(found.values())
    total = sum(e.size for e in entries)
    if dry_run:  # the real removal's own checks, without the removal: a refusal is reported as it would be
        freed = refused = 0
        for e in entries:
            try:
                cm.remove(e.key, dry_run=True)
            except EntryInUseError as exc:
                click.echo(f"would refuse {e.name}: {exc.reason}")
                refused += 1
                continue
            click.echo(f"would remove {e.name} ({format_size(e.size)})")
            freed += e.size
        click.echo(f"would free {format_size(freed)}")
        if refused:
            sys.exit(EXIT_FAILURE)
        return
    _confirm(f"Remove {len(entries)} entr{'y' if len(entries) == 1 else 'ies'} ({format_size(total)})?", yes)
    failed = 0
    for e in entries:
        try:
            cm.remove(e.key)
            click.echo(f"removed {e.name} ({format_size(e.size)})")
        except ProvenderError as exc:  # keep going: one refusal must not stop the rest
            click.echo(f"Error: {exc}", err=True)
            failed += 1
    if failed:
        sys.exit(EXIT_FAILURE)


@cache.command("alias")
@click.argument("source", required=False, metavar="[NAME_OR_KEY")
@click.argument("alias", required=False, metavar="ALIAS]")
@click.option("--rm", "remove", metavar="ALIAS", help="Remove this alias (only the alias: the entry stays).")
@json_option
def alias_cmd(source: str | None, alias: str | None, remove: str | None, as_json: bool) -> None:
    """Give an entry another name (what Ollama's `copy` makes), or list the aliases (no arguments).

    An alias resolves wherever a model name does (`generate -m`, `serve`) and survives an index
    rebuild; it holds no files. `cache rm ALIAS` (or --rm) removes only the alias."""
    cm = get_cache()
    if remove is not None:
        if source is not None:
            fail("--rm takes the alias alone", 2)
        cm.unalias(remove)
        click.echo(f"removed alias {remove}")
        return
    if source is None:
        rows = sorted(cm.aliases().items())
        if as_json:
            echo_json([{"alias": a, "name": e.name, "key": e.key} for a, e in rows])
        elif rows:
            from provender._cache._resolve import short_key

            echo_table([(a, e.name, short_key(e.key)) for a, e in rows], ("ALIAS", "NAME", "KEY"))
        else:
            click.echo("No aliases.")
        return
    if alias is None:
        fail("give the entry and the alias: provender cache alias NAME_OR_KEY ALIAS", 2)
    entry = cm.alias(source, alias)
    if as_json:
        echo_json({"alias": alias, "name": entry.name, "key": entry.key})
    else:
        click.echo(f"{alias} -> {entry.name}")


def _show_plan(plan: EvictionPlan, dry_run: bool) -> None:
    """The plan, then one line on what stays over the limit (the only over-limit warning prune prints)."""
    from provender._cache._eviction import ONLY_COPY
    from provender._sizes import format_size

    if not plan.evict:
        if plan.fits:
            total, limit = format_size(plan.total), format_size(plan.limit)
            click.echo(f"Nothing to prune: the cache holds {total}, within its limit of {limit}.")
        else:
            click.echo(
                f"Nothing can be freed: the cache holds {format_size(plan.total)}, over its limit of "
                f"{format_size(plan.limit)}, and every entry that would go is kept:"
            )
    for e in plan.evict:
        click.echo(f"{'would evict' if dry_run else 'will evict'} {e.name} ({format_size(e.size)})")
    for e, why in plan.kept:
        click.echo(f"kept {e.name} ({format_size(e.size)}): {why}")
    if plan.evict:
        click.echo(
            f"{'would free' if dry_run else 'will free'} {format_size(plan.freed)}, "
            f"leaving {format_size(plan.after)} of {format_size(plan.limit)}"
        )
        if not plan.fits:
            click.echo(
                f"warning: the cache {'would stay' if dry_run else 'will stay'} {format_size(plan.over)} over "
                "its limit: the rest is kept (above)",
                err=True,
            )
    if any(why.startswith(ONLY_COPY) for _e, why in plan.kept):
        click.echo("(`provender cache rm NAME` removes an only copy; or raise cache.max_size)", err=True)


@cache.command()
@click.option("--max-size", help="Target size (default: cache.max_size), e.g. 10GB.")
@click.option("--dry-run", is_flag=True, help="Show what would be evicted and what kept, evict nothing.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def prune(max_size: str | None, dry_run: bool, yes: bool) -> None:
    """Evict least-recently-used entries until the cache fits its size limit (never pinned or in-use ones,
    nor an imported model's only copy: moved in with --move, or whose source has gone)."""
    from provender._sizes import format_size

    cm = get_cache()
    limit = _size(max_size)
    plan = cm.plan_eviction(limit)
    _show_plan(plan, dry_run)
    if dry_run or not plan.evict:
        return
    _confirm(f"Evict {len(plan.evict)} entr{'y' if len(plan.evict) == 1 else 'ies'} ({format_size(plan.freed)})?", yes)
    done = cm.prune(limit)
    click.echo(f"evicted {len(done.evict)} entries, freed {format_size(done.freed)}")
    if plan.fits and not done.fits:  # a process took hold of an entry meanwhile; otherwise already said above
        click.echo(f"warning: the cache stays {format_size(done.over)} over its limit: the rest is in use", err=True)


@cache.command()
@json_option
def stats(as_json: bool) -> None:
    """Hits, misses, evictions and totals (kept across processes and restarts)."""
    from provender._sizes import format_size

    cm = get_cache()
    s = cm.stats()
    tier = cm.remote  # stats never reach the tier: they are this machine's counters
    if as_json:
        url, read_only = (tier.url, tier.read_only) if tier else (None, None)
        echo_json({**s.to_dict(), "remote_url": url, "remote_read_only": read_only})
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
    if tier is None:
        rows.append(("remote tier", "- (remote.url not set)"))
    else:
        rows += [
            ("remote tier", f"{tier.url}{' (read-only)' if tier.read_only else ''}"),
            ("remote hits", f"{s.remote_hits} ({format_size(s.bytes_from_remote)} from the tier)"),
            ("remote misses", s.remote_misses),
            ("remote errors", s.remote_errors),
        ]
    echo_table(rows, ("STAT", "VALUE"))


@cache.command()
@click.argument("name", metavar="NAME_OR_KEY")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
def push(name: str, quiet: bool, as_json: bool) -> None:
    """Upload an entry to the shared remote tier (remote.url); blobs the tier already holds are skipped."""
    from provender._cli.remote import configured_tier
    from provender._sizes import format_size

    cm = get_cache()
    tier = configured_tier(cm)  # before the name: the setting is what is missing
    entry = cm.get(name)
    tier.check_writable()  # read-only, unreachable: one line, before any progress bar
    show = not quiet and not as_json
    with click.progressbar(
        length=max(entry.size, 1), label=f"pushing {entry.name}", file=sys.stderr, hidden=not show
    ) as bar:
        result = cm.push(entry.key, progress=bar.update if show else False)
    if as_json:
        echo_json(result.to_dict())
        return
    files = f"{result.files} file{'' if result.files == 1 else 's'}"
    if not result.uploaded:
        click.echo(f"{entry.name} is already in the remote tier {result.url}: {files}, 0 uploaded")
        return
    click.echo(
        f"pushed {entry.name} to {result.url}: {files}, {result.uploaded} uploaded "
        f"({format_size(result.bytes_uploaded)}), {result.already_there} already there"
    )


@cache.command()
@click.option("--fix", is_flag=True, help="Drop what is corrupt (Hub files are fetched again on the next pull).")
@json_option
def verify(fix: bool, as_json: bool) -> None:
    """Re-hash cached content; report corruption and what the cache repaired on its own (exit 1 if any)."""
    cm = get_cache()
    total = sum(e.size for e in cm.entries())
    show = not as_json and sys.stderr.isatty()
    with click.progressbar(length=max(total, 1), label="verifying", file=sys.stderr, hidden=not show) as bar:
        issues = cm.verify(fix=fix, progress=bar.update)
    left = [i for i in issues if not i.fixed]
    if as_json:
        echo_json({"ok": not issues, "issues": [i.to_dict() for i in issues]})
    else:
        for i in issues:
            click.echo(f"{'FIXED' if i.fixed else 'CORRUPT'} {i.name or '-'}: {i.path}: {i.problem}")
        if not issues:
            click.echo("All entries verified OK.")
        else:
            fixed = len(issues) - len(left)
            hint = " (run with --fix to drop corrupt entries)" if left and not fix else ""
            click.echo(f"{len(issues)} problem(s) found, {fixed} fixed{hint}.")
    if left or (issues and not fix):  # anything found is exit 1, unless --fix dealt with all of it
        sys.exit(EXIT_FAILURE)


@cache.command()
@click.argument("name")
def pin(name: str) -> None:
    """Protect an entry from eviction (NAME: a name, key or unique key prefix)."""
    entry = get_cache().pin(name)
    click.echo(f"pinned {entry.name}")


@cache.command()
@click.argument("name")
def unpin(name: str) -> None:
    """Let an entry be evicted again."""
    entry = get_cache().unpin(name)
    click.echo(f"unpinned {entry.name}")


@cache.command("import")
@click.argument("path", type=click.Path(path_type=Path), required=False)
@click.option("--name", help="Name to store it under, ORG/NAME (with --from-ollama: default ollama/MODEL-TAG).")
@click.option(
    "--from-ollama",
    "ollama",
    metavar="NAME[:TAG]",
    help="Import a model Ollama has pulled (OLLAMA_MODELS or ~/.ollama/models): its GGUF blob, sha256-checked.",
)
@click.option("--copy", "copy_", is_flag=True, help="Copy the bytes (default: clone or hard link, no copy).")
@click.option(
    "--move",
    is_flag=True,
    help="Move the files into the cache (the source goes once the entry is in; that only copy is never evicted).",
)
@click.option("--replace", is_flag=True, help="Replace an imported entry with the same name.")
@click.option("--pin", is_flag=True, help="Pin it as it lands (never evicted until unpinned).")
@json_option
def import_(
    path: Path | None,
    name: str | None,
    ollama: str | None,
    copy_: bool,
    move: bool,
    replace: bool,
    pin: bool,
    as_json: bool,
) -> None:
    """Sideload a local model directory or file into the cache (offline, air-gapped), or a model
    Ollama has pulled (--from-ollama llama3.2:1b), without copying it."""
    from provender._sizes import format_size

    if copy_ and move:  # before anything is read or written: a usage error touches nothing
        raise click.UsageError("--copy and --move contradict each other: give one of them, or neither")
    mode = "copy" if copy_ else "move" if move else None
    if ollama is not None:
        if path is not None or move:
            raise click.UsageError("--from-ollama takes no PATH and cannot --move (Ollama keeps its blob)")
        from provender._cache._ollama import import_from_ollama

        entry = import_from_ollama(
            get_cache(), ollama, as_name=name, link_mode="copy" if copy_ else "auto", replace=replace, pin=pin
        )
    elif path is None or name is None:
        raise click.UsageError("give PATH and --name ORG/NAME (or --from-ollama NAME[:TAG])")
    else:
        entry = get_cache().import_model(path, name, link_mode=mode or "auto", replace=replace, pin=pin)  # type: ignore[arg-type]
    from provender._cache._eviction import only_copy

    kept = only_copy(entry)
    providers = _claims([entry]).get(entry.key, [])
    if as_json:
        echo_json({**entry.to_dict(providers=providers), "only_copy": kept is not None})
    else:
        click.echo(f"imported {entry.name} ({format_size(entry.size)}) as {entry.key[:12]}")
        if not providers:
            click.echo(f"note: {_unservable(entry)}", err=True)
        if kept is not None and not entry.pinned:
            click.echo(
                f"{kept[0].upper()}{kept[1:]}: it is never evicted to make room "
                f"(`provender cache rm {entry.name}` removes it)"
            )


def _add_prompt_command() -> None:
    from provender._cli.prompts import prompt

    cache.add_command(prompt)


_add_prompt_command()


@cache.command()
def path() -> None:
    """Print the cache directory."""
    from provender._settings import load_settings

    click.echo(str(load_settings().cache.dir))
