"""Reranking over HTTP, in the three shapes clients speak:

- ``POST /v2/rerank``: Cohere's (the ``cohere`` package's ``ClientV2.rerank``): ``model``,
  ``query``, ``documents`` (strings), ``top_n`` -> ``{"id", "results": [{"index",
  "relevance_score"}], "meta"}``; errors ``{"message"}``.
- ``POST /v1/rerank``: Jina's and llama.cpp's server's: ``model``, ``query``, ``documents``
  (strings or ``{"text"}`` objects), ``top_n``, ``return_documents`` -> ``{"model", "object",
  "usage", "results": [{"index", "relevance_score", "document"?}]}``; errors OpenAI-shaped.
- ``POST /rerank``: text-embeddings-inference's: ``query``, ``texts``, ``return_text``,
  ``raw_scores`` (false only), ``truncate`` -> ``[{"index", "score", "text"?}]``; errors
  ``{"error", "error_type"}`` (422 for bad input). ``model`` may be given; without it, the one
  model of the server's allow-list (``server.models``).

Results come most relevant first (ties in the order given), ``top_n`` of them when it is
given; a score is the provider's (`provender.Provider.rerank`: for a cross-encoder,
``CrossEncoder.predict``'s sigmoid). Each request runs on its model's thread through the same
admission as the embeddings (key, allow-list, walls, queue limit, body limit, pull policy).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from provender_serve import _openai as oai
from provender_serve._models import Slot, api_error
from provender_serve._schemas import _Strict, parse
from provender_serve._threads import error_response, on_model
from provender_serve.errors import APIError

if TYPE_CHECKING:
    from provender_serve._app import Server

#: the most documents one request may rerank (as many as an embeddings request's texts)
MAX_DOCUMENTS = 4096
Name = Annotated[str, Field(min_length=1, max_length=1024)]
Documents = Annotated[list[str], Field(max_length=MAX_DOCUMENTS)]
TopN = Annotated[int, Field(ge=1)]


class CohereRerank(_Strict):
    model: Name
    query: str
    documents: Documents
    top_n: TopN | None = None
    max_tokens_per_doc: int | None = None  # refused: documents are cut at the model's own maximum length
    relevant_spans: Any = None  # refused when asked for
    priority: int | None = None  # a scheduling hint; one queue per model here


class TextDocument(_Strict):
    text: str


class JinaRerank(_Strict):
    model: Name
    query: str
    documents: Annotated[list[str | TextDocument], Field(max_length=MAX_DOCUMENTS)]
    top_n: TopN | None = None
    return_documents: bool = False


class TEIRerank(_Strict):
    model: Name | None = None  # provender's: TEI serves one model
    query: str
    texts: Documents
    return_text: bool = False
    raw_scores: bool = False
    truncate: bool | None = None  # documents are always cut at the model's maximum length
    truncation_direction: str = "Right"


async def ranked(
    server: Server, request: Request, model: str, query: str, documents: list[str], top_n: int | None
) -> tuple[list[tuple[int, float]], int]:
    """(index, score) of the `top_n` documents most relevant to `query`, and the tokens read."""
    if not documents:
        raise APIError(400, "documents: give at least one document (nothing to rerank)", "invalid_value", "documents")
    await server._check_pull(request, model)

    def work(slot: Slot) -> tuple[list[float], int]:
        with server.registry.hold(slot, kind="rerank"):
            scores = slot.provider.rerank(query, documents)
            pairs = len(documents) * oai.count_tokens(slot.provider, query)
            tokens = pairs + sum(oai.count_tokens(slot.provider, d) for d in documents)
        if len(scores) != len(documents):
            raise APIError(500, f"the provider gave {len(scores)} scores for {len(documents)} documents")
        return [float(s) for s in scores], tokens

    scores, tokens = await on_model(server.registry, model, work)
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return [(i, scores[i]) for i in order[:top_n]], tokens


class Rerank:
    """The three routes, bound to one server."""

    def __init__(self, server: Server) -> None:
        self.server = server

    async def cohere(self, request: Request) -> Response:
        req: CohereRerank = parse(CohereRerank, await self.server._json(request))
        if req.max_tokens_per_doc is not None:
            raise APIError(
                400, "max_tokens_per_doc: not supported; documents are cut at the model's maximum length", "unsupported"
            )
        if req.relevant_spans:
            raise APIError(400, "relevant_spans: not supported", "unsupported")
        results, tokens = await ranked(self.server, request, req.model, req.query, req.documents, req.top_n)
        return JSONResponse(
            {
                "id": str(uuid.uuid4()),
                "results": [{"index": i, "relevance_score": s} for i, s in results],
                "meta": {
                    "api_version": {"version": "2"},
                    "billed_units": {"search_units": 1},
                    "tokens": {"input_tokens": tokens},
                },
            }
        )

    async def jina(self, request: Request) -> Response:
        req: JinaRerank = parse(JinaRerank, await self.server._json(request))
        docs = [d if isinstance(d, str) else d.text for d in req.documents]
        results, tokens = await ranked(self.server, request, req.model, req.query, docs, req.top_n)
        rows: list[dict[str, Any]] = []
        for i, s in results:
            row: dict[str, Any] = {"index": i, "relevance_score": s}
            if req.return_documents:
                row["document"] = {"text": docs[i]}
            rows.append(row)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResponse({"model": req.model, "object": "list", "usage": usage, "results": rows})

    async def tei(self, request: Request) -> Response:
        req: TEIRerank = parse(TEIRerank, await self.server._json(request))
        if req.raw_scores:
            raise APIError(400, "raw_scores: only the model's scores (with its activation) are served", "unsupported")
        if req.truncation_direction.lower() != "right":
            raise APIError(400, "truncation_direction: documents are cut on the right only", "unsupported")
        model = req.model or self._only_model()
        results, _ = await ranked(self.server, request, model, req.query, req.texts, None)
        return JSONResponse(
            [{"index": i, "score": s, **({"text": req.texts[i]} if req.return_text else {})} for i, s in results]
        )

    def _only_model(self) -> str:
        allowed = self.server.options.allowed
        if len(allowed) == 1:
            return allowed[0]
        raise APIError(
            400, "model: name the reranker (this server's allow-list does not name exactly one model)", "missing_field"
        )


def _shaped(status: int, body: Any, error: APIError) -> JSONResponse:
    headers = dict(error_response(error).headers)
    kept = {k: v for k, v in headers.items() if k.lower() in ("retry-after", "www-authenticate")}
    return JSONResponse(body, status_code=status, headers=kept)


def cohere_error(error: APIError) -> Response:
    return _shaped(error.status, {"message": error.message}, error)


def tei_error(error: APIError) -> Response:
    kind = "Overloaded" if error.status == 503 else "Backend" if error.status >= 500 else "Validation"
    if error.status == 401:
        kind = "Unauthorized"
    status = 422 if error.status == 400 else error.status
    return _shaped(status, {"error": error.message, "error_type": kind}, error)


def endpoint(
    server: Server, handler: Callable[[Request], Awaitable[Response]], shape: Callable[[APIError], Response]
) -> Callable[[Request], Awaitable[Response]]:
    """`handler` behind the server's key, its errors in `shape`."""

    async def wrapped(request: Request) -> Response:
        try:
            server._check_auth(request)
            return await handler(request)
        except Exception as exc:
            return shape(api_error(exc))

    return wrapped


def routes(server: Server) -> list[Route]:
    api = Rerank(server)
    return [
        Route("/v2/rerank", endpoint(server, api.cohere, cohere_error), methods=["POST"]),
        Route("/v1/rerank", endpoint(server, api.jina, error_response), methods=["POST"]),
        Route("/rerank", endpoint(server, api.tei, tei_error), methods=["POST"]),
    ]
