"""Chat with a local GGUF model through llama-cpp-python, kept resident between requests."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from engines.base import (
    ChatDelta,
    ChatMessage,
    ChatParams,
    ChatStats,
    EngineError,
    EngineStatus,
    InputError,
    ProgressCallback,
    check_messages,
)

GGUF_MAGIC = b"GGUF"


class LlamaChatEngine:
    kind = "chat"

    def __init__(
        self,
        model_path: str | Path,
        device: str = "cpu",
        *,
        display_name: str | None = None,
        n_ctx: int = 4096,
        threads: int = 0,
    ) -> None:
        self.model_path = Path(model_path)
        self.device = device
        self.display_name = display_name or self.model_path.name
        self.n_ctx = n_ctx
        self.threads = threads
        self._llm = None
        self._lock = threading.Lock()  # one generation at a time: a llama context is not re-entrant

    def status(self) -> EngineStatus:
        return EngineStatus("chat", "llama-cpp", self.display_name, self._llm is not None, self.device)

    def load(self, progress: ProgressCallback | None = None) -> None:
        with self._lock:
            if self._llm is not None:
                return
            if progress:
                progress(None, f"Loading {self.display_name}…")
            self._llm = self._open()

    def _open(self):
        path = self.model_path
        if not path.is_file():
            raise EngineError(f"Chat model file not found: {path}")
        with path.open("rb") as f:
            if f.read(4) != GGUF_MAGIC:
                raise EngineError(f"{path.name} is not a GGUF model file.")
        from llama_cpp import Llama  # imported here so the fake engines run without the native library

        try:
            return Llama(
                model_path=str(path),
                n_ctx=self.n_ctx,
                n_gpu_layers=-1 if self.device == "cuda" else 0,
                n_threads=self.threads or None,
                verbose=False,
            )
        except (ValueError, RuntimeError) as e:
            raise EngineError(f"Could not load {path.name}: {e}") from e

    def unload(self) -> None:
        with self._lock:
            if self._llm is not None:
                self._llm.close()
                self._llm = None
                gc.collect()

    def stream(self, messages: list[ChatMessage], params: ChatParams) -> Iterator[ChatDelta]:
        check_messages(messages)
        params.check()
        self.load()
        with self._lock:
            yield from self._stream_locked(messages, params)

    def _stream_locked(self, messages: list[ChatMessage], params: ChatParams) -> Iterator[ChatDelta]:
        llm = self._llm
        if llm is None:  # unloaded between load() and taking the lock
            raise EngineError("The chat model was unloaded; send the message again.")
        started = time.perf_counter()
        stats = ChatStats()
        pieces: list[str] = []
        chunks = None
        try:
            chunks = llm.create_chat_completion(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k,
                repeat_penalty=params.repeat_penalty,
                max_tokens=params.max_tokens,
                seed=params.seed if params.seed >= 0 else None,
                stream=True,
            )
            for chunk in chunks:
                choice = chunk["choices"][0]
                text = choice["delta"].get("content") or ""
                if choice.get("finish_reason"):
                    stats.finish_reason = choice["finish_reason"]
                if text:
                    if stats.first_token_seconds is None:
                        stats.first_token_seconds = time.perf_counter() - started
                    pieces.append(text)
                    yield ChatDelta(text)
        except ValueError as e:
            # llama-cpp-python says "Requested tokens (N) exceed context window of M".
            if "exceed context window" in str(e):
                raise InputError(
                    f"The conversation is too long for this model's context ({self.n_ctx} tokens)."
                ) from e
            raise EngineError(f"Generation failed: {e}") from e
        finally:
            if chunks is not None:
                chunks.close()  # a Stop closes us mid-stream: stop llama.cpp now, not at garbage collection
        stats.seconds = time.perf_counter() - started
        reply = "".join(pieces)
        stats.completion_tokens = len(llm.tokenize(reply.encode(), add_bos=False, special=True)) if reply else 0
        yield ChatDelta("", stats)
