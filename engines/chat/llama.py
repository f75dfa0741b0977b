"""Chat with a local GGUF model through llama-cpp-python, kept resident between requests."""

from __future__ import annotations

import functools
import gc
import threading
import time
from collections.abc import Callable, Iterator
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
    check_prompt,
)

GGUF_MAGIC = b"GGUF"
FALLBACK_CHAT_FORMAT = "chatml"  # the most common format among small instruct models
PER_MESSAGE_OVERHEAD = 8  # role markers and separators a chat template adds around each message
CACHE_BYTES_PER_VALUE = 2  # llama.cpp keeps its key and value caches in f16 unless told otherwise


def check_gguf(path: Path) -> None:
    if not path.is_file():
        raise EngineError(f"Chat model file not found: {path}")
    with path.open("rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise EngineError(f"{path.name} is not a GGUF model file.")


def cache_bytes(metadata: dict, n_ctx: int) -> int | None:
    """What llama.cpp's K and V caches take for ``n_ctx`` tokens (f16, its default), from the GGUF's own metadata
    (layers, width, and the key/value heads grouped-query attention keeps); None when the file does not say."""
    arch = metadata.get("general.architecture")
    try:
        layers = int(metadata[f"{arch}.block_count"])
        width = int(metadata[f"{arch}.embedding_length"])
        heads = int(metadata[f"{arch}.attention.head_count"])
        kv_heads = int(metadata.get(f"{arch}.attention.head_count_kv", heads))
    except (KeyError, TypeError, ValueError):
        return None
    return 2 * layers * n_ctx * (width * kv_heads // max(heads, 1)) * CACHE_BYTES_PER_VALUE


@functools.lru_cache(maxsize=16)
def gguf_metadata(path: str, size: int, mtime_ns: int) -> dict:
    """A GGUF file's metadata, read with its vocabulary but none of its weights (a few hundred ms for a 49k-token
    vocabulary, so it is kept per file version: a reload after an idle unload does not pay it again)."""
    from llama_cpp import Llama

    return dict(Llama(model_path=path, vocab_only=True, verbose=False).metadata)


def gigabytes(size: int) -> str:
    return f"{size / 2**30:.1f} GB"


def fit_context(
    messages: list[ChatMessage], budget: int, count: Callable[[str], int]
) -> tuple[list[ChatMessage], int]:
    """Drop the oldest turns (never the system prompt, never the last message) until the prompt fits.

    Returns the messages to send and how many were dropped. Raises InputError when even the system
    prompt and the last message alone do not fit.
    """
    system = [m for m in messages[:1] if m.role == "system"]
    turns = messages[len(system) :]
    sizes = [count(m.content) + PER_MESSAGE_OVERHEAD for m in turns]
    fixed = sum(count(m.content) + PER_MESSAGE_OVERHEAD for m in system)
    if fixed + PER_MESSAGE_OVERHEAD >= budget:  # the system prompt alone fills the context: it is what to shorten
        raise InputError(
            f"The system prompt is about {fixed:,} tokens, more than this model's context leaves room for "
            f"({budget:,} tokens). Shorten it, or raise the context length in the settings."
        )
    if fixed + sizes[-1] > budget:
        raise InputError(
            f"Your message is about {sizes[-1]:,} tokens, more than this model's context leaves room for "
            f"({budget - fixed:,} tokens). Shorten it, or raise the context length in the settings."
        )
    start = 0
    while fixed + sum(sizes[start:]) > budget:
        start += 1
    # Start on a user turn so the model never sees a reply without its question.
    while turns[start].role != "user":
        start += 1
    return system + turns[start:], start


def is_reproducible(params: ChatParams) -> bool:
    """A fixed seed or greedy decoding promises the same reply to the same prompt, whatever ran before."""
    return params.seed >= 0 or params.temperature == 0


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
        self.template_note = ""  # says so when the model has no chat template of its own
        self.loads = 0  # models opened so far: the memory manager books a load when this moves
        self._llm = None
        self._lock = threading.Lock()  # one generation at a time: a llama context is not re-entrant

    def status(self) -> EngineStatus:
        return EngineStatus(
            "chat", "llama-cpp", self.display_name, self._llm is not None, self.device, note=self.template_note
        )

    def load(self, progress: ProgressCallback | None = None) -> None:
        with self._lock:
            if self._llm is not None:
                return
            if progress:
                progress(None, f"Loading {self.display_name}…")
            self._llm = self._open()

    def _open(self):
        check_gguf(self.model_path)
        from llama_cpp import Llama  # imported here so the fake engines run without the native library

        if self.device != "cuda":  # on a GPU the cache lives in its memory, which the memory manager books
            self._check_memory()
        self.loads += 1
        try:
            llm = Llama(
                model_path=str(self.model_path),
                n_ctx=self.n_ctx,
                n_gpu_layers=-1 if self.device == "cuda" else 0,
                n_threads=self.threads or None,
                verbose=False,
            )
        except (ValueError, RuntimeError) as e:
            raise EngineError(f"Could not load {self.model_path.name}: {e}") from e
        if llm.metadata.get("tokenizer.chat_template"):
            self.template_note = ""
        else:
            # Without one, llama-cpp-python silently picks llama-2's format; choose, and say so.
            llm.chat_format = FALLBACK_CHAT_FORMAT
            self.template_note = f"{self.model_path.name} has no chat template; using the {FALLBACK_CHAT_FORMAT} format."
        return llm

    def unload(self) -> None:
        with self._lock:
            self._unload_locked()

    def _unload_locked(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None
            gc.collect()

    def _check_memory(self) -> None:
        """Refuse a context whose cache cannot fit in the memory this machine has free, before loading: past it
        the system swaps or the kernel kills the app."""
        import psutil

        stat = self.model_path.stat()
        try:
            metadata = gguf_metadata(str(self.model_path), stat.st_size, stat.st_mtime_ns)
        except (ValueError, RuntimeError) as e:
            raise EngineError(f"Could not load {self.model_path.name}: {e}") from e
        cache = cache_bytes(metadata, self.n_ctx)
        if cache is None:
            return
        weights = stat.st_size
        free = psutil.virtual_memory().available
        if weights + cache > free:
            raise InputError(
                f"A context of {self.n_ctx:,} tokens needs about {gigabytes(weights + cache)} for {self.display_name} "
                f"({gigabytes(weights)} of weights, {gigabytes(cache)} of cache), and this machine has {gigabytes(free)} "
                "free. Choose a shorter context length, or unload other models first."
            )

    def switch(
        self,
        model_path: str | Path,
        display_name: str | None = None,
        n_ctx: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        """Use another model or context length: the old model is freed first (two may not fit), the new one is
        loaded now, and if it cannot load the old one stays the model (it loads again on next use)."""
        path = Path(model_path)
        check_gguf(path)
        with self._lock:
            previous = (self.model_path, self.display_name, self.n_ctx, self.template_note)
            self._unload_locked()
            self.model_path = path
            self.display_name = display_name or path.name
            self.n_ctx = n_ctx or self.n_ctx
            self.template_note = ""
            if progress:
                progress(None, f"Loading {self.display_name}…")
            try:
                self._llm = self._open()
            except BaseException:
                self.model_path, self.display_name, self.n_ctx, self.template_note = previous
                raise

    def stream(self, messages: list[ChatMessage], params: ChatParams) -> Iterator[ChatDelta]:
        check_messages(messages)
        params.check()
        self.load()
        with self._lock:
            yield from self._stream_locked(messages, params)

    def _stream_locked(self, messages: list[ChatMessage], params: ChatParams) -> Iterator[ChatDelta]:
        llm = self._resident()
        budget = self.n_ctx - min(params.max_tokens, self.n_ctx // 2)
        messages, dropped = fit_context(messages, budget, lambda text: self._count(llm, text))
        self._fresh_if_reproducible(llm, params)
        chunks = lambda: llm.create_chat_completion(  # noqa: E731
            messages=[{"role": m.role, "content": m.content} for m in messages], **self._sampling(params)
        )
        yield from self._run(llm, chunks, lambda choice: choice["delta"].get("content") or "", dropped)

    def complete(self, prompt: str, params: ChatParams) -> Iterator[ChatDelta]:
        check_prompt(prompt)
        params.check()
        self.load()
        with self._lock:
            llm = self._resident()
            size = self._count(llm, prompt)
            if size + 1 > self.n_ctx - min(params.max_tokens, self.n_ctx // 2):
                raise InputError(
                    f"The prompt is about {size:,} tokens, more than this model's context leaves room for "
                    f"({self.n_ctx - min(params.max_tokens, self.n_ctx // 2):,} tokens with {params.max_tokens} new ones)."
                )
            self._fresh_if_reproducible(llm, params)
            chunks = lambda: llm.create_completion(prompt, **self._sampling(params))  # noqa: E731
            yield from self._run(llm, chunks, lambda choice: choice.get("text") or "", 0)

    def _resident(self):
        if self._llm is None:  # unloaded between load() and taking the lock
            raise EngineError("The chat model was unloaded; send the message again.")
        return self._llm

    @staticmethod
    def _fresh_if_reproducible(llm, params: ChatParams) -> None:
        if is_reproducible(params):
            # llama-cpp-python keeps the last prompt and reply in its cache and evaluates only what differs
            # from them: a repeated prompt replays just its last token, a conversation's next turn reuses its
            # reply, computed a token at a time. Logits computed in another batch shape differ slightly (by up
            # to 0.7 here), enough to turn a greedy reply, so one prompt gave two replies depending on what ran
            # before. Evaluated whole from an empty cache, the same prompt always gives the same reply; random
            # replies keep the faster reuse.
            llm.reset()

    @staticmethod
    def _count(llm, text: str) -> int:
        return len(llm.tokenize(text.encode(), add_bos=False, special=True)) if text else 0

    def _sampling(self, params: ChatParams) -> dict:
        return dict(
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k,
            repeat_penalty=params.repeat_penalty,
            max_tokens=min(params.max_tokens, self.n_ctx),
            seed=params.seed if params.seed >= 0 else None,
            stop=list(params.stop) or None,
            stream=True,
        )

    def _run(self, llm, start: Callable[[], Iterator[dict]], text_of: Callable[[dict], str], dropped: int) -> Iterator[ChatDelta]:
        """Stream llama-cpp-python's chunks as deltas, with the stats last."""
        started = time.perf_counter()
        stats = ChatStats(dropped_messages=dropped, finish_reason="cancelled")
        pieces: list[str] = []
        chunks = None
        try:
            chunks = start()
            for chunk in chunks:
                choice = chunk["choices"][0]
                text = text_of(choice)
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
                raise InputError(f"The conversation is too long for this model's context ({self.n_ctx} tokens).") from e
            raise EngineError(f"Generation failed: {e}") from e
        finally:
            if chunks is not None:
                chunks.close()  # a Stop closes us mid-stream: stop llama.cpp now, not at garbage collection
        stats.seconds = time.perf_counter() - started
        stats.completion_tokens = self._count(llm, "".join(pieces))
        stats.prompt_tokens = max(llm.n_tokens - stats.completion_tokens, 0)
        yield ChatDelta("", stats)
