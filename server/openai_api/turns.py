"""A ``/v1`` job takes its turn in Gradio's own queue, beside the page's jobs on the same engine.

Gradio's queue runs one job at a time per engine (a ``concurrency_id`` per panel). A ``/v1`` job joins that
same line as a stand-in event: a private function registered on the Blocks per engine, which starts when
the job's turn comes and then holds the engine's place until the job says it is done. The work itself runs
in the ``/v1`` request, streaming straight to its caller, so the queue adds one dispatch (about a
millisecond) and nothing per token.

Because the stand-in is an ordinary queued event with the caller's name on it, everything that reads the
queue sees it: the page's "2nd in line for Chat" (``server/queue_status.py``), the guard's one job per
panel for a guest, "busy" when the queue is full, and the queue's own timing estimates.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field

from starlette.requests import Request

from server.openai_api.errors import OpenAIError
from server.principal import Principal

ENGINES = ("chat", "image", "speech")
JOIN_PATH = "/gradio_api/queue/join"  # Gradio reads the path of the request an event carries
TICKET_KEY = "melange.v1-ticket"  # where a stand-in's request carries its ticket
LOOK_EVERY = 1.0  # seconds between checks that a waiting stand-in is still in the queue


class _Discard:
    """Where Gradio's messages for stand-in events go: nobody reads them (the caller has its own answer)."""

    def put_nowait(self, message) -> None:
        pass

    def empty(self) -> bool:
        return True


@dataclass
class Turn:
    kind: str
    ticket: str
    started: asyncio.Event = field(default_factory=asyncio.Event)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    event_id: str | None = None


class Turns:
    """Stand-in events in Gradio's queue, one stand-in function per engine."""

    def __init__(self, blocks, jobs_per_guest: int = 1) -> None:
        self.blocks = blocks
        self.jobs_per_guest = jobs_per_guest
        self._waiting: dict[str, Turn] = {}
        # One hidden session for every stand-in: Gradio keeps a little state per session, and one is enough.
        self._session = "melange-v1-" + secrets.token_hex(16)
        self._fn_index: dict[str, int] = {}

    def register(self) -> None:
        """Add the stand-in functions to the Blocks, before it is mounted so the queue knows them. They take no
        input: the ticket rides on the request the event carries, so nobody can start one from the page."""
        import gradio as gr

        async def hold(request: gr.Request) -> None:
            carried = getattr(request, "request", None)
            turn = self._waiting.get(carried.scope.get(TICKET_KEY, "")) if carried is not None else None
            if turn is None:  # not a stand-in, or its caller went away before its turn
                return
            turn.started.set()
            await turn.done.wait()

        hold.__annotations__ = {"request": gr.Request, "return": None}  # a real class: Gradio injects the request by it

        self._start_turns_as_they_are_given()
        for kind in ENGINES:
            # Not through gr.api: that needs the Blocks' context, and leaving it again would add the page's load
            # events a second time.
            _, index = self.blocks.default_config.set_event_trigger(
                [], hold, None, None, api_name=f"v1_{kind}_turn", concurrency_id=kind, api_visibility="private",
                queue=True, no_target=True, show_progress="hidden", preprocess=False, postprocess=False,
            )  # fmt: skip
            self._fn_index[kind] = index

    def _start_turns_as_they_are_given(self) -> None:
        """A stand-in's turn starts when the queue gives it the engine, not when Gradio gets round to calling
        ``hold``: Gradio's bookkeeping between the two (its messages, the request it compiles, ``process_api``)
        runs on the event loop before the job's work could begin. The queue's loop calls ``process_events``
        the moment it books the engine for the events, and this marks ours there, in the same step. bench/api.py's
        remote first token: +0.8, +4.1, +2.9, +4.1 ms with this, +6.3 ms in a run without it.)"""
        queue = self._queue
        process_events = queue.process_events

        def booked(events, *args, **kwargs):
            for event in events:
                carried = getattr(event, "request", None)
                turn = self._waiting.get(carried.scope.get(TICKET_KEY, "")) if carried is not None else None
                if turn is not None:
                    turn.started.set()
            return process_events(events, *args, **kwargs)  # the coroutine the queue runs as a task

        queue.process_events = booked

    # ---------------------------------------------------------------- the queue

    def _gradio_app(self, request: Request):
        """The mounted Gradio app that serves these Blocks: it runs the queue's events."""
        from starlette.routing import Mount

        for route in getattr(request.scope.get("app"), "routes", []):
            if isinstance(route, Mount) and getattr(route.app, "get_blocks", lambda: None)() is self.blocks:
                return route.app
        raise OpenAIError(503, "The page is not mounted yet; try again in a moment.", "server_error", code="server_busy")

    @property
    def _queue(self):
        return self.blocks._queue

    def jobs_of(self, principal: Principal, kind: str) -> int:
        """Jobs this person has waiting or running on an engine, the page's and the API's together."""
        me = principal.encode()
        return sum(
            1
            for e in list(self._queue.event_ids_to_events.values())
            if e.username == me and e.concurrency_id == kind and not e.closed
        )

    async def take(self, kind: str, principal: Principal, request: Request) -> Turn:
        """Wait for this engine's turn. Raises ``OpenAIError`` when the queue is full or a guest already has a
        job on this engine, and ``ClientGone`` when the caller hangs up while waiting."""
        if not principal.is_host and self.jobs_of(principal, kind) >= self.jobs_per_guest:
            raise OpenAIError(
                429,
                f"You already have a job waiting or running for the {kind} engine: wait for it to finish before "
                "starting another.",
                "rate_limit_error",
                code="rate_limit_exceeded",
            )
        from gradio.data_classes import PredictBodyInternal

        queue = self._queue
        if queue.server_app is None:  # set by the first page join; a /v1 call may come first
            queue.set_server_app(self._gradio_app(request))
        queue.pending_messages_per_session.setdefault(self._session, _Discard())
        turn = Turn(kind, secrets.token_hex(16))
        # Gradio reads the path and headers of the request an event carries; it is this request, at the queue's door.
        scope = {**request.scope, "path": JOIN_PATH, "raw_path": JOIN_PATH.encode(), "query_string": b"", TICKET_KEY: turn.ticket}
        stand_in = Request(scope)
        body = PredictBodyInternal(data=[], fn_index=self._fn_index[kind], session_hash=self._session, request=stand_in)
        self._waiting[turn.ticket] = turn
        ok, event_id, _ = await queue.push(body=body, request=stand_in, username=principal.encode())
        if not ok:
            self._waiting.pop(turn.ticket, None)
            raise OpenAIError(503, "Melange is busy: the queue is full. Try again in a moment.", "server_error", code="server_busy")
        turn.event_id = event_id
        gone = asyncio.ensure_future(wait_for_disconnect(request))
        started = asyncio.ensure_future(turn.started.wait())
        try:
            while not (started.done() or gone.done()):
                await asyncio.wait({gone, started}, timeout=LOOK_EVERY, return_when=asyncio.FIRST_COMPLETED)
                if not turn.started.is_set() and event_id not in queue.event_ids_to_events:
                    break  # the queue let the stand-in go without running it (it failed): do not wait forever
        finally:
            client_left = gone.done()
            gone.cancel()
            started.cancel()
        if not turn.started.is_set():
            await self.give_back(turn)
            if client_left:
                raise ClientGone()
            raise OpenAIError(500, "The queue dropped this job before its turn; try again.", "server_error", code="queue_error")
        return turn

    async def give_back(self, turn: Turn) -> None:
        """The job is over (or its caller left): the engine's next job may start."""
        self._waiting.pop(turn.ticket, None)
        turn.done.set()
        if turn.event_id is None:
            return
        queue = self._queue
        await queue.remove_from_queue(turn.event_id)  # still waiting: out of the line
        event = queue.event_ids_to_events.get(turn.event_id)
        if event is not None:
            event.alive = False  # running: Gradio has nobody to tell when it ends
        ids = queue.pending_event_ids_session.get(self._session)
        if ids is not None:
            ids.discard(turn.event_id)


class ClientGone(Exception):
    """The caller hung up; nobody is left to answer."""


async def wait_for_disconnect(request: Request) -> None:
    """Returns when the client goes away. Call only after the body was read."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
