"""The sign-in page and its form, and sign-out: plain HTML and a cookie, no JavaScript needed.

A QR code from the Share panel opens ``/login#code=<passcode>``: the fragment never leaves the
browser (no log or proxy sees it) and a line of script copies it into the passcode field, so a
colleague in the room types only their name.
"""

from __future__ import annotations

import html
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from server.accounts import Accounts, LoginError
from server.guard import SESSION_COOKIE, principal_of
from server.ratelimit import LoginLimiter

PAGE_HEADERS = {
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "cache-control": "no-store",
}


def safe_next(target: str | None) -> str:
    """Only a path on this server: never '//elsewhere' or a full URL (an open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def login_page(message: str = "", next_path: str = "/", name: str = "", note: str = "") -> str:
    esc = html.escape
    error = f'<p class="error" role="alert">{esc(message)}</p>' if message else ""
    extra = f'<p class="note">{esc(note)}</p>' if note else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · Melange</title>
<style>
body {{ font-family: system-ui, sans-serif; background: #f6f6f8; margin: 0; display: grid; place-items: center; min-height: 100vh; }}
form {{ background: white; padding: 2rem; border-radius: 12px; box-shadow: 0 2px 12px #0002; width: min(22rem, 90vw); }}
h1 {{ margin: 0 0 .3rem; font-size: 1.5rem; }} p {{ color: #444; }}
label {{ display: block; margin-top: 1rem; font-weight: 600; }}
input {{ width: 100%; box-sizing: border-box; padding: .6rem; margin-top: .3rem; font-size: 1rem; border: 1px solid #bbb; border-radius: 6px; }}
button {{ margin-top: 1.4rem; width: 100%; padding: .7rem; font-size: 1rem; background: #ea580c; color: white; border: 0; border-radius: 6px; cursor: pointer; }}
.error {{ color: #b00020; font-weight: 600; }} .note {{ font-size: .9rem; }}
</style></head>
<body><form method="post" action="/login">
<h1>Melange</h1><p>Sign in to use this machine's chat, images and transcription.</p>{error}
<label for="name">Your name</label>
<input id="name" name="name" autocomplete="username" required maxlength="32" value="{esc(name)}" autofocus>
<label for="password">Passcode or password</label>
<input id="password" name="password" type="password" autocomplete="current-password" required maxlength="200">
<input type="hidden" name="next" value="{esc(next_path)}">
<button type="submit" id="sign-in">Sign in</button>{extra}
<p class="note">Guests: your name and the passcode the host shows. The host: <code>admin</code> and the admin password.</p>
</form>
<script>
const code = new URLSearchParams(location.hash.slice(1)).get("code");
if (code) {{ document.getElementById("password").value = code; history.replaceState(null, "", location.pathname + location.search); }}
</script></body></html>"""


def login_router(accounts: Accounts, limiter: LoginLimiter, secure_cookies: bool) -> APIRouter:
    router = APIRouter()
    max_age = int(accounts.session_seconds)

    @router.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def show(request: Request, next: str = "/") -> Response:  # noqa: A002 (the query parameter's name)
        principal = principal_of(request)
        if principal is not None and request.headers.get("authorization") is None and request.cookies.get(SESSION_COOKIE):
            return RedirectResponse(safe_next(next), status_code=303)
        return HTMLResponse(login_page(next_path=safe_next(next)), headers=PAGE_HEADERS)

    @router.post("/login", include_in_schema=False)
    def sign_in(request: Request, name: str = Form(""), password: str = Form(""), next: str = Form("/")) -> Response:  # noqa: A002
        address = request.client.host if request.client else "unknown"
        target = safe_next(next)
        refusal = limiter.check(address, name)
        if refusal is not None:
            headers = {**PAGE_HEADERS, "retry-after": str(refusal.retry_after)}
            return HTMLResponse(login_page(refusal.message, target, name), status_code=429, headers=headers)
        try:
            principal = accounts.authenticate(name, password)
        except LoginError as e:
            limiter.failed(address, name)
            return HTMLResponse(login_page(str(e), target, name), status_code=401, headers=PAGE_HEADERS)
        token = accounts.start_session(principal)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(SESSION_COOKIE, token, max_age=max_age, httponly=True, secure=secure_cookies, samesite="lax", path="/")
        return response

    @router.post("/logout", include_in_schema=False)
    def sign_out(request: Request) -> Response:
        accounts.end_session(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/login?next=" + quote("/", safe=""), status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", secure=secure_cookies, httponly=True, samesite="lax")
        return response

    return router
