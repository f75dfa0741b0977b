"""Checks on Gradio's own routes, which take the client's word for whose session, event or file it is.

- A ``session_hash`` belongs to whoever used it first; another person naming it gets 404. Gradio keys
  queues, heartbeats, cancels and streams by it, so without this anyone who learns it could read
  someone's results, cancel their jobs or end their live recording.
- An event (``event_id``) is reached only by the person who queued it.
- Named API calls (``/call``, ``/run``, ``/api``) reach only the public endpoints; the page's own events
  (unload, delete, download…) refuse them.
- ``/file=`` serves from the per-person data folders only to their owner (the host sees all), and never
  serves another person's upload.
- Each upload is recorded under its uploader (``Uploads``), so handlers can refuse paths they were not sent.
- A guest has at most one job waiting or running per panel; a full queue answers 503 "busy".
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from starlette.responses import JSONResponse

from server.guard import json_or_none, query_value, read_body
from server.principal import Principal
from server.uploads import Uploads, inside

API = "/gradio_api"
PANELS = {"chat": "Chat", "image": "Image", "speech": "Transcribe", "live": "Live captions"}
NAMED_CALL = re.compile(rf"^{API}/(?:call/v2|call|run|api)/([^/]+)/?$")
NAMED_RESULT = re.compile(rf"^{API}/call(?:/v2)?/([^/]+)/([^/]+)/?$")
STREAM_EVENT = re.compile(rf"^{API}/stream/([^/]+)(?:/close)?/?$")
STREAM_SESSION = re.compile(rf"^{API}/stream/([^/]+)/[^/]+/[^/]+/")
HEARTBEAT = re.compile(rf"^{API}/heartbeat/([^/]+)/?$")
FILE = re.compile(rf"^{API}/file[=/](.+)$")
# Gradio features Melange does not use: developer tools, run history, monitoring, its own token, the Spaces
# proxy. Answered 404 for everyone rather than trusting each to check itself.
DENIED = (
    f"{API}/vibe-", f"{API}/undo-vibe-", f"{API}/vibe-code", f"{API}/vibe-starter", f"{API}/run-history", f"{API}/runs",
    f"{API}/dev/", f"{API}/token", f"{API}/proxy=", f"{API}/mcp", "/monitoring",
)  # fmt: skip
MAX_SESSIONS = 100_000
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


def scope_is_json(scope) -> bool:
    return any(k == b"content-type" and v.startswith(b"application/json") for k, v in scope.get("headers", []))


def not_found() -> JSONResponse:
    return JSONResponse({"detail": "Not found."}, status_code=404)


@dataclass
class GradioRules:
    blocks: object  # the mounted gr.Blocks
    uploads: Uploads
    owned_areas: list[Path]  # data folders split per person: images, recordings, exports
    guest_jobs_per_panel: int = 1
    _sessions: OrderedDict = field(default_factory=OrderedDict)

    # ---------------------------------------------------------------- claims

    def claim(self, session_hash: str | None, principal: Principal) -> bool:
        """True when ``session_hash`` is (now) this principal's."""
        if not session_hash:
            return True
        owner = self._sessions.get(session_hash)
        if owner is None:
            self._sessions[session_hash] = principal.encode()
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
            return True
        self._sessions.move_to_end(session_hash)
        return owner == principal.encode()

    def _event(self, event_id: str):
        queue = getattr(self.blocks, "_queue", None)
        return queue.event_ids_to_events.get(event_id) if queue is not None else None

    def owns_event(self, event_id: str | None, principal: Principal) -> bool:
        """Unknown events are nobody's business (and harmless to name); known ones only their owner's."""
        if not event_id:
            return True
        event = self._event(event_id)
        if event is not None:
            return event.username == principal.encode() and self.claim(event.session_hash, principal)
        queue = getattr(self.blocks, "_queue", None)
        for session_hash, ids in (getattr(queue, "pending_event_ids_session", None) or {}).items():
            if event_id in ids:
                return self.claim(session_hash, principal)
        return True

    def public_endpoint(self, api_name: str) -> bool:
        return any(
            fn.api_name == api_name and fn.api_visibility == "public" and fn.fn is not None
            for fn in self.blocks.fns.values()  # type: ignore[attr-defined]
        )

    # ---------------------------------------------------------------- files

    def may_read(self, path: str, principal: Principal) -> bool:
        for area in self.owned_areas:
            if inside(path, area):
                if area.name == "images" and Path(path).suffix.lower() not in IMAGE_SUFFIXES:
                    return False  # the gallery folder is served as images and nothing else
                return principal.is_host or (bool(principal.folder) and inside(path, area / principal.folder))
        owners = self.uploads.owner_of(path)
        return not owners or principal.owner in owners or principal.is_host

    # ---------------------------------------------------------------- the queue

    def panel_jobs(self, principal: Principal, concurrency_id: str) -> int:
        queue = getattr(self.blocks, "_queue", None)
        if queue is None:
            return 0
        me = principal.encode()
        return sum(
            1
            for e in list(queue.event_ids_to_events.values())
            if e.username == me and e.concurrency_id == concurrency_id and not e.closed
        )

    def _fn(self, body: dict):
        index = body.get("fn_index")
        if not isinstance(index, int):
            return None
        return self.blocks.fns.get(index)  # type: ignore[attr-defined]

    # ---------------------------------------------------------------- the ASGI hook

    async def __call__(self, scope, receive, send, principal: Principal, app) -> None:
        """Check one request, then pass it to ``app`` (Gradio) or answer it here with a refusal."""
        path: str = scope.get("path", "")
        method = scope.get("method", "GET")
        refusal = None
        if path.startswith(DENIED):
            refusal = not_found()
        elif not path.startswith(API + "/"):
            pass
        elif match := FILE.match(path):
            if not self.may_read(unquote(match.group(1)), principal):
                refusal = not_found()
        elif match := HEARTBEAT.match(path):
            if not self.claim(match.group(1), principal):
                refusal = not_found()
        elif path.rstrip("/") == f"{API}/queue/data":
            if not self.claim(query_value(scope, "session_hash"), principal):
                refusal = not_found()
        elif method == "GET" and (match := NAMED_RESULT.match(path)):
            if not self.public_endpoint(match.group(1)) or not self.owns_event(match.group(2), principal):
                refusal = not_found()
        elif method == "GET" and (match := STREAM_SESSION.match(path)):
            if not self.claim(match.group(1), principal):
                refusal = not_found()
        elif method == "POST" and (match := STREAM_EVENT.match(path)):
            if not self.owns_event(match.group(1), principal):
                refusal = not_found()
        elif method == "POST" and path.rstrip("/") == f"{API}/upload":
            await app(scope, receive, self._recording_upload(send, principal))
            return
        elif method == "POST" and path.rstrip("/") == f"{API}/component_server" and not scope_is_json(scope):
            pass  # an image editor's blob upload (multipart): kept under a random id of the client's own
        elif method == "POST" and (
            path.rstrip("/") in (f"{API}/queue/join", f"{API}/cancel", f"{API}/component_server") or NAMED_CALL.match(path)
        ):
            body, receive = await read_body(receive)
            if body is None:
                refusal = JSONResponse({"detail": "The request is too large."}, status_code=413)
            else:
                refusal = self._check_call(path, json_or_none(body) or {}, principal)
            if refusal is None and path.rstrip("/") == f"{API}/queue/join":
                send = _busy_when_full(send)
        if refusal is not None:
            await refusal(scope, receive, send)
        else:
            await app(scope, receive, send)

    def _check_call(self, path: str, body: dict, principal: Principal) -> JSONResponse | None:
        if (match := NAMED_CALL.match(path)) and not self.public_endpoint(match.group(1)):
            return JSONResponse(
                {"detail": f"/{match.group(1)} is not an API endpoint: only the panels' endpoints are (see /gradio_api/info)."},
                status_code=404,
            )
        session_hash = body.get("session_hash")
        if session_hash is not None and not isinstance(session_hash, str):
            return JSONResponse({"detail": "session_hash must be a string."}, status_code=422)
        if not self.claim(session_hash, principal):
            return not_found()
        if path.rstrip("/").endswith("/cancel") and not self.owns_event(body.get("event_id"), principal):
            return not_found()
        if path.rstrip("/").endswith("/queue/join") and not principal.is_host:
            fn = self._fn(body)
            panel = getattr(fn, "concurrency_id", None)
            if panel in PANELS and self.panel_jobs(principal, panel) >= self.guest_jobs_per_panel:
                return JSONResponse(
                    {"detail": f"You already have a job waiting or running for {PANELS[panel]}: "
                               "wait for it to finish, or cancel it, before starting another."},
                    status_code=429,
                )  # fmt: skip
        return None

    def _recording_upload(self, send, principal: Principal):
        """Pass the upload's answer through, noting the saved paths (a JSON list) under the uploader."""
        chunks: list[bytes] = []
        status = 0

        async def wrapped(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message.get("status", 0)
            elif message["type"] == "http.response.body" and status == 200:
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    try:
                        paths = json.loads(b"".join(chunks))
                    except ValueError:
                        paths = []
                    if isinstance(paths, list):
                        self.uploads.record(principal.owner, [p for p in paths if isinstance(p, str)])
            await send(message)

        return wrapped


def _busy_when_full(send):
    """A full queue's answer (503) becomes a plain 'busy, try again' message."""
    start: dict | None = None

    async def wrapped(message) -> None:
        nonlocal start
        if message["type"] == "http.response.start" and message.get("status") == 503:
            start = message
            return
        if start is not None and message["type"] == "http.response.body":
            if message.get("more_body", False):
                return
            body = json.dumps({"detail": "Melange is busy: the queue is full. Try again in a moment."}).encode()
            headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        await send(message)

    return wrapped
