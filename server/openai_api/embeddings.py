"""``/v1/embeddings``: the embedding model the documents index uses (all-MiniLM-L6-v2, shipped on PyPI).

Embeddings do not take a turn in the page's queue: a batch is a fraction of a second, and the model runs one
forward pass at a time for the index and the API alike (its own lock), so neither waits long for the other.
"""

from __future__ import annotations

import base64

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from engines.base import EngineError
from server.openai_api.common import ALIASES, authenticate
from server.openai_api.errors import OpenAIError, not_found_model
from server.openai_api.schemas import EmbeddingRequest, EmbeddingResponse
from server.principal import Principal



def model_id(embedder) -> str:
    return embedder.name


def add_routes(router: APIRouter, embedder) -> None:
    @router.post("/embeddings", response_model=EmbeddingResponse, summary="Embed texts (all-MiniLM-L6-v2, 384 dimensions)")
    async def embeddings(body: EmbeddingRequest, principal: Principal = Depends(authenticate)) -> dict:
        name = model_id(embedder)
        if body.model not in (None, name, *ALIASES["embedding"]):
            raise not_found_model(body.model, [name])
        if body.dimensions not in (None, embedder.dimensions):
            raise OpenAIError(400, f"This model gives {embedder.dimensions} dimensions only; got dimensions={body.dimensions}.", param="dimensions", code="invalid_dimensions")
        texts = [body.input] if isinstance(body.input, str) else list(body.input)
        try:
            vectors = await run_in_threadpool(embedder.embed, texts)
            tokens = await run_in_threadpool(embedder.count_tokens, texts)
        except EngineError as e:
            raise OpenAIError(500, str(e), "server_error", code="engine_error") from None
        if body.encoding_format == "base64":
            rows = [base64.b64encode(row.astype("<f4").tobytes()).decode("ascii") for row in vectors]
        else:
            rows = [row.tolist() for row in vectors]
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)],
            "model": name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
