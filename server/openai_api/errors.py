"""Every ``/v1`` error in OpenAI's shape, in one place.

``{"error": {"message", "type", "param", "code"}}`` with the status OpenAI's clients expect: a malformed or
invalid request 400, no or a wrong key 401 (the guard answers that one), a guest asking for a host-only thing
403, an unknown model or URL 404, too large a body 413, a guest's second job on an engine 429, a full queue
503, an engine failure 500. ``V1Route`` wraps every ``/v1`` route so that nothing else ever leaves: request
validation, engine errors and anything unexpected are turned into this shape here, and no message carries a
request's headers or a key.
"""

from __future__ import annotations

import logging

from fastapi import HTTPException
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from engines.base import EngineError, InputError

log = logging.getLogger("melange.v1")

MAX_JSON_BODY = 8 * 2**20  # past any context window; a 10 MB prompt is refused before it is parsed
STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, type: str | None = None, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or STATUS_TYPES.get(status, "server_error")
        self.code = code
        self.param = param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"retry-after": "1"} if self.status in (429, 503) else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


class BodyTooLarge(HTTPException):
    """Raised while the body is read (an HTTPException, so FastAPI's body parsing lets it through)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request body is larger than {limit // 2**20} MB.")
        self.limit = limit


def not_found_model(model: str, available: list[str]) -> OpenAIError:
    listed = ", ".join(repr(m) for m in available[:8]) or "none"
    return OpenAIError(404, f"The model {model[:200]!r} does not exist here. Available: {listed} (see /v1/models).", code="model_not_found", param="model")


def field_path(loc) -> str | None:
    """A pydantic error location as the caller named the field: ``messages.0.content``, without the body and form
    markers, nor the tags pydantic gives a union's alternatives (``str``, ``constrained-str``, ``list[str]``)."""
    parts = [str(part) for part in loc if part not in ("body", "form") and not is_union_tag(part)]
    return ".".join(parts) or None


def is_union_tag(part) -> bool:
    return isinstance(part, str) and ("[" in part or "-" in part or part in ("str", "int", "float", "bool", "list", "dict"))


def from_validation(error: RequestValidationError) -> OpenAIError:
    """Pydantic's first complaint, named by its field, without echoing the value sent. A field that takes one of
    several forms (a text or a list of texts) names what each form wanted."""
    problems = error.errors()
    first = problems[0] if problems else {"msg": "Invalid request.", "loc": ()}
    if first.get("type") == "json_invalid":
        return OpenAIError(400, "The body is not valid JSON: send a JSON object with Content-Type: application/json.", code="invalid_json")
    if first.get("type") == "model_attributes_type" and not field_path(first.get("loc", ())):
        return OpenAIError(400, "The body must be a JSON object of named fields, not a list or a single value.", code="invalid_body")
    param = field_path(first.get("loc", ()))
    if first.get("type") == "missing":
        message = f"Missing required parameter: {param!r}." if param else "The request body is missing."
        return OpenAIError(400, message, code="missing_required_parameter", param=param)
    same_field = [p for p in problems if field_path(p.get("loc", ())) == param]
    wanted = list(dict.fromkeys(str(p.get("msg", "Invalid value.")) for p in same_field))
    message = " — or: ".join(wanted)
    others = len(problems) - len(same_field)
    more = f" ({others} more problem{'s' if others > 1 else ''})" if others else ""
    return OpenAIError(400, f"Invalid value for {param!r}: {message}{more}" if param else message + more, code="invalid_value", param=param)


def from_exception(error: BaseException, is_host: bool) -> OpenAIError:
    """An engine's error (or anything else) as an answer. A guest never sees what failed inside the server."""
    if isinstance(error, OpenAIError):
        return error
    if isinstance(error, BodyTooLarge):
        return OpenAIError(413, str(error.detail), code="request_too_large")
    if isinstance(error, RequestValidationError):
        return from_validation(error)
    if isinstance(error, InputError):
        return OpenAIError(400, str(error), code="invalid_value")
    if isinstance(error, StarletteHTTPException):  # FastAPI's are Starlette's too: a body that cannot be parsed
        return OpenAIError(error.status_code, str(error.detail), code="invalid_body" if error.status_code == 400 else None)
    if isinstance(error, EngineError):
        log.warning("engine error on /v1: %s", error)
        message = f"The engine could not do that: {error}" if is_host else "The engine could not serve this request; the host can see why in the server's log."
        return OpenAIError(500, message, "server_error", code="engine_error")
    log.exception("unexpected error on /v1", exc_info=error)
    return OpenAIError(500, "Something went wrong inside Melange; the server's log says what.", "server_error", code="internal_error")


class V1Route(APIRoute):
    """A ``/v1`` route: the body is limited while it is read, and every failure leaves in OpenAI's shape."""

    body_limit = MAX_JSON_BODY
    upload_limit = 2 * 2**30  # routes that take a file (--max-upload-mb)
    upload_prefix = "/v1/audio/"

    def get_route_handler(self):
        handler = super().get_route_handler()
        limit = self.upload_limit if self.path.startswith(self.upload_prefix) else self.body_limit

        async def guarded(request: Request) -> Response:
            from server.guard import principal_of
            from server.openai_api.turns import ClientGone

            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                return OpenAIError(413, f"The request body is larger than {limit // 2**20} MB.", code="request_too_large").response()
            try:
                return await handler(Request(request.scope, _limited(request.receive, limit)))
            except ClientGone:
                return Response(status_code=499)  # nobody is listening; close quietly
            except Exception as e:  # noqa: BLE001 - every failure becomes an OpenAI-shaped answer
                principal = principal_of(request)
                return from_exception(e, principal is not None and principal.is_host).response()

        return guarded


def _limited(receive, limit: int):
    """``receive`` that refuses a body past ``limit`` bytes however it is sent (chunked bodies name no length)."""
    seen = 0

    async def limited():
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return limited
