"""`embed_dataset`: embed a corpus held in a Ray Dataset with a pool of actors.

Each actor builds one `Embedder(model)` on its own node, so the model comes from that node's
provender cache (and from the remote tier when one is set), is loaded once, and embeds every
batch the actor is given. Ray Data schedules the batches; a worker that dies is restarted by
Ray and its batch runs again, so every input row comes out exactly once.

Ray is an optional dependency (``pip install "provender-embedding[ray]"``), imported only
when this module is used.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from provender import InvalidOptionError

if TYPE_CHECKING:
    import pyarrow
    from ray.data import Dataset  # type: ignore[import-not-found, unused-ignore]

logger = logging.getLogger(__name__)

RAY_HINT = 'pip install "provender-embedding[ray]"'
DEFAULT_BATCH_SIZE = 256
# Fault tolerance is Ray Data's default for an actor pool (ray 2.40 to 2.60 at least: its
# ActorPoolMapOperator sets max_restarts=-1 and max_task_retries=-1 unless told otherwise): an
# actor process that dies is started again and the batches it held run again, so each row
# comes out once. Passing them here would only trip Ray 2.60's deprecation of extra remote
# arguments; `ray_remote_args={"max_restarts": 0}` turns it off. An exception raised by the
# embedding itself (a row that is not a text) is not retried: it fails the run.


def require_ray() -> Any:
    """Import ray (with Ray Data), or raise ImportError naming the extra to install."""
    try:
        import ray  # type: ignore[import-not-found, unused-ignore]
        import ray.data  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise ImportError(f"embedding on Ray needs ray[data]: {RAY_HINT} ({exc})") from None
    return ray


def embed_dataset(
    dataset: Dataset,
    model: str,
    *,
    text_column: str = "text",
    output_column: str = "embedding",
    batch_size: int = DEFAULT_BATCH_SIZE,
    concurrency: int | tuple[int, int] | None = None,
    num_cpus: float | None = 1,
    num_gpus: float | None = None,
    normalize: bool = True,
    provider: str | None = None,
    embed_batch_size: int | None = None,
    pull: bool = True,
    ray_remote_args: dict[str, Any] | None = None,
) -> Dataset:
    """A Ray Dataset with the rows of `dataset` and the vector of each row's text.

    Args:
        dataset: the corpus; every row needs a string in `text_column`.
        model: the embedding model, as `Embedder` takes it (``org/name``, a cached name, or
            ``provider:model``). Each actor resolves it on its own node, through that node's
            cache (and remote tier).
        text_column: the column holding the texts.
        output_column: the new column, a fixed-size list of float32 (the model's dimension).
        batch_size: rows handed to an actor at a time (also the unit of retry).
        concurrency: actors in the pool: ``n`` for a fixed pool, ``(min, max)`` to autoscale;
            None autoscales from 1 to what the cluster has room for.
        num_cpus, num_gpus: resources each actor reserves (torch in an actor uses as many
            threads as its CPUs).
        normalize: L2-normalise the vectors (the default, as `Embedder`).
        provider: the provider to use (``"transformers"``, ``"mlx"``...); None lets
            ``providers.prefer`` choose on each node.
        embed_batch_size: texts per forward pass inside an actor (default: `Embedder`'s).
        pull: an actor whose node's cache lacks the model pulls it first, as `provender pull`
            does: from the remote tier when ``remote.url`` is set on that node, else from the
            Hub (processes of one node wait for each other's download). False: a node without
            the model fails the run.
        ray_remote_args: more arguments for the actors (``runtime_env``, ``resources``,
            ``max_restarts``, ...).

    Returns:
        A lazy Dataset: the input columns unchanged plus `output_column`. Each input row
        comes out exactly once; rows keep their order only when the Dataset's
        ``DataContext.execution_options.preserve_order`` is set.
    """
    ray = require_ray()
    if not isinstance(dataset, ray.data.Dataset):
        raise InvalidOptionError("dataset", type(dataset).__name__, "a ray.data.Dataset")
    if not isinstance(model, str) or not model.strip():
        raise InvalidOptionError("model", model, "a model name")
    for name, value in (("text_column", text_column), ("output_column", output_column)):
        if not isinstance(value, str) or not value:
            raise InvalidOptionError(name, value, "a column name")
    if output_column == text_column:
        raise InvalidOptionError("output_column", output_column, "a column other than the text column")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidOptionError("batch_size", batch_size, "an integer >= 1")
    if provider is not None:
        if not isinstance(provider, str) or not provider or ":" in provider:
            raise InvalidOptionError("provider", provider, "a provider name such as 'transformers'")
        model = f"{provider}:{model}"
    columns = dataset.columns(fetch_if_missing=False)
    if columns is not None:
        check_columns(columns, text_column, output_column)
    compute = ray.data.ActorPoolStrategy(**_pool_size(concurrency))
    remote_args: dict[str, Any] = dict(ray_remote_args or {})
    if num_cpus is not None:
        remote_args["num_cpus"] = num_cpus
    if num_gpus is not None:
        remote_args["num_gpus"] = num_gpus
    result: Dataset = dataset.map_batches(
        EmbedBatches,
        fn_constructor_kwargs={
            "model": model,
            "text_column": text_column,
            "output_column": output_column,
            "normalize": normalize,
            "embed_batch_size": embed_batch_size,
            "pull": pull,
        },
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=compute,
        zero_copy_batch=True,
        **remote_args,
    )
    return result


def check_columns(columns: list[str], text_column: str, output_column: str) -> None:
    """Raise InvalidOptionError unless `text_column` is there and `output_column` is not."""
    if text_column not in columns:
        raise InvalidOptionError(
            "text_column", text_column, f"a column of the dataset (it has {', '.join(columns) or 'none'})"
        )
    if output_column in columns:
        raise InvalidOptionError("output_column", output_column, "a name the dataset does not use yet")


def _pool_size(concurrency: int | tuple[int, int] | None) -> dict[str, int | None]:
    if concurrency is None:
        return {"min_size": 1, "max_size": None}
    if isinstance(concurrency, int) and not isinstance(concurrency, bool) and concurrency >= 1:
        return {"size": concurrency}
    if (
        isinstance(concurrency, tuple)
        and len(concurrency) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) for n in concurrency)
        and 1 <= concurrency[0] <= concurrency[1]
    ):
        return {"min_size": concurrency[0], "max_size": concurrency[1]}
    raise InvalidOptionError("concurrency", concurrency, "an integer >= 1 or a (min, max) pair")


def ensure_cached(model: str) -> str | None:
    """Pull `model` into this machine's cache unless it is there (or is a local path).

    Returns where it came from (``"remote"``, ``"hub"``), or None when nothing was pulled.
    """
    from pathlib import Path

    from provender import CacheManager, parse_model_name

    _, name = parse_model_name(model)
    if "/" not in name or name.startswith((".", "/", "~")) or Path(name).exists():
        return None  # a local path or a bare cached name: resolution decides
    cache = CacheManager()
    if cache.find(name) is not None:
        return None
    tier = cache.remote.url if cache.remote is not None else "none"
    logger.info("%s is not in this node's cache (%s): pulling it (remote tier: %s)", name, cache.cache_dir, tier)
    result = cache.pull(name, progress=False)
    logger.info("%s pulled from %s", name, result.source)
    return str(result.source)


class EmbedBatches:
    """The callable class Ray Data runs in each actor: one `Embedder`, loaded once."""

    def __init__(
        self,
        *,
        model: str,
        text_column: str,
        output_column: str,
        normalize: bool,
        embed_batch_size: int | None,
        pull: bool = True,
    ) -> None:
        from provender_embedding._embedder import DEFAULT_BATCH_SIZE as EMBED_BATCH
        from provender_embedding._embedder import Embedder

        if pull:
            ensure_cached(model)
        self.embedder = Embedder(model, batch_size=embed_batch_size or EMBED_BATCH)
        self.text_column = text_column
        self.output_column = output_column
        self.normalize = normalize
        self.dimension = self.embedder.dimension  # loads the model now, once per actor
        logger.info("actor %d: %s loaded (dimension %d)", os.getpid(), model, self.dimension)

    def __call__(self, batch: pyarrow.Table) -> pyarrow.Table:
        import numpy as np
        import pyarrow as pa

        if self.text_column not in batch.column_names:
            raise KeyError(f"the dataset has no column {self.text_column!r} (it has {', '.join(batch.column_names)})")
        texts = batch.column(self.text_column).to_pylist()
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"column {self.text_column!r} holds a {type(text).__name__} ({text!r:.40}), not a text")
        vectors = self.embedder.embed(texts, normalize=self.normalize)
        values = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1), type=pa.float32())
        column = pa.FixedSizeListArray.from_arrays(values, self.dimension)
        return batch.append_column(self.output_column, column)
