"""Chat on a remote OpenAI-compatible server (llama.cpp's, llama-cpp-python's, vLLM, another Melange).

The Chat panel keeps working as with a local model: replies stream, Stop closes the connection (the server
stops generating), the stats under a reply come from the stream, and the model picker lists the server's
``/v1/models``. Sampling goes as OpenAI's fields plus ``top_k`` and ``repeat_penalty``, which llama.cpp and
Melange read and vLLM ignores. Nothing is resident here: the model lives on the server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from engines.base import (
    ChatDelta,
    ChatMessage,
    ChatParams,
    ChatStats,
    EngineStatus,
    ProgressCallback,
    check_messages,
    check_prompt,
)
from engines.remote_http import REMOTE_DEVICE, RemoteServer


class OpenAIChatEngine:
    kind = "chat"

    def __init__(self, base_url: str, api_key: str | None = None, model: str | None = None, *, ca_file: str | None = None, n_ctx: int = 4096, timeout: float = 600.0) -> None:
        self.server = RemoteServer(base_url, api_key, "chat server", timeout, ca_file)
        self.model = model  # None: the first the server lists, once it answers
        self.n_ctx = n_ctx  # the server's own; kept for the panel's context slider
        self._ready = False
        self._lock = threading.Lock()

    def status(self) -> EngineStatus:
        name = self.model or f"the first model of {self.server.base_url}"
        return EngineStatus("chat", "openai", name, self._ready, REMOTE_DEVICE, note=f"Served by {self.server.base_url}.")

    def models(self) -> list[str]:
        return self.server.model_ids("chat")

    def load(self, progress: ProgressCallback | None = None) -> None:
        """Ask the server which models it has: the chosen one must be among them."""
        with self._lock:
            if self._ready:
                return
            if progress:
                progress(None, f"Asking {self.server.base_url} for its models…")
            self.model = self.server.choose_model(self.model, "chat")
            self._ready = True

    def unload(self) -> None:
        self._ready = False  # nothing to free here; the next request asks the server again

    def switch(self, model: str, display_name: str | None = None, n_ctx: int | None = None) -> None:
        """Use another of the server's models from the next request on."""
        with self._lock:
            self.model = str(model)
            self.n_ctx = n_ctx or self.n_ctx
            self._ready = False

    def _body(self, params: ChatParams) -> dict:
        body = {
            "model": self.model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
            "top_k": params.top_k,
            "repeat_penalty": params.repeat_penalty,
        }
        if params.seed >= 0:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        return body

    def stream(self, messages: list[ChatMessage], params: ChatParams) -> Iterator[ChatDelta]:
        check_messages(messages)
        params.check()
        self.load()
        body = {**self._body(params), "messages": [{"role": m.role, "content": m.content} for m in messages]}
        yield from self._run("/chat/completions", body, lambda choice: (choice.get("delta") or {}).get("content") or "")

    def complete(self, prompt: str, params: ChatParams) -> Iterator[ChatDelta]:
        check_prompt(prompt)
        params.check()
        self.load()
        yield from self._run("/completions", {**self._body(params), "prompt": prompt}, lambda choice: choice.get("text") or "")

    def _run(self, path: str, body: dict, text_of) -> Iterator[ChatDelta]:
        started = time.perf_counter()
        stats = ChatStats(finish_reason="cancelled")
        pieces = 0
        usage = None
        for event in self.server.events(path, body):
            usage = event.get("usage") or usage
            for choice in event.get("choices") or ():
                text = text_of(choice)
                if choice.get("finish_reason"):
                    stats.finish_reason = "length" if choice["finish_reason"] == "length" else "stop"
                if text:
                    if stats.first_token_seconds is None:
                        stats.first_token_seconds = time.perf_counter() - started
                    pieces += 1
                    yield ChatDelta(text)
        stats.seconds = time.perf_counter() - started
        if stats.finish_reason == "cancelled":  # the server closed the stream without saying why
            stats.finish_reason = "stop"
        # Servers that send no usage stream one token per event (llama.cpp, vLLM): count the events.
        stats.completion_tokens = int(usage.get("completion_tokens", pieces)) if usage else pieces
        stats.prompt_tokens = int(usage.get("prompt_tokens", 0)) if usage else 0
        yield ChatDelta("", stats)
