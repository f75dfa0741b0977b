"""The OpenAI-compatible API at ``/v1``, on the app's own port, behind the same guard as the page.

``openai_router(engines, blocks, access, upload_limit_mb)`` is one ``APIRouter``: every route depends on
``authenticate`` (the guard's principal: a session, an API key, or the host on this machine), runs its job in
the page's queue (``turns``), and answers errors in OpenAI's shape (``errors``). Include it before the Gradio
mount at "/" so its routes come first.

This package is the one place under ``server/`` that calls the engines: it is the engines' HTTP face, as the
panels are their page. It still never imports the UI.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from server.openai_api import audio, chat, embeddings, images
from server.openai_api.common import ALIASES, V1, authenticate
from server.openai_api.errors import OpenAIError, V1Route
from server.openai_api.schemas import ErrorResponse, Model, ModelList
from server.openai_api.turns import Turns
from server.principal import Principal

ERRORS = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Invalid request (OpenAI's error shape)",
        401: "Missing or wrong API key",
        403: "Only the host may do that",
        404: "Unknown model",
        413: "The body is too large",
        429: "A guest's job is already waiting or running on this engine",
        500: "The engine failed",
        503: "The queue is full",
    }.items()
}


def openai_router(engines, blocks, access, upload_limit_mb: int = 2048, jobs_per_guest: int = 1, embedder=None) -> APIRouter:
    """``engines``: the app's ``Engines`` (chat, image, speech); ``blocks``: the page, whose queue the jobs
    share; ``access``: ``ui.access.Access`` (per-person folders and caps); ``embedder``: the documents'
    embedding model, served at /v1/embeddings (none: no such route)."""
    turns = Turns(blocks, jobs_per_guest)
    turns.register()
    v1 = V1(engines.chat, engines.image, engines.speech, turns, access)
    route_class = type("V1Routes", (V1Route,), {"upload_limit": upload_limit_mb * 2**20})
    router = APIRouter(prefix="/v1", route_class=route_class, dependencies=[Depends(authenticate)], responses=ERRORS, tags=["OpenAI-compatible"])

    def model_list() -> list[Model]:
        listed = [Model(id=v1.running(kind), created=v1.started, owned_by="melange", kind=kind) for kind in ("chat", "image", "speech")]
        if embedder is not None:
            listed.append(Model(id=embeddings.model_id(embedder), created=v1.started, owned_by="melange", kind="embedding"))
        return listed

    @router.get("/models", response_model=ModelList, summary="The models each panel runs")
    async def models() -> dict:
        return {"object": "list", "data": model_list()}

    @router.get("/models/{model:path}", response_model=Model, summary="One model")
    async def model(model: str) -> Model:
        for entry in model_list():
            if model == entry.id or model in ALIASES[entry.kind]:
                return entry
        raise OpenAIError(404, f"The model {model[:200]!r} does not exist here (see /v1/models).", code="model_not_found", param="model")

    chat.add_routes(router, v1)
    images.add_routes(router, v1)
    audio.add_routes(router, v1)
    if embedder is not None:
        embeddings.add_routes(router, embedder)

    known = {route.path for route in router.routes}

    @router.api_route("/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def unknown(rest: str, request: Request, principal: Principal = Depends(authenticate)) -> None:
        if f"/v1/{rest}" in known:
            raise OpenAIError(405, f"{request.method} is not allowed on /v1/{rest[:200]}.", code="method_not_allowed")
        raise OpenAIError(404, f"Invalid URL ({request.method} /v1/{rest[:200]}).", code="unknown_url")

    return router
