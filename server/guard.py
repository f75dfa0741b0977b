"""The one gate every request passes, whatever route it is for (an ASGI middleware around the whole app).

In order:
1. ``Host`` must name this server (else 400): a page on another site that rebinds its DNS name to this
   machine is refused before anything runs.
2. A browser request from another site (an ``Origin`` not among the app's own) is refused (403).
3. Who is asking: a session cookie, an API key (``Authorization: Bearer``), the host on this machine itself
   (loopback), or nobody. When login is required nobody gets only the login page and ``/health``: a page
   load is sent to ``/login``, anything else answers 401.
4. Gradio's own routes trust what the client says; ``gradio_rules`` checks those claims (whose session,
   whose event, whose file, which endpoint) before Gradio sees the request.
Every answer leaves with ``X-Content-Type-Options: nosniff`` and a frame policy.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from server.accounts import Accounts
from server.network import is_loopback, split_host
from server.principal import HOST, Principal

SESSION_COOKIE = "melange_session"
PRINCIPAL_KEY = "melange.principal"  # where the guard leaves the principal in the ASGI scope
PUBLIC_PATHS = ("/login", "/health")
MAX_JSON_BODY = 64 * 2**20  # a queue join carries values, not files (those go through /upload)
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"SAMEORIGIN"),
    (b"referrer-policy", b"same-origin"),
]

Scope = dict
ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]


@dataclass
class Policy:
    hosts: set[str]  # names the Host header may carry
    origins: set[str]  # the app's own browser origins
    login_required: bool  # False on loopback-only and with --no-auth: everyone is the host
    accounts: Accounts | None = None
    loopback_is_host: bool = True  # the person at the machine itself is the host
    secure_cookies: bool = False  # https: cookies only over TLS
    gradio_rules: object | None = None  # server.gradio_rules.GradioRules, set once the UI is mounted
    extra_public: tuple[str, ...] = field(default=())
    # Pages may show images from this server only: a chat reply cannot smuggle data out through an image URL.
    page_csp: str | None = "img-src 'self' data: blob:"


def principal_of(request: Request) -> Principal | None:
    """The principal the guard found for this request (None: not signed in)."""
    return request.scope.get(PRINCIPAL_KEY)


def _bearer(headers: Headers) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _cookie(headers: Headers, name: str) -> str | None:
    from http.cookies import SimpleCookie

    raw = headers.get("cookie")
    if not raw:
        return None
    cookie = SimpleCookie()
    try:
        cookie.load(raw)
    except Exception:  # a malformed header is no session
        return None
    morsel = cookie.get(name)
    return morsel.value if morsel else None


def _wants_page(scope: Scope, headers: Headers) -> bool:
    return scope["method"] in ("GET", "HEAD") and "text/html" in headers.get("accept", "")


class Guard:
    def __init__(self, app: ASGIApp, policy: Policy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._check_host_and_origin(scope, headers)
        principal = self._identify(scope, headers) if refusal is None else None
        scope[PRINCIPAL_KEY] = principal
        path = scope.get("path", "")
        preflight = scope.get("method") == "OPTIONS" and "access-control-request-method" in headers
        public = path in PUBLIC_PATHS or path in self.policy.extra_public or preflight  # CORS answers preflights itself
        if refusal is None and principal is None and not public:
            refusal = self._unauthenticated(scope, headers)
        if refusal is not None:
            if scope["type"] == "websocket":  # nothing here speaks websockets; refuse without a page
                await send({"type": "websocket.close", "code": 1008})
            else:
                await refusal(scope, receive, send)
            return
        send = _with_security_headers(send, self.policy.page_csp)
        rules = self.policy.gradio_rules
        if rules is not None and principal is not None and scope["type"] == "http":
            await rules(scope, receive, send, principal, self.app)  # type: ignore[operator]
        else:
            await self.app(scope, receive, send)

    # ---------------------------------------------------------------- 1, 2

    def _check_host_and_origin(self, scope: Scope, headers: Headers) -> Response | None:
        host, _ = split_host(headers.get("host", ""))
        if host not in self.policy.hosts:
            return PlainTextResponse("Invalid host header: this server does not answer to that name.", status_code=400)
        origin = headers.get("origin")
        if origin is not None and origin.rstrip("/") not in self.policy.origins:
            return PlainTextResponse("Cross-site request refused.", status_code=403)
        return None

    # ---------------------------------------------------------------- 3

    def _identify(self, scope: Scope, headers: Headers) -> Principal | None:
        if not self.policy.login_required:
            return HOST
        accounts = self.policy.accounts
        if accounts is not None:
            token = _bearer(headers)
            if token is not None:
                return accounts.api_key(token)  # a wrong key is nobody, never the loopback host
            principal = accounts.session(_cookie(headers, SESSION_COOKIE))
            if principal is not None:
                return principal
        client = scope.get("client")
        if self.policy.loopback_is_host and client and is_loopback(client[0]):
            return HOST
        return None

    def _unauthenticated(self, scope: Scope, headers: Headers) -> Response:
        if _wants_page(scope, headers):
            target = scope.get("path", "/")
            query = scope.get("query_string", b"").decode("latin-1")
            nxt = target + (f"?{query}" if query else "")
            return RedirectResponse(f"/login?next={quote(nxt, safe='')}", status_code=303)
        if scope.get("path", "").startswith("/v1/"):
            body = {"error": {"message": "Missing or wrong API key: send Authorization: Bearer <key>.",
                              "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}  # fmt: skip
            return JSONResponse(body, status_code=401, headers={"www-authenticate": "Bearer"})
        return JSONResponse({"detail": "Sign in first: this Melange is shared on the LAN and needs a login."}, status_code=401)


def _with_security_headers(send, page_csp: str | None):
    async def wrapped(message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            present = {k.lower(): v for k, v in headers}
            headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
            is_page = present.get(b"content-type", b"").startswith(b"text/html")
            if page_csp and is_page and b"content-security-policy" not in present:
                headers.append((b"content-security-policy", page_csp.encode()))
            message = {**message, "headers": headers}
        await send(message)

    return wrapped


async def read_body(receive, limit: int = MAX_JSON_BODY) -> tuple[bytes | None, Callable]:
    """The whole request body (None past ``limit``), and a ``receive`` that replays it to the app."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None, receive
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


def json_or_none(body: bytes | None) -> dict | None:
    if not body:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def query_value(scope: Scope, name: str) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[0] if values else None
