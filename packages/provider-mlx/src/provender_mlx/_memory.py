"""`MLXProvider._model_cache`: the MLX models in the process's shared model pool.

Loaded models live in the core's `provender.model_pool()` (one pool per process, shared
by every provider, bounded by ``memory.max_models`` and ``memory.keep_alive``) under the
key ``"mlx:<model>"``. This module keeps the seed's API on top of it: a view of MLX's
models by name. `LoadedModel` is re-exported for code that imported it from here.
"""

from __future__ import annotations

from collections.abc import Iterator

from provender._pool import LoadedModel, ModelPool, model_pool

__all__ = ["PROVIDER", "LoadedModel", "LoadedModels", "pool_key"]

PROVIDER = "mlx"


def pool_key(name: str) -> str:
    """The shared pool's key for the MLX model `name`."""
    return f"{PROVIDER}:{name}"


class LoadedModels:
    """MLX's models in the shared pool, by model name, least recently used first."""

    def __init__(self, pool: ModelPool | None = None) -> None:
        self._pool = pool

    @property
    def pool(self) -> ModelPool:
        """The pool this view looks into (the process's, unless one was given)."""
        return self._pool if self._pool is not None else model_pool()

    def configure(self, max_models: int | None = None, keep_alive: float | None = None) -> None:
        """Set the pool's limits (None: from the settings) and apply them now. The pool is
        shared, so this sets them for every provider in the process."""
        self.pool.configure(max_models=max_models, keep_alive=keep_alive)

    def get(self, name: str) -> LoadedModel | None:
        return self.pool.get(pool_key(name))

    def put(self, item: LoadedModel) -> None:
        item.provider = PROVIDER
        self.pool.put(pool_key(item.name), item)

    def pop(self, name: str) -> LoadedModel | None:
        return self.pool.pop(pool_key(name))

    def clear(self) -> list[str]:
        return [key.removeprefix(f"{PROVIDER}:") for key in self.pool.clear(provider=PROVIDER)]

    def names(self) -> list[str]:
        return [key.removeprefix(f"{PROVIDER}:") for key in self.pool.keys(provider=PROVIDER)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and pool_key(name) in self.pool

    def __len__(self) -> int:
        return len(self.names())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
