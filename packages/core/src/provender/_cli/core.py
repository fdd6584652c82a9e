"""Top-level commands: plugins, config, models, pull, generate."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from provender._cli._common import echo_json, echo_table, fail, get_cache, json_option
from provender._cli._structured import constraint_flags, constraint_option

if TYPE_CHECKING:
    from provender._cache._entry import PullResult


@click.command()
@json_option
def plugins(as_json: bool) -> None:
    """List installed plugins, their providers, and why any failed to load."""
    from provender._plugins import get_plugin_manager

    manager = get_plugin_manager()
    manager.providers()  # fills in each plugin's providers (and registration errors)
    infos = sorted(manager.plugins.values(), key=lambda p: p.name)
    if as_json:
        echo_json([p.to_dict() for p in infos])
        return
    if not infos:
        click.echo('No plugins installed. Providers are separate packages, e.g. pip install "provender[mlx]".')
        return
    echo_table(
        [(p.name, p.version or "-", p.status, ", ".join(p.providers) or "-", p.error or "") for p in infos],
        ("PLUGIN", "VERSION", "STATUS", "PROVIDERS", "ERROR"),
    )


@click.command()
@json_option
def config(as_json: bool) -> None:
    """Show every effective setting, its environment variable and where its value came from."""
    from provender._config_files import config_file_path
    from provender._settings import effective_settings, load_settings

    rows = effective_settings(load_settings())
    if as_json:
        echo_json({"config_file": str(config_file_path()), "settings": rows})
        return
    click.echo(f"config file: {config_file_path()}")
    echo_table(
        [(r["setting"], r["display"], r["source"], r["env"]) for r in rows],
        ("SETTING", "VALUE", "SOURCE", "ENVIRONMENT VARIABLE"),
    )


@click.command()
@json_option
@click.option("--all", "show_all", is_flag=True, help="Also list cached entries no provider claims.")
def models(as_json: bool, show_all: bool) -> None:
    """List the cached models and the providers that can serve them."""
    from provender._plugins import get_plugin_manager
    from provender._resolve import prefer_order
    from provender._settings import load_settings
    from provender._sizes import format_ago, format_size

    manager = get_plugin_manager()
    prefer = load_settings().providers.prefer
    rows = []
    for entry in get_cache().entries():
        claims = prefer_order(manager.claim(entry), prefer)  # the first serves a bare name
        if claims or show_all:
            rows.append((entry, claims))
    if as_json:
        echo_json(
            [
                {
                    "model": f"{c[0]}:{e.name}" if c else e.name,
                    **e.to_dict(providers=c),
                    "provider": c[0] if c else None,
                }
                for e, c in rows
            ]
        )
        return
    if not rows:
        click.echo(
            "No models in the cache that an installed provider can serve "
            "(try `provender pull ORG/NAME` or `provender cache import`)."
        )
        return
    echo_table(
        [(e.name, c[0] if c else "-", ", ".join(c[1:]), format_size(e.size), format_ago(e.last_used)) for e, c in rows],
        ("MODEL", "PROVIDER", "ALSO CLAIMED BY", "SIZE", "LAST USED"),
    )


@click.command()
@click.argument("model")
@click.option("--revision", help="Branch, tag or commit (default: main).")
@click.option("--include", "allow_patterns", multiple=True, help="Only files matching this glob (repeatable).")
@click.option("--exclude", "ignore_patterns", multiple=True, help="Skip files matching this glob (repeatable).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
def pull(
    model: str,
    revision: str | None,
    allow_patterns: tuple[str, ...],
    ignore_patterns: tuple[str, ...],
    quiet: bool,
    as_json: bool,
) -> None:
    """Download MODEL (a Hub repo id, optionally PROVIDER:org/name) into the shared cache.

    With a remote tier (remote.url) a miss is served from the tier before the Hub, and what
    comes from the Hub is written through to it; the report says where the bytes came from.
    Files already cached are not downloaded again; an interrupted pull resumes.
    HF_HUB_OFFLINE=1 only checks the cache; HF_ENDPOINT and HF_TOKEN are honoured.
    """
    from provender._resolve import parse_model_name

    _, repo_id = parse_model_name(model)
    cm = get_cache()
    result = cm.pull(
        repo_id,
        revision=revision,
        allow_patterns=list(allow_patterns) or None,
        ignore_patterns=list(ignore_patterns) or None,
        progress=not quiet and not as_json,
    )
    url = cm.remote.url if cm.remote is not None else None
    if as_json:
        echo_json(
            {
                **result.entry.to_dict(),
                "source": result.source,
                "bytes_from_remote": result.bytes_from_remote,
                "bytes_from_hub": result.bytes_from_hub,
                "pushed": result.pushed,
                "remote_url": url,
                "warnings": list(result.warnings),
            }
        )
    else:
        click.echo(pull_report(result, url))


def pull_report(result: PullResult, url: str | None) -> str:
    """One line: what was pulled, from where (the remote tier, the Hub, or already in the cache), and to where."""
    from provender._sizes import format_size

    entry = result.entry
    if result.source == "cache":
        return f"Pulled {entry.name} ({format_size(entry.size)}): already in the cache at {entry.model_path}"
    parts = []
    if result.bytes_from_remote or result.source == "remote":
        parts.append(f"the remote tier {url} ({format_size(result.bytes_from_remote)})")
    if result.bytes_from_hub or result.source == "hub":
        parts.append(f"the Hub ({format_size(result.bytes_from_hub)})")
    line = f"Pulled {entry.name} from {' and '.join(parts)} into {entry.model_path}"
    if result.pushed:
        line += f"; wrote it through to {url}"
    return line


def _read_prompt(prompt: str | None) -> str:
    if prompt is None or prompt == "-":
        if sys.stdin.isatty():
            fail("give a PROMPT argument, or pipe one on stdin", 2)
        return sys.stdin.read()
    return prompt


@click.command()
@click.option("-m", "--model", required=True, help="PROVIDER:MODEL, or a cached model name.")
@click.argument("prompt", required=False)
@click.option("--max-tokens", type=int, help="Most tokens to generate.")
@click.option("--temperature", type=float, help="Sampling temperature (0 = greedy).")
@click.option("--top-p", type=float, help="Nucleus sampling probability mass.")
@click.option("--seed", type=int, help="Random seed, for repeatable sampling.")
@click.option("--stop", multiple=True, help="Stop at this string (repeatable).")
@click.option("-s", "--system", "system_prompt", help="System prompt (providers that take one).")
@click.option("--stream/--no-stream", default=False, help="Print tokens as they come.")
@click.option("--no-server", is_flag=True, help="Run in this process even when `provender serve` is running.")
@constraint_flags
def generate(
    model: str,
    prompt: str | None,
    max_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    seed: int | None,
    stop: tuple[str, ...],
    system_prompt: str | None,
    stream: bool,
    no_server: bool,
    schema: str | None,
    choice: str | None,
    regex: str | None,
    grammar: str | None,
) -> None:
    """Generate text from PROMPT (or stdin) with MODEL (on a running `provender serve` if one answers)."""
    from provender._client import provider_for

    text = _read_prompt(prompt)
    options: dict[str, Any] = {
        k: v
        for k, v in {
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "seed": seed,
            "stop": list(stop) or None,
            "system_prompt": system_prompt,
        }.items()
        if v is not None
    }
    options.update(constraint_option(schema, choice, regex, grammar))
    # A constrained reply runs in this process: the server's /v1/completions takes no constraint
    provider = provider_for(model, use_server=not no_server and "constraint" not in options)
    try:
        if stream:
            finish = None
            for chunk in provider.stream_complete(text, **options):
                click.echo(chunk.text, nl=False)
                finish = chunk.finish_reason or finish
            click.echo()
        else:
            result = provider.complete(text, **options)
            click.echo(result.text)
            finish = result.finish_reason
    finally:
        provider.close()
    if finish == "length" and "constraint" in options:  # the text was cut: it need not parse
        click.echo("warning: the reply stopped at --max-tokens before it was complete; it may not parse", err=True)


def register(cli: click.Group) -> None:
    for command in (plugins, config, models, pull, generate):
        cli.add_command(command)
