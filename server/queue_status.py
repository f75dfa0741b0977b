"""Where your jobs stand: "2nd in line for Image, about 12 s", for the page's status line.

Gradio's queue already orders jobs per engine (a ``concurrency_id`` per panel); this reads it for the
caller's own waiting jobs only, with an estimate from the queue's measured average run times.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request

from server.gradio_rules import PANELS
from server.guard import principal_of

POLL_SCRIPT = """<script>
(() => {
  // Where the caller's jobs wait ("2nd in line for Image, about 12 s"), from /melange/queue.
  function show(text) {
    let el = document.getElementById("melange-queue");
    if (!el) {
      el = document.createElement("div");
      el.id = "melange-queue";
      el.setAttribute("role", "status");
      el.style.cssText = "position:fixed;bottom:1rem;right:1rem;z-index:1000;background:#1f2937;color:#fff;" +
        "padding:.5rem .9rem;border-radius:8px;font:14px system-ui,sans-serif;display:none";
      document.body.appendChild(el);
    }
    el.textContent = text || "";
    el.style.display = text ? "block" : "none";
  }
  async function poll() {
    if (document.visibilityState === "visible") {
      try {
        const answer = await fetch("/melange/queue", {credentials: "same-origin", cache: "no-store"});
        if (answer.ok) show((await answer.json()).text);
      } catch (e) {}
    }
    setTimeout(poll, 1500);
  }
  // Gradio may add this script after the page has loaded: start now if so.
  if (document.readyState === "complete") poll(); else window.addEventListener("load", poll);
})();
</script>"""


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def describe(position: int, panel: str, eta: float | None) -> str:
    about = f", about {eta:.0f} s" if eta is not None and eta >= 1 else ""
    return f"{ordinal(position)} in line for {panel}{about}"


def waiting_jobs(blocks, username: str) -> list[dict]:
    queue = getattr(blocks, "_queue", None)
    if queue is None:
        return []
    jobs = []
    now = time.time()
    for concurrency_id, panel in PANELS.items():
        event_queue = queue.event_queue_per_concurrency_id.get(concurrency_id)
        if event_queue is None:
            continue
        waiting = list(event_queue.queue)
        limit = event_queue.concurrency_limit or 1

        def average(fn):
            timing = queue.process_time_per_fn.get(fn)
            return timing.avg_time if timing is not None and timing.count else None

        running_left = []
        for fn, starts in event_queue.start_times_per_fn.items():
            avg = average(fn)
            running_left += [max((avg or 0) - (now - start), 0) for start in starts]
        free_in = min(running_left) if len(running_left) >= limit else 0.0
        ahead = 0.0
        known = True
        for rank, event in enumerate(waiting):
            avg = average(event.fn)
            if event.username == username:
                eta = free_in + ahead / limit + avg if known and avg is not None else None
                jobs.append({"panel": panel, "position": rank + 1, "eta_seconds": eta})
            if avg is None:
                known = False
            else:
                ahead += avg
    return jobs


async def withdraw(blocks, session_hash: str, concurrency_id: str) -> bool:
    """Take this session's waiting job for that engine out of the queue, and tell its page it is over (what
    Gradio's own /cancel does). False when it has none waiting (it may be running: stop that another way)."""
    from gradio.server_messages import ProcessCompletedMessage

    queue = getattr(blocks, "_queue", None)
    event_queue = queue.event_queue_per_concurrency_id.get(concurrency_id) if queue is not None else None
    waiting = [e for e in list(event_queue.queue) if e.session_hash == session_hash] if event_queue else []
    for event in waiting:
        await queue.remove_from_queue(event._id)
        messages = queue.pending_messages_per_session.get(session_hash)
        if messages is not None:
            messages.put_nowait(ProcessCompletedMessage(output={}, success=True, event_id=event._id))
    return bool(waiting)


def queue_router(get_blocks) -> APIRouter:
    router = APIRouter()

    @router.get("/melange/queue", include_in_schema=False)
    def status(request: Request) -> dict:
        principal = principal_of(request)
        jobs = waiting_jobs(get_blocks(), principal.encode()) if principal is not None else []
        text = " · ".join(describe(j["position"], j["panel"], j["eta_seconds"]) for j in jobs)
        return {"jobs": jobs, "text": text}

    return router
