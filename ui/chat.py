"""Chat panel: type a message, the model's reply streams in; Stop keeps what was written."""

from __future__ import annotations

from dataclasses import replace

import gradio as gr

from engines.base import ChatEngine, ChatMessage, ChatParams, ChatStats
from ui.presets import ChatPreset
from ui.common import ensure_loaded, model_line, user_errors

MAX_MESSAGE_CHARS = 100_000  # far past any local model's context; stops a runaway paste early


def to_chatbot(messages: list[ChatMessage]) -> list[dict]:
    return [{"role": m.role, "content": m.content} for m in messages if m.role != "system"]


def stats_line(stats: ChatStats) -> str:
    line = f"{stats.completion_tokens} tokens · {stats.tokens_per_second:.1f} tok/s"
    if stats.first_token_seconds is not None:
        line += f" · first token after {stats.first_token_seconds * 1000:.0f} ms"
    if stats.finish_reason == "length":
        line += " · stopped at the max new tokens limit"
    return line


def respond(
    engine: ChatEngine,
    conversation: list[ChatMessage],
    message: str,
    system_prompt: str,
    temperature: float,
    max_tokens: int,
    progress: gr.Progress = gr.Progress(),
):
    """Generator handler: yields (chatbot, conversation, textbox, stats) as the reply grows.

    The user's message enters the conversation before generation starts, so a failure loses nothing.
    """
    message = (message or "").strip()
    if not message:
        raise gr.Error("The message is empty: type something to send.", title="Check your input")
    if len(message) > MAX_MESSAGE_CHARS:
        raise gr.Error(
            f"The message is {len(message):,} characters; the limit is {MAX_MESSAGE_CHARS:,}.",
            title="Check your input",
        )
    params = ChatParams(temperature=float(temperature), max_tokens=int(max_tokens))
    with user_errors():
        params.check()
    conversation.append(ChatMessage("user", message))
    yield to_chatbot(conversation), conversation, "", ""
    ensure_loaded(engine, progress)

    prompt = [ChatMessage("system", system_prompt.strip())] if system_prompt.strip() else []
    prompt += conversation
    reply = ChatMessage("assistant", "")
    conversation.append(reply)
    stats_text = ""
    with user_errors():
        for delta in engine.stream(prompt, params):
            if delta.text:
                # Replace rather than mutate: ChatMessage is frozen, and the list keeps the partial
                # reply if the user presses Stop between two tokens.
                reply = replace(reply, content=reply.content + delta.text)
                conversation[-1] = reply
            if delta.stats is not None:
                stats_text = stats_line(delta.stats)
            yield to_chatbot(conversation), conversation, "", stats_text


def build(engine: ChatEngine, presets: list[ChatPreset]) -> None:
    """Lay out the chat panel inside the current Blocks context."""
    preset = presets[0]
    conversation = gr.State([])
    model_info = gr.Markdown(model_line(engine))
    chatbot = gr.Chatbot(label="Conversation", height=420, elem_id="chatbot")
    stats = gr.Markdown(elem_id="chat-stats")
    with gr.Row():
        message = gr.Textbox(
            placeholder="Type a message and press Enter",
            show_label=False,
            scale=6,
            elem_id="chat-input",
            max_lines=8,
        )
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
        stop = gr.Button("Stop", variant="stop", scale=1, elem_id="chat-stop")
    with gr.Accordion("Settings", open=False):
        system_prompt = gr.Textbox(preset.system_prompt, label="System prompt", lines=2)
        with gr.Row():
            temperature = gr.Slider(0.0, 2.0, value=preset.temperature, step=0.05, label="Temperature")
            max_tokens = gr.Slider(16, 4096, value=preset.max_tokens, step=16, label="Max new tokens")
        clear = gr.Button("New conversation")

    def handler(conv, msg, system, temp, max_tok, progress=gr.Progress()):
        yield from respond(engine, conv, msg, system, temp, max_tok, progress)

    inputs = [conversation, message, system_prompt, temperature, max_tokens]
    outputs = [chatbot, conversation, message, stats]
    events = [trigger(handler, inputs, outputs, concurrency_id="chat") for trigger in (message.submit, send.click)]
    for event in events:
        event.then(lambda: model_line(engine), None, model_info)
    stop.click(None, None, None, cancels=events)
    clear.click(lambda: ([], [], ""), None, [chatbot, conversation, stats], cancels=events)
