"""``provender remote ...``: what the shared remote tier (``remote.url``) holds.

Only click is imported here: fsspec, s3fs and the cache load when a command runs, so
``provender --help`` never imports them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from provender._cli._common import echo_json, echo_table, get_cache, json_option

if TYPE_CHECKING:
    from provender._cache import CacheManager
    from provender._cache._remote import RemoteTier
    from provender.errors import RemoteNotConfiguredError


def not_configured() -> RemoteNotConfiguredError:
    """The one-line error for a command that needs the tier when ``remote.url`` is empty (exit 2)."""
    from provender._config_files import config_file_path
    from provender.errors import RemoteNotConfiguredError

    return RemoteNotConfiguredError(
        'no remote tier is configured: set remote.url, e.g. PROVENDER_REMOTE__URL="s3://bucket/prefix", '
        f'or url = "s3://bucket/prefix" under [remote] in {config_file_path()}'
    )


def configured_tier(cm: CacheManager | None = None) -> RemoteTier:
    """The tier the settings name; `RemoteNotConfiguredError` (exit 2) when ``remote.url`` is empty."""
    tier = (cm or get_cache()).remote
    if tier is None:
        raise not_configured()
    return tier


def _absent(tier: RemoteTier) -> str:
    """For an empty listing: why it may be empty. A missing S3 bucket is an error (exit 1: writes would
    fail too); a missing folder of a ``file://`` tier is said (nothing pushed yet, or not mounted)."""
    from provender.errors import RemoteTierError

    try:
        if tier.scheme in ("s3", "s3a"):
            bucket = tier.path().split("/", 1)[0]
            if not tier.fs.exists(bucket):
                raise RemoteTierError(tier.url, f"the bucket {bucket!r} does not exist")
        elif tier.scheme in ("file", "local") and not tier.fs.exists(tier.path()):
            return (
                f": its folder {tier.path()} does not exist (nothing was pushed yet, or the filesystem is not mounted)"
            )
    except RemoteTierError:
        raise
    except Exception as exc:  # the store's own error: one line naming the URL
        raise RemoteTierError(tier.url, str(exc) or type(exc).__name__) from exc
    return ""


@click.group()
def remote() -> None:
    """The shared remote tier (remote.url: an S3 bucket, gs://, az://, file:///mnt/shared)."""


@remote.command("ls")
@json_option
def ls(as_json: bool) -> None:
    """List what the remote tier holds (entries pushed by any machine) and its size."""
    from provender._sizes import format_size

    tier = configured_tier()
    entries = tier.entries()
    total = tier.size()
    if as_json:
        echo_json(
            {"url": tier.url, "read_only": tier.read_only, "size": total, "entries": [e.to_dict() for e in entries]}
        )
        return
    if not entries:
        click.echo(f"The remote tier {tier.url} holds nothing yet ({format_size(total)} of blobs){_absent(tier)}.")
        return
    import datetime as dt

    def when(ts: float) -> str:
        return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")

    echo_table(
        [(e.name, e.kind, (e.revision or "-")[:12], e.files, format_size(e.size), when(e.pushed_at)) for e in entries],
        ("NAME", "KIND", "REVISION", "FILES", "SIZE", "PUSHED"),
    )
    plural = "entry" if len(entries) == 1 else "entries"
    click.echo(f"{len(entries)} {plural}, {format_size(total)} stored in {tier.url} (each blob stored once)")
