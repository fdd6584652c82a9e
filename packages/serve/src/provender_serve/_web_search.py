"""Collection search for the web page: ``GET /api/web/collections`` and ``POST /api/web/search``.

The collections are provender-embedding's (`provender_embedding.Collection`, in
``<data.dir>/embeddings.db``, as `provender collections` lists them). A search embeds its text
with the collection's own model *through this server* (its model registry and embedding batches,
as ``/v1/embeddings`` does: ``server.models``, ``server.pull``, the queue limit and keep-alive
apply, and the model shows in ``provender ps``), then asks ``Collection.similar_by_vector`` for the
top `n`: the same hits, in the same order, as ``Collection(name).similar(text, n)`` in process.

The search reads, yet it is a POST that needs the page's token, as the page's other actions do:
the text stays out of URLs (and so out of access logs and history, like the API key), and a
search may load a model (memory, and under ``memory.max_models`` another model's unloading),
which changes what the server holds. The walls and the API key apply as on every route.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from provender_serve._threads import run_in_thread
from provender_serve.errors import APIError

if TYPE_CHECKING:
    from provender_serve._app import Server
    from provender_serve._web_api import WebToken

#: the most hits one search answers, and the default
MAX_HITS = 100
DEFAULT_HITS = 10
#: the longest query text, in characters
MAX_TEXT = 10_000


def database() -> Path:
    """The collections' database (``<data.dir>/embeddings.db``)."""
    from provender_embedding._collection import default_db_path

    return default_db_path()


def collections() -> list[dict[str, Any]]:
    """Every collection (name, model, dimension, count, created); none when there is no database
    yet (a read creates no file)."""
    from provender_embedding import Collection

    path = database()
    return Collection.list(path) if path.exists() else []


def search_request(body: Any) -> tuple[str, str, int]:
    """(collection, text, n) of a search body, or a 400 naming the field."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", "invalid_json")
    name, text, n = body.get("collection"), body.get("text"), body.get("n", DEFAULT_HITS)
    if not isinstance(name, str) or not name.strip():
        raise APIError(
            400, "'collection' must name a collection (GET /api/web/collections)", "invalid_value", "collection"
        )
    if not isinstance(text, str) or not text.strip():
        raise APIError(400, "'text' must be a non-empty string to search for", "invalid_value", "text")
    if len(text) > MAX_TEXT:
        raise APIError(400, f"'text' is longer than {MAX_TEXT} characters", "invalid_value", "text")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_HITS:
        raise APIError(400, f"'n' must be an integer from 1 to {MAX_HITS}", "invalid_value", "n")
    return name, text, n


class WebSearch:
    """The two routes' handlers, bound to one server and its token."""

    def __init__(self, server: Server, token: WebToken) -> None:
        self.server = server
        self.token = token

    async def collections(self, request: Request) -> Response:
        return JSONResponse({"collections": await run_in_thread(collections)})

    async def search(self, request: Request) -> Response:
        self.token.check(request)
        name, text, n = search_request(await self.server._json(request))
        model = await run_in_thread(lambda: self._model_of(name))
        await self.server._check_pull(request, model)
        vectors, _tokens = await self.server.embed_batches.embed(model, [text], None)

        def similar() -> list[dict[str, Any]]:
            from provender_embedding import Collection, CollectionError, CollectionNotFoundError

            try:
                collection = Collection(name, db_path=database())
            except CollectionNotFoundError as exc:  # dropped since its model was looked up
                raise APIError(404, str(exc), "collection_not_found", "collection") from None
            try:
                return [hit.to_dict() for hit in collection.similar_by_vector(vectors[0], n)]
            except CollectionError as exc:  # its vectors are not the model's (another dimension)
                raise APIError(400, str(exc), "invalid_value", "collection") from None
            finally:
                collection.close()

        hits = await run_in_thread(similar)
        return JSONResponse({"collection": name, "model": model, "hits": hits})

    @staticmethod
    def _model_of(name: str) -> str:
        """The model that embedded collection `name` (404 if there is none of that name, 400 if it
        holds precomputed vectors only). Opens the one collection: no count of every collection's items."""
        from provender_embedding import Collection, CollectionError, CollectionNotFoundError

        path = database()
        try:
            if not path.exists():  # no database yet: no collection, and no file made by a read
                raise CollectionNotFoundError(name)
            collection = Collection(name, db_path=path)
        except CollectionNotFoundError:
            message = f"no collection named {name!r} (see GET /api/web/collections)"
            raise APIError(404, message, "collection_not_found", "collection") from None
        except CollectionError as exc:  # not a collection name (too long, blank)
            raise APIError(400, str(exc), "invalid_value", "collection") from None
        model = collection.model
        collection.close()
        if not model:
            raise APIError(
                400,
                f"collection {name!r} has no model (its vectors were given precomputed): it cannot be searched by text",
                "invalid_value",
                "collection",
            )
        return model
