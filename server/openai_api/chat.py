"""``/v1/chat/completions`` and ``/v1/completions``: the chat engine, streamed as server-sent events or not.

Stateless, as OpenAI's API is: the caller sends the whole conversation each time, and nothing is stored.
The job waits for the chat engine's turn in the page's queue; its first delta is awaited before the answer
starts, so a request the engine refuses (too long for the context, say) still gets a 400, streamed or not.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator

from fastapi import APIRouter, Depends, Request

from engines.base import ChatDelta, ChatMessage, ChatParams, ChatStats, check_messages, check_prompt
from server.openai_api.common import V1, JobStream, after, authenticate
from server.openai_api.errors import OpenAIError, from_exception
from server.openai_api.pump import Pump
from server.openai_api.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessageIn,
    Completion,
    CompletionRequest,
    Sampling,
    TextPart,
)
from server.openai_api.turns import ClientGone, wait_for_disconnect
from server.principal import Principal

DEFAULT_MAX_TOKENS = 2048
DEFAULTS = ChatParams()


def messages_of(body: list[ChatMessageIn]) -> list[ChatMessage]:
    """OpenAI's messages as the engine's: text only; a "developer" message is a system one; system messages at
    the start become one, as chat templates expect a single system prompt."""
    out: list[ChatMessage] = []
    for i, m in enumerate(body):
        if isinstance(m.content, list):
            if any(not isinstance(part, TextPart) for part in m.content):
                raise OpenAIError(400, "Only text content is supported: the chat model here reads no images, audio or files.", param=f"messages.{i}.content", code="unsupported_content")
            text = "".join(part.text for part in m.content)
        else:
            text = m.content or ""
        role = "system" if m.role in ("system", "developer") else m.role
        if role == "system" and out and all(o.role == "system" for o in out):
            out[-1] = ChatMessage("system", f"{out[-1].content}\n\n{text}")
        else:
            out.append(ChatMessage(role, text))
    return out


def params_of(body: Sampling, max_tokens: int | None, v1: V1, principal: Principal) -> ChatParams:
    if max_tokens is None:
        max_tokens = v1.default_tokens(principal, DEFAULT_MAX_TOKENS)
    v1.check_tokens(principal, max_tokens)
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    params = ChatParams(
        temperature=DEFAULTS.temperature if body.temperature is None else body.temperature,
        top_p=DEFAULTS.top_p if body.top_p is None else body.top_p,
        top_k=DEFAULTS.top_k if body.top_k is None else body.top_k,
        repeat_penalty=DEFAULTS.repeat_penalty if body.repeat_penalty is None else body.repeat_penalty,
        max_tokens=max_tokens,
        seed=-1 if body.seed is None else body.seed,
        stop=stop,
    )
    params.check()
    return params


class Shape:
    """How one kind of answer looks: a chat completion or a plain text completion, whole and in chunks."""

    def __init__(self, chat: bool, model: str) -> None:
        self.chat = chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(12)
        self.created = int(time.time())
        self.model = model
        kind = "chat.completion.chunk" if chat else "text_completion"
        # Everything but the delta is the same in every chunk: written once.
        self._head = f'data: {{"id":"{self.id}","object":"{kind}","created":{self.created},"model":{json.dumps(model)},"choices":[{{"index":0,'

    def chunk(self, text: str, first: bool = False) -> bytes:
        if self.chat:
            delta = f'{{"role":"assistant","content":{json.dumps(text)}}}' if first else f'{{"content":{json.dumps(text)}}}'
            return f'{self._head}"delta":{delta},"logprobs":null,"finish_reason":null}}]}}\n\n'.encode()
        return f'{self._head}"text":{json.dumps(text)},"logprobs":null,"finish_reason":null}}]}}\n\n'.encode()

    def last_chunk(self, stats: ChatStats) -> bytes:
        finish = json.dumps(finish_reason(stats))
        body = '"delta":{}' if self.chat else '"text":""'
        return f'{self._head}{body},"logprobs":null,"finish_reason":{finish}}}]}}\n\n'.encode()

    def usage_chunk(self, stats: ChatStats) -> bytes:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        data = {"id": self.id, "object": kind, "created": self.created, "model": self.model, "choices": [], "usage": usage(stats)}
        return f"data: {json.dumps(data)}\n\n".encode()

    def whole(self, text: str, stats: ChatStats) -> dict:
        if self.chat:
            answer = ChatCompletion(
                id=self.id, created=self.created, model=self.model, usage=usage(stats),
                choices=[{"message": {"content": text}, "finish_reason": finish_reason(stats)}],
            )  # fmt: skip
        else:
            answer = Completion(
                id=self.id, created=self.created, model=self.model, usage=usage(stats),
                choices=[{"text": text, "finish_reason": finish_reason(stats)}],
            )  # fmt: skip
        return answer.model_dump()


def finish_reason(stats: ChatStats) -> str:
    return "length" if stats.finish_reason == "length" else "stop"


def usage(stats: ChatStats) -> dict:
    return {"prompt_tokens": stats.prompt_tokens, "completion_tokens": stats.completion_tokens, "total_tokens": stats.prompt_tokens + stats.completion_tokens}


def error_event(error: BaseException, is_host: bool) -> bytes:
    """A failure after the answer began: OpenAI's clients raise on an event that carries an error."""
    return f"data: {json.dumps(from_exception(error, is_host).body())}\n\n".encode()


async def run(v1: V1, request: Request, principal: Principal, shape: Shape, work: Callable[[], Iterator[ChatDelta]], stream: bool, include_usage: bool):
    turn = await v1.turns.take("chat", principal, request)
    pump = Pump(work, name="melange-v1-chat")
    try:
        first = await _first(pump, request)
    except BaseException:
        after(pump, v1.turns, turn)
        raise
    if stream:
        return JobStream(_events(shape, pump, first, include_usage, principal.is_host), lambda: after(pump, v1.turns, turn))
    try:
        return await _whole(shape, pump, first, request)
    finally:
        after(pump, v1.turns, turn)


async def _first(pump: Pump, request: Request) -> ChatDelta:
    """The first delta (the first token, or the stats of an empty reply); ClientGone if the caller leaves first."""
    first = asyncio.ensure_future(pump.__anext__())
    gone = asyncio.ensure_future(wait_for_disconnect(request))
    try:
        await asyncio.wait({first, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not first.done():
        first.cancel()
        raise ClientGone()
    try:
        return first.result()
    except StopAsyncIteration:
        raise OpenAIError(500, "The engine ended without an answer.", "server_error", code="engine_error") from None


async def _events(shape: Shape, pump: Pump, first: ChatDelta, include_usage: bool, is_host: bool) -> AsyncIterator[bytes]:
    delta = first
    try:
        yield shape.chunk(delta.text, first=True)
        while delta.stats is None:
            delta = await pump.__anext__()
            if delta.text:
                yield shape.chunk(delta.text)
    except StopAsyncIteration:
        yield error_event(OpenAIError(500, "The engine ended without its stats.", "server_error", code="engine_error"), is_host)
        return
    except Exception as e:  # noqa: BLE001 - the status is sent already: the error goes in the stream
        yield error_event(e, is_host)
        yield b"data: [DONE]\n\n"
        return
    yield shape.last_chunk(delta.stats)
    if include_usage:
        yield shape.usage_chunk(delta.stats)
    yield b"data: [DONE]\n\n"


async def _whole(shape: Shape, pump: Pump, first: ChatDelta, request: Request) -> dict:
    async def collect() -> tuple[str, ChatStats]:
        pieces, delta = [first.text], first
        while delta.stats is None:
            delta = await pump.__anext__()
            pieces.append(delta.text)
        return "".join(pieces), delta.stats

    whole = asyncio.ensure_future(collect())
    gone = asyncio.ensure_future(wait_for_disconnect(request))
    try:
        await asyncio.wait({whole, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not whole.done():
        whole.cancel()
        raise ClientGone()
    text, stats = whole.result()
    return shape.whole(text, stats)


def add_routes(router: APIRouter, v1: V1) -> None:
    @router.post("/chat/completions", response_model=ChatCompletion, summary="Chat (streamed with stream: true)")
    async def chat_completions(body: ChatCompletionRequest, request: Request, principal: Principal = Depends(authenticate)):
        model = v1.resolve("chat", body.model)
        if body.tools:
            raise OpenAIError(400, "Tools (function calling) are not supported here.", param="tools", code="unsupported_parameter")
        if body.logprobs:
            raise OpenAIError(400, "logprobs are not supported here.", param="logprobs", code="unsupported_parameter")
        messages = messages_of(body.messages)
        check_messages(messages)
        max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        params = params_of(body, max_tokens, v1, principal)
        engine = v1.chat
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await run(v1, request, principal, Shape(True, model), lambda: engine.stream(messages, params), body.stream, include_usage)

    @router.post("/completions", response_model=Completion, summary="Text completion (no chat template)")
    async def completions(body: CompletionRequest, request: Request, principal: Principal = Depends(authenticate)):
        model = v1.resolve("chat", body.model)
        for name, value in (("echo", body.echo), ("suffix", body.suffix), ("logprobs", body.logprobs)):
            if value:
                raise OpenAIError(400, f"{name} is not supported here.", param=name, code="unsupported_parameter")
        prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
        check_prompt(prompt)
        params = params_of(body, body.max_tokens, v1, principal)
        engine = v1.chat
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await run(v1, request, principal, Shape(False, model), lambda: engine.complete(prompt, params), body.stream, include_usage)
