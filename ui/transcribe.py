"""Transcribe panel: files (upload or record) with the transcript growing as segments are decoded,
live microphone captions, speaker labels, a model picker, and TXT/SRT/VTT/JSON exports.

The handlers live on ``TranscribePanel`` so they can be tested without a browser; ``build`` wires them.
"""

from __future__ import annotations

import html
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr

from engines import speech_models, subtitles
from engines.base import SpeechEngine, TranscribeOptions, Transcript
from engines.live_captions import Captions, LiveCaptioner
from engines.speakers import SpeakerLabeler
from server.principal import HOST, Principal
from ui.access import Access, principal_of, require_host
from ui.common import ensure_loaded, model_line, progress_callback, user_errors
from ui.presets import TranscribePreset

AUTO_LANGUAGE = "Auto-detect"
LANGUAGES = [AUTO_LANGUAGE, "en", "de", "fr", "es", "it", "nl", "pt", "pl", "ru", "uk", "tr", "ar", "hi", "ja", "ko", "zh"]
STREAM_EVERY = 0.3  # seconds of microphone audio per chunk sent to the server
LIVE_TIME_LIMIT = 3 * 3600


def clock(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    if minutes >= 60:
        hours, minutes = divmod(minutes, 60)
        return f"{int(hours)}:{int(minutes):02d}:{secs:04.1f}"
    return f"{int(minutes):02d}:{secs:04.1f}"


@dataclass(frozen=True)
class FileOptions:
    """Everything the person set in the panel, as the handlers get it."""

    language: str = AUTO_LANGUAGE
    task: str = "transcribe"
    beam_size: float = 5
    vad_filter: bool = True
    word_timestamps: bool = False
    initial_prompt: str = ""
    hotwords: str = ""
    batched: bool = False
    speakers: bool = False
    num_speakers: float = 0  # 0: estimate

    def engine_options(self) -> TranscribeOptions:
        return TranscribeOptions(
            language=None if self.language in ("", None, AUTO_LANGUAGE) else self.language,
            task=self.task or "transcribe",
            beam_size=int(self.beam_size),
            vad_filter=bool(self.vad_filter),
            word_timestamps=bool(self.word_timestamps or self.speakers),  # speakers are assigned per word
            initial_prompt=self.initial_prompt or "",
            hotwords=self.hotwords or "",
            batched=bool(self.batched),
        )


def info_line(transcript: Transcript) -> str:
    info = transcript.info
    if info.multilingual:
        language = f"Language **{info.language}** ({info.language_probability:.0%})"
        if transcript.options and transcript.options.task == "translate":
            language += " → English"
    else:
        language = f"Language **{info.language}** (English-only model)"
    return f"{language} · {clock(info.duration)} of audio"


def timed_lines(transcript: Transcript, names: dict[str, str] | None = None) -> str:
    lines = []
    for s in transcript.segments:
        who = subtitles.speaker_name(s.speaker, names)
        lines.append(f"[{clock(s.start)} → {clock(s.end)}] {who + ': ' if who else ''}{s.text}")
    return "\n".join(lines)


def speaker_rows(transcript: Transcript | None, names: dict[str, str] | None = None) -> list[list[str]]:
    if transcript is None:
        return []
    speakers = dict.fromkeys(s.speaker for s in transcript.segments if s.speaker)
    return [[s, (names or {}).get(s, "")] for s in speakers]


def names_from_rows(rows) -> dict[str, str]:
    if rows is None:
        return {}
    if hasattr(rows, "values"):  # a pandas DataFrame
        rows = rows.values.tolist()
    return {str(r[0]): str(r[1]).strip() for r in rows if len(r) >= 2 and r[0] and r[1] and str(r[1]).strip()}


def write_exports(transcript: Transcript, stem: str, names: dict[str, str] | None = None, base: Path | None = None) -> list[str]:
    """The four exports in a fresh folder under ``base`` (its owner's exports folder; default the temp dir)."""
    folder = (base or Path(tempfile.gettempdir()) / "melange-transcripts") / uuid.uuid4().hex[:12]
    folder.mkdir(parents=True, exist_ok=True)
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)[:80] or "transcript"
    paths = []
    for fmt in subtitles.FORMATS:
        path = folder / f"{stem}.{fmt}"
        path.write_text(subtitles.export(transcript, fmt, names), encoding="utf-8")
        paths.append(str(path))
    return paths


def captions_html(captions: Captions | None, final: str | None = None, error: str = "") -> str:
    """Confirmed words in the normal colour, the tentative tail grey and italic; a failed decode under them."""
    if final is not None:
        return f'<div class="live-captions"><span class="confirmed">{html.escape(final)}</span></div>'
    if captions is None and not error:
        return '<div class="live-captions"><span class="hint">Press Record and speak: captions appear here.</span></div>'
    confirmed, tentative = (captions.confirmed, captions.tentative) if captions else ("", "")
    tail = f' <span class="tentative" style="color:#888;font-style:italic">{html.escape(tentative)}</span>'
    note = (
        f'<div class="live-error" style="color:#c00">Live captions stopped updating: {html.escape(error)}. '
        "The recording goes on; Stop transcribes all of it.</div>"
    )
    return (
        f'<div class="live-captions"><span class="confirmed">{html.escape(confirmed)}</span>'
        f"{tail if tentative else ''}</div>{note if error else ''}"
    )


class TranscribePanel:
    def __init__(
        self,
        engine: SpeechEngine,
        speakers: SpeakerLabeler | None = None,
        models_dir: Path | None = None,
        cache_dir: Path | None = None,
        recordings_dir: Path | None = None,
        access: Access | None = None,
    ) -> None:
        self.engine = engine
        self.access = access or Access()
        self.speakers = speakers or SpeakerLabeler()
        self.models_dir = models_dir
        self.cache_dir = cache_dir or Path(tempfile.gettempdir()) / "melange-models"
        self.recordings = recordings_dir or Path(tempfile.gettempdir()) / "melange-recordings"
        # One recording per browser session, kept here rather than in a gr.State: two microphone chunks handled
        # at once would each see an empty State and start a recording of their own, and a chunk arriving after
        # Stop would start one nobody ever finishes (an open file and a thread, left behind).
        self._live: dict[str, LiveCaptioner | None] = {}  # None: stopped; late chunks are dropped
        self._live_lock = threading.Lock()

    # ---------------------------------------------------------------- files

    def exports_dir(self, principal: Principal) -> Path | None:
        return self.access.folder("exports", principal) if self.access.data_dir is not None else None

    def recordings_dir(self, principal: Principal) -> Path:
        return self.recordings / principal.folder if principal.folder else self.recordings

    def transcribe(
        self, audio_path: str | None, options: FileOptions, progress: gr.Progress = gr.Progress(), principal: Principal = HOST
    ) -> Iterator[tuple[str, str, str, Transcript | None, list[str] | None, list[list[str]]]]:
        """Generator: yields (text, timed lines, info, transcript, export files, speaker rows) as segments arrive."""
        if not audio_path:
            raise gr.Error("Upload or record some audio first.", title="Check your input")
        engine_options = options.engine_options()
        if options.speakers and not 0 <= int(options.num_speakers) <= 8:
            raise gr.Error("The number of speakers must be between 1 and 8, or 0 to estimate it.", title="Check your input")
        ensure_loaded(self.engine, progress)
        started = time.perf_counter()
        with user_errors():
            info, segments = self.engine.transcribe(audio_path, engine_options)
            self.access.limits.check_audio(principal, info.duration)
            transcript = Transcript(info, [], engine_options)
            header = info_line(transcript)
            progress(0.0, desc="Transcribing…")
            yield "", "", header, None, None, []
            for segment in segments:
                transcript.segments.append(segment)
                if info.duration > 0:
                    progress(min(segment.end / info.duration, 1.0), desc=f"Transcribed {clock(segment.end)} of {clock(info.duration)}")
                yield transcript.text, timed_lines(transcript), header, None, None, []
            if options.speakers and transcript.segments:
                progress(None, desc="Labelling speakers…")
                yield transcript.text, timed_lines(transcript), f"{header} · labelling speakers…", None, None, []
                count = int(options.num_speakers) or None
                transcript.segments = self.speakers.label(audio_path, transcript.segments, count)
        elapsed = time.perf_counter() - started
        rtf = f" · real-time factor {elapsed / info.duration:.3f}" if info.duration > 0 else ""
        if not transcript.segments:
            header += " · no speech found"
        files = write_exports(transcript, Path(audio_path).stem, base=self.exports_dir(principal))
        rows = speaker_rows(transcript)
        yield transcript.text, timed_lines(transcript), f"{header} · done in {elapsed:.1f} s{rtf}", transcript, files, rows

    def rename(self, transcript: Transcript | None, rows, principal: Principal = HOST) -> tuple[str, list[str] | None]:
        """Apply the names typed in the speakers table to the transcript view and every export."""
        if transcript is None:
            raise gr.Error("Transcribe something first.", title="Check your input")
        names = names_from_rows(rows)
        return timed_lines(transcript, names), write_exports(transcript, "transcript", names, self.exports_dir(principal))

    # ---------------------------------------------------------------- live

    def live_start(self, key: str, options: FileOptions, progress: gr.Progress = gr.Progress()):
        """Record pressed (``key``: the browser session): a new recording starts with the next chunk."""
        with self._live_lock:
            old = self._live.pop(key, None)
        if old is not None:
            old.finish()  # a recording left running by a page that never sent Stop
        with self._live_lock:
            running = sum(1 for s in self._live.values() if s is not None and not s.closed)
        if running >= self.access.limits.max_live_sessions:
            raise gr.Error(
                f"{running} live captions are running, the most this machine takes at once. Try again when one stops.",
                title="Busy",
            )
        ensure_loaded(self.engine, progress)
        return captions_html(None)

    def _session(self, key: str, options: FileOptions, principal: Principal = HOST) -> LiveCaptioner | None:
        with self._live_lock:
            if key in self._live:
                return self._live[key]  # the running recording, or None after Stop
            folder = self.recordings_dir(principal)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"recording-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.wav"
            session = self._live[key] = LiveCaptioner(
                self.engine, path, replace(options.engine_options(), task="transcribe"), background=True
            )
            return session

    def live_chunk(self, key: str, chunk, options: FileOptions, principal: Principal = HOST) -> str:
        """Stream handler: one microphone chunk in, the captions so far out."""
        if chunk is None:
            session = self._live.get(key)
            return captions_html(session.captions() if session else None, error=session.error if session else "")
        rate, data = chunk
        with user_errors():
            session = self._session(key, options, principal)
            if session is None or session.closed:
                return gr.skip()  # after Stop: the final transcript owns the page now
            captions = session.feed(rate, data)
        return captions_html(captions, error=session.error)

    def live_stop(self, key: str, options: FileOptions, progress: gr.Progress = gr.Progress(), principal: Principal = HOST):
        """Re-transcribe the whole recording in one pass, with word timestamps; it replaces the live text."""
        with self._live_lock:
            session = self._live.get(key)
            self._live[key] = None  # chunks still on their way are dropped
        if session is None:
            raise gr.Error(
                "Nothing was recorded. If the browser asked for the microphone, allow it (the icon left of "
                "the address) and press Record again.",
                title="No audio",
            )
        with user_errors():
            path = session.finish()
        final = replace(options, word_timestamps=True)
        last = None
        for last in self.transcribe(str(path), final, progress, principal):
            text = last[0]
            yield (captions_html(session.captions()) if last[3] is None else captions_html(None, text), *last, str(path))

    def live_forget(self, key: str) -> None:
        """The page closed: finish its recording, if one is running, so nothing is left open."""
        with self._live_lock:
            session = self._live.pop(key, None)
        if session is not None:
            session.finish()


def build(
    engine: SpeechEngine,
    presets: list[TranscribePreset],
    models_dir: Path | None = None,
    speakers: SpeakerLabeler | None = None,
    cache_dir: Path | None = None,
    recordings_dir: Path | None = None,
    blocks: gr.Blocks | None = None,
    access: Access | None = None,
    documents=None,
) -> None:
    """``cache_dir``: where the Whisper base extra is joined (default: the temp dir); ``recordings_dir``: where
    live recordings are kept (default: the temp dir); ``blocks``: to finish a recording when its page closes;
    ``documents``: a ``ui.documents.Documents`` for the "Add to documents" button."""
    panel = TranscribePanel(engine, speakers, models_dir, cache_dir, recordings_dir, access)
    preset = presets[0]
    model_info = gr.Markdown(model_line(engine), elem_id="transcribe-model")
    with gr.Row():
        with gr.Column(scale=2):
            with gr.Tab("File", id="transcribe-file"):
                audio = gr.Audio(
                    sources=["upload", "microphone"], type="filepath", format=None, label="Audio", elem_id="transcribe-audio"
                )
                with gr.Row():
                    run = gr.Button("Transcribe", variant="primary", elem_id="transcribe-run")
                    stop = gr.Button("Stop", elem_id="transcribe-stop")
            with gr.Tab("Live microphone", id="transcribe-live"):
                live_audio = gr.Audio(
                    sources=["microphone"], streaming=True, type="numpy", label="Microphone", elem_id="live-audio"
                )
                gr.Markdown(
                    "Captions appear while you speak (grey words may still change). When you stop, the whole "
                    "recording is transcribed again in one pass and replaces them. If nothing happens, allow "
                    "the microphone for this page in the browser."
                )
            with gr.Accordion("Options", open=True):
                with gr.Row():
                    language = gr.Dropdown(
                        LANGUAGES, value=preset.language or AUTO_LANGUAGE, label="Language", allow_custom_value=True,
                        elem_id="transcribe-language",
                    )  # fmt: skip
                    task = gr.Radio(["transcribe", "translate"], value=getattr(preset, "task", "transcribe"), label="Task",
                                    info="translate: to English (multilingual models)", elem_id="transcribe-task")  # fmt: skip
                with gr.Row():
                    beam_size = gr.Slider(1, 10, value=preset.beam_size, step=1, label="Beam size")
                    vad_filter = gr.Checkbox(value=preset.vad_filter, label="Skip silence (voice activity detection)")
                with gr.Row():
                    word_timestamps = gr.Checkbox(value=preset.word_timestamps, label="Word timestamps")
                    batched = gr.Checkbox(value=getattr(preset, "batched", False), label="Batched inference (long files)")
                initial_prompt = gr.Textbox(label="Initial prompt", placeholder="Names and spellings to expect", lines=1)
                hotwords = gr.Textbox(label="Hotwords", placeholder="Words to favour, e.g. Melange CTranslate2", lines=1)
                with gr.Row():
                    label_speakers = gr.Checkbox(value=getattr(preset, "speakers", False), label="Label speakers", elem_id="transcribe-speakers")
                    num_speakers = gr.Number(value=getattr(preset, "num_speakers", 0), minimum=0, maximum=8, precision=0,
                                             label="Number of speakers (0: estimate)")  # fmt: skip
            with gr.Accordion("Model", open=False, elem_id="transcribe-model-settings") as model_settings:
                model_choice = gr.Dropdown(panel_model_choices(models_dir), label="Model", elem_id="transcribe-model-choice")
                use_model = gr.Button("Use this model")
                hub_id = gr.Textbox(label="Or a Hugging Face id", placeholder="Systran/faster-whisper-large-v3")
                download = gr.Button("Download and use")
        with gr.Column(scale=3):
            info = gr.Markdown(elem_id="transcribe-info")
            live_html = gr.HTML(captions_html(None), elem_id="live-captions")
            text = gr.Textbox(label="Transcript", lines=8, elem_id="transcript", buttons=["copy"])
            timed = gr.Textbox(label="With timestamps", lines=8, elem_id="transcript-timed")
            speaker_table = gr.Dataframe(
                headers=["Speaker", "Name"], datatype=["str", "str"], column_count=2, interactive=True,
                static_columns=[0], label="Speakers: type a name to rename", elem_id="transcript-speakers",
            )  # fmt: skip
            rename = gr.Button("Rename speakers")
            add_to_documents = gr.Button("Add to documents", visible=documents is not None, elem_id="transcript-to-documents")
            files = gr.File(label="Exports (TXT, SRT, VTT, JSON)", file_count="multiple", elem_id="transcript-files")
            recording = gr.File(label="Recording", visible=True, elem_id="live-recording")
    transcript_state = gr.State(None)
    option_inputs = [language, task, beam_size, vad_filter, word_timestamps, initial_prompt, hotwords, batched,
                     label_speakers, num_speakers]  # fmt: skip

    def file_handler(request: gr.Request, audio_path, *values, progress=gr.Progress()):
        principal = principal_of(request)
        audio_path = panel.access.checked_file(principal, audio_path, "audio file")
        yield from panel.transcribe(audio_path, FileOptions(*values), progress, principal)

    file_outputs = [text, timed, info, transcript_state, files, speaker_table]
    event = run.click(file_handler, [audio, *option_inputs], file_outputs, concurrency_id="speech", api_name="transcribe")
    stop.click(None, None, None, cancels=[event])
    event.then(lambda: model_line(engine), None, model_info, api_visibility="private")
    def on_rename(request: gr.Request, transcript, rows):
        return panel.rename(transcript, rows, principal_of(request))

    rename.click(on_rename, [transcript_state, speaker_table], [timed, files], api_visibility="private")

    def on_add_to_documents(request: gr.Request, transcript, rows, audio_path, recording_path):
        source = audio_path or recording_path  # only its name is used, for the document's name
        collection = documents.add_transcript(transcript, names_from_rows(rows), source, principal_of(request))
        gr.Info(f"Added to your documents, collection {collection.name!r}: choose it under Documents in Chat to ask about it.")

    if documents is not None:
        add_to_documents.click(
            on_add_to_documents, [transcript_state, speaker_table, audio, recording], None, api_visibility="private"
        )

    # gr.Request comes first: Gradio fills it by position, and after *values it would never arrive.
    def start_handler(request: gr.Request, *values, progress=gr.Progress()):
        return panel.live_start(request.session_hash, FileOptions(*values), progress)

    def chunk_handler(request: gr.Request, chunk, *values):
        return panel.live_chunk(request.session_hash, chunk, FileOptions(*values), principal_of(request))

    def stop_handler(request: gr.Request, *values, progress=gr.Progress()):
        yield from panel.live_stop(request.session_hash, FileOptions(*values), progress, principal_of(request))

    live_audio.start_recording(start_handler, option_inputs, live_html, api_visibility="private")
    live_audio.stream(
        chunk_handler,
        [live_audio, *option_inputs],
        live_html,
        stream_every=STREAM_EVERY,
        time_limit=LIVE_TIME_LIMIT,
        concurrency_id="live",
        concurrency_limit=panel.access.limits.max_live_sessions,
        show_progress="hidden",
        api_visibility="private",
    )
    live_audio.stop_recording(
        stop_handler, option_inputs, [live_html, *file_outputs, recording], concurrency_id="speech", api_visibility="private"
    ).then(lambda: model_line(engine), None, model_info, api_visibility="private")
    if blocks is not None:

        def page_closed(request: gr.Request) -> None:
            panel.live_forget(request.session_hash)

        blocks.unload(page_closed)

    def switch(request: gr.Request, value, progress=gr.Progress()):
        require_host(principal_of(request), "switch models")
        if not value:
            raise gr.Error("Choose a model first.", title="Check your input")
        name = next((n for n, v in panel_model_choices(models_dir) if v == value), None)
        with user_errors():
            engine.switch(speech_models.resolve(value, panel.cache_dir), name, progress_callback(progress))
        return model_line(engine)

    def from_hub(request: gr.Request, repo_id, progress=gr.Progress()):
        require_host(principal_of(request), "download models")
        repo_id = (repo_id or "").strip()
        if not repo_id:
            raise gr.Error("Type a Hugging Face id such as Systran/faster-whisper-small.", title="Check your input")
        with user_errors():
            engine.switch(repo_id, repo_id, progress_callback(progress))
        return model_line(engine)

    use_model.click(switch, model_choice, model_info, concurrency_id="speech", api_visibility="private")
    download.click(from_hub, hub_id, model_info, concurrency_id="speech", api_visibility="private")
    if blocks is not None:

        def on_load(request: gr.Request):
            return gr.update(visible=principal_of(request).is_host)

        blocks.load(on_load, None, model_settings, api_visibility="private")


def panel_model_choices(models_dir: Path | None) -> list[tuple[str, str]]:
    return [(m.name, m.model) for m in speech_models.find_models(models_dir)]

