"""`provender embed --ray`: a corpus file (or folder, or URL) embedded on Ray Data."""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import click

from provender_embedding.errors import InputError

logger = logging.getLogger(__name__)

READERS = {".parquet": "read_parquet", ".pq": "read_parquet", ".csv": "read_csv", ".jsonl": "read_json"}
LOCAL = ""  # `--ray` without an address: start a local Ray instance
BLOCK_ROWS = 4096  # rows per block of a local file handed to Ray


def _is_url(path: str) -> bool:
    return "://" in path


def _reader(source: str) -> str:
    """The ray.data reader for `source`: by suffix; a folder holds parquet files."""
    suffix = Path(source.rstrip("/")).suffix.lower()
    if suffix in READERS:
        return READERS[suffix]
    if source.endswith("/") or (not _is_url(source) and Path(source).is_dir()):
        return "read_parquet"
    raise InputError(f"input {source!r}: use a .parquet, .csv or .jsonl file, or a folder of .parquet files")


def _output_kind(target: str) -> str:
    """ "file" (one .parquet file written here) or "folder" (parquet files written by the workers)."""
    if target.endswith("/") or (not _is_url(target) and Path(target).is_dir()):
        return "folder"
    if Path(target).suffix.lower() == ".parquet":
        return "file"
    raise InputError(f"output {target!r}: with --ray, write a .parquet file or a folder (ending in /)")


def check_address(address: str) -> None:
    """Refuse a Ray Client address (``ray://``): Ray Data does not run through Ray Client."""
    if address.startswith("ray://"):
        host = address.removeprefix("ray://").rpartition(":")[0] or "HEAD"
        raise click.BadParameter(
            f"{address!r}: Ray Data does not run through Ray Client (ray://); run the command on a node of "
            f"the cluster with --ray auto, or submit it as a job: `ray job submit --address http://{host}:8265 "
            "-- provender embed --ray auto ...`",
            param_hint="--ray",
        )


def check_ray_usage(
    *, texts: tuple[str, ...], input_file: str | None, output_file: str | None, collection: str | None
) -> tuple[str, str, str, str]:
    """Validate the arguments of `embed --ray` before Ray starts: (input, reader, output, output kind)."""
    if collection is not None:
        raise click.UsageError(
            "--ray writes a file, not a collection: drop -c (collections live in one local database)"
        )
    if texts:
        raise click.UsageError("--ray embeds a corpus file: give -i FILE, not TEXT arguments")
    if input_file is None:
        raise click.UsageError("--ray needs -i CORPUS (.parquet, .csv, .jsonl, or a folder of .parquet files)")
    if output_file is None:
        raise click.UsageError("--ray needs -o OUTPUT (.parquet, or a folder ending in /)")
    reader = _reader(input_file)
    if not _is_url(input_file) and not Path(input_file).exists():
        raise InputError(f"input file {input_file!r} does not exist")
    return input_file, reader, output_file, _output_kind(output_file)


def local_columns(source: str, reader: str) -> list[str] | None:
    """The columns of a local corpus, read without Ray (None for a URL or a folder without files)."""
    if _is_url(source):
        return None
    path = Path(source)
    try:
        if reader == "read_parquet":
            import pyarrow.parquet as pq

            first = path if path.is_file() else next(iter(sorted(path.rglob("*.parquet"))), None)
            return None if first is None else list(pq.read_schema(first).names)
        with open(path, encoding="utf-8") as f:
            line = f.readline()
        if reader == "read_csv":
            import csv

            return next(csv.reader([line]), [])
        import json

        row = json.loads(line) if line.strip() else {}
        return list(row) if isinstance(row, dict) else []
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {source!r}: {exc}") from None
    except Exception as exc:  # pyarrow's own errors (not a parquet file...)
        raise InputError(f"cannot read {source!r}: {_one_line(exc)}") from None


def check_input_columns(source: str, columns: list[str], text_column: str, vector_column: str) -> None:
    """One clear line (exit 2) when the text column is missing or the vector column taken."""
    if text_column not in columns:
        raise InputError(
            f"{source}: no column {text_column!r} (it has {', '.join(columns) or 'none'}); name it with --text-column"
        )
    if vector_column in columns:
        raise InputError(f"{source}: it already has a column {vector_column!r}; name another with --vector-column")


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail in one line, within `timeout`, when nothing listens at a cluster's address.

    (ray.init retries an unreachable address for minutes.)
    """
    import socket

    if address == "auto":
        try:
            from ray._private.services import (  # type: ignore[import-not-found, unused-ignore]
                canonicalize_bootstrap_address,
            )

            target = canonicalize_bootstrap_address("auto")
        except Exception as exc:
            raise _Failure(f"cannot find a Ray cluster to join (--ray auto): {_one_line(exc)}") from None
        if target is None:
            raise _Failure("no running Ray cluster found for --ray auto (start one with `ray start --head`)")
    else:
        target = address
    host, _, port = str(target).rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter(f"{address!r} is not a Ray address: use HOST:PORT or auto", param_hint="--ray")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise _Failure(f"cannot reach the Ray cluster at {address!r}: {exc}") from None


def _connect(address: str) -> Any:
    from provender_embedding._ray import require_ray

    ray = require_ray()
    if address != LOCAL:
        _probe(address)
    # Ray's C++ core logs warnings for the driver on stderr (one per actor about constructor
    # arguments); the run reports its own errors in one line.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address == LOCAL:
        options["address"] = "local"
    else:
        options["address"] = address
    try:
        ray.init(**options)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        where = "start a local Ray instance" if address == LOCAL else f"join the Ray cluster at {address!r}"
        raise _Failure(f"cannot {where}: {_one_line(exc)}") from None
    return ray


class _Failure(Exception):
    """A run that failed (exit 1), with its one-line reason."""


_ERROR_LINE = re.compile(r"^\s*(?:[\w]+\.)*(\w*(?:Error|Exception|Exit|Interrupt)): (.+)$")
_MARKERS = ("SystemException", "UserCodeException")  # Ray Data's wrappers, with no message of their own


def _one_line(exc: BaseException) -> str:
    """The innermost real error behind a Ray error, on one line (``Type: message``).

    Ray wraps an error raised in a worker (a RayTaskError, an ActorDiedError whose message
    holds the worker's traceback, Ray Data's SystemException marker): the line that counts is
    the last ``SomeError: message`` of the innermost one.
    """
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        inner = getattr(current, "cause", None)
        current = inner if isinstance(inner, BaseException) else (current.__cause__ or current.__context__)
    for error in reversed(chain):
        if type(error).__name__ in _MARKERS:
            continue
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        for line in reversed(lines):
            match = _ERROR_LINE.match(line)
            if match:
                return f"{match.group(1)}: {match.group(2)}"
        if lines:
            return f"{type(error).__name__}: {lines[-1]}"
    return type(exc).__name__


def run_ray(
    *,
    address: str,
    model: str,
    source: str,
    reader: str,
    target: str,
    kind: str,
    text_column: str,
    vector_column: str,
    batch_size: int,
    normalize: bool,
    concurrency: int | None,
    num_cpus: float,
    num_gpus: float | None,
) -> None:
    """Embed `source` on Ray and write `target`; a failure exits 1 with one line."""
    from provender_embedding._ray import embed_dataset, require_ray

    require_ray()  # before anything starts: the install hint, not a half-started cluster
    check_address(address)
    columns = local_columns(source, reader)
    if columns is not None:  # bad input is told before Ray starts
        check_input_columns(source, columns, text_column, vector_column)
    if address == LOCAL:
        # A local instance uses this machine's cache: get the model into it once, here (from the
        # remote tier or the Hub, as `provender pull`), or fail now in one line.
        from provender import get_provider
        from provender_embedding._ray import ensure_cached

        ensure_cached(model)
        get_provider(model)
    try:
        ray = _connect(address)
    except _Failure as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    start = time.perf_counter()
    try:
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = kind == "file"  # output row i is input row i
        context.enable_progress_bars = kind == "folder" and sys.stderr.isatty()
        for name in ("ray", "ray.data"):  # the run's outcome is told in one line, not in Ray's logs
            logging.getLogger(name).setLevel(logging.CRITICAL + 1)
        try:
            dataset = _read(ray, source, reader)
            columns = [str(c) for c in dataset.schema().names]
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"cannot read {source!r}: {_one_line(exc)}") from None
        check_input_columns(source, columns, text_column, vector_column)
        total = dataset.count()
        if total == 0:
            raise InputError(f"{source}: the corpus has no rows")
        out = embed_dataset(
            dataset,
            model,
            text_column=text_column,
            output_column=vector_column,
            # Up to N actors, from 1: a fixed pool waits for all its actors before the upstream
            # tasks (listing and reading files) may run, and with every CPU held they never do.
            concurrency=None if concurrency is None else (1, concurrency),
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            normalize=normalize,
            embed_batch_size=batch_size,
        )
        try:
            if kind == "folder":
                with warnings.catch_warnings():  # ray_remote_args: deprecated in 2.60, the only way here
                    warnings.simplefilter("ignore")
                    out.write_parquet(target, ray_remote_args={"num_cpus": 0})
                written = total
            else:
                written = _write_file(out, Path(target), total)
        except (InputError, click.ClickException):
            raise
        except Exception as exc:
            raise _Failure(f"embedding on Ray failed: {_one_line(exc)}") from None
    except _Failure as exc:
        _shutdown(ray)
        click.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except BaseException:
        _shutdown(ray)
        raise
    _shutdown(ray)
    elapsed = time.perf_counter() - start
    rate = written / elapsed if elapsed > 0 else float("inf")
    click.echo(f"{written} texts, {rate:.1f} texts/s on Ray; wrote {target}", err=True)


def _read(ray: Any, source: str, reader: str) -> Any:
    """The corpus as a Dataset.

    A local file is read here and handed to Ray in blocks (the workers of a remote cluster
    cannot see it); a folder or a URL is read by the workers, so on a cluster it must be on
    storage every node sees (s3://..., a shared filesystem).
    """
    path = Path(source)
    if _is_url(source) or path.is_dir():
        # No CPU of their own for the read tasks: the actors may hold them all.
        return getattr(ray.data, reader)(source, num_cpus=0)
    import pyarrow as pa

    if reader == "read_parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    elif reader == "read_csv":
        import pyarrow.csv as pacsv

        table = pacsv.read_csv(path)
    else:
        import pyarrow.json as pajson

        table = pajson.read_json(path)
    if not isinstance(table, pa.Table) or table.num_rows == 0:
        raise InputError(f"{source}: the corpus has no rows")
    step = max(1, min(BLOCK_ROWS, -(-table.num_rows // 64)))  # enough blocks for the actors to share
    return ray.data.from_arrow([table.slice(i, step) for i in range(0, table.num_rows, step)])


def _shutdown(ray: Any) -> None:
    try:
        ray.shutdown()
    except Exception as exc:  # nothing to do about it now: the run's outcome stands
        logger.debug("ray.shutdown failed: %s", exc)


def _write_file(out: Any, path: Path, total: int) -> int:
    """Stream the embedded rows into one parquet file (complete, or not there at all)."""
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.partial")
    written = 0
    show = sys.stderr.isatty()
    writer = None
    try:
        with click.progressbar(length=total, label="embedding", file=sys.stderr, hidden=not show) as bar:
            for batch in out.iter_batches(batch_format="pyarrow", batch_size=None):
                if writer is None:
                    writer = pq.ParquetWriter(tmp, batch.schema)
                writer.write_table(batch)
                written += batch.num_rows
                bar.update(batch.num_rows)
        if writer is None:
            raise _Failure(f"no rows came back from Ray; nothing written to {path}")
        writer.close()
        writer = None
        os.replace(tmp, path)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    return written
