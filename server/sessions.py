"""Gradio's memory of sessions, bounded: a session no page holds open is forgotten after a while.

Gradio keeps a ``SessionState`` for every session hash it has served, and forgets one only past 10,000
sessions. Each holds a copy of the configuration of every component on the page (about 400 KB for
Melange's page) beside its ``gr.State`` values. A browser tab is one session, but every call of the API
(``/gradio_api/call``, the load bench, a script) is a session of its own, so 1,000 API calls held 400 MB
that nothing would ever read again.

A page keeps its session while its heartbeat (the event stream every Gradio page holds open) is connected,
and for Gradio's own hour after it closes, so a tab that reconnects finds its state. A session that never
had a page (an API caller) is forgotten once it has not been used for ``api_idle`` seconds; one with a job
waiting or running is always kept. The sweep rides on requests (at most once a minute), so an idle server
does no work for it; memory only grows with requests anyway.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta

HEARTBEAT = re.compile(r"/gradio_api/heartbeat/([^/]+)$")
PAGE_GRACE = 3600.0  # Gradio's STATE_TTL_WHEN_CLOSED: a closed tab's state lives this long
SWEEP_EVERY = 60.0


class Sessions:
    """Which sessions a page holds open, and the sweep that forgets the rest once they have idled."""

    def __init__(self, blocks, api_idle: float, page_grace: float = PAGE_GRACE, sweep_every: float = SWEEP_EVERY) -> None:
        self.blocks = blocks
        self.api_idle = api_idle
        self.page_grace = page_grace
        self.sweep_every = min(sweep_every, api_idle)  # a short idle time (tests) is honoured as often
        self.open_pages: dict[str, int] = {}  # session hash -> heartbeats connected
        self.closed_pages: dict[str, float] = {}  # session hash -> when its last heartbeat closed (monotonic)
        self._last_sweep = time.monotonic()
        self.forgotten = 0  # sessions dropped so far

    def figures(self) -> dict:
        """For /health: sessions Gradio holds now, pages open, and how many were forgotten so far."""
        return {"kept": len(self.blocks.state_holder.session_data), "pages_open": len(self.open_pages), "forgotten": self.forgotten}

    def maybe_sweep(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep >= self.sweep_every:
            self._last_sweep = now
            self.sweep(now)

    def page_opened(self, session: str) -> None:
        self.open_pages[session] = self.open_pages.get(session, 0) + 1
        self.closed_pages.pop(session, None)

    def page_closed(self, session: str) -> None:
        left = self.open_pages.pop(session, 1) - 1
        if left:
            self.open_pages[session] = left
        else:
            self.closed_pages[session] = time.monotonic()

    def sweep(self, now: float | None = None) -> int:
        """Forget the sessions nobody holds; returns how many. Runs on the event loop, as Gradio's own
        state clean-up does, so nothing else touches the sessions meanwhile."""
        now = time.monotonic() if now is None else now
        holder = self.blocks.state_holder
        busy = self.blocks._queue.pending_event_ids_session
        idle_since = datetime.now() - timedelta(seconds=self.api_idle)
        dropped = 0
        for session, closed in list(self.closed_pages.items()):
            if now - closed >= self.page_grace:
                del self.closed_pages[session]
                dropped += self._forget(holder, session)
        for session in list(holder.session_data):
            if session in self.open_pages or session in self.closed_pages or busy.get(session):
                continue
            if holder.time_last_used.get(session, datetime.min) <= idle_since:
                dropped += self._forget(holder, session)
        return dropped

    def _forget(self, holder, session: str) -> int:
        if session not in holder.session_data:
            return 0
        holder.delete_state(session)  # the gr.State values' own delete callbacks
        with holder.lock:
            holder.session_data.pop(session, None)
            holder.time_last_used.pop(session, None)
        # The queue's mailbox for the session and its (empty) set of events: nobody reads them any more.
        queue = self.blocks._queue
        queue.pending_messages_per_session.pop(session, None)
        queue.pending_event_ids_session.pop(session, None)
        self.forgotten += 1
        return 1


class SessionTracker:
    """ASGI middleware: tells ``Sessions`` which pages have their heartbeat open, and lets it sweep now and
    then on the way of a request."""

    def __init__(self, app, sessions: Sessions) -> None:
        self.app = app
        self.sessions = sessions

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.sessions.maybe_sweep()
        page = HEARTBEAT.search(scope.get("path", ""))
        if page is None:
            await self.app(scope, receive, send)
            return
        self.sessions.page_opened(page.group(1))
        try:
            await self.app(scope, receive, send)  # returns when the page goes away (or the server stops)
        finally:
            self.sessions.page_closed(page.group(1))
