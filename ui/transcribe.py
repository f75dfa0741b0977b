"""Transcribe panel: files (upload or record) with the transcript growing as segments are decoded,
live microphone captions, speaker labels, a model picker, and TXT/SRT/VTT/JSON exports.

The handlers live on ``TranscribePanel`` so they can be tested without a browser; ``build`` wires them.
"""

from __future__ import annotations

import contextlib
import html
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr

from engines import embedded
from engines.speech import audio_stream, models as speech_models, subtitles
from engines.speech import speakers as speakers_module
from engines.base import EngineError, InputError, SpeechEngine, TranscribeOptions, Transcript
from engines.speech.live_captions import Captions, LiveCaptioner
from engines.speech.speakers import SpeakerLabeler
from server.principal import HOST, Principal
from ui import live_mic
from ui.access import Access, principal_of, require_host
from ui.common import ensure_loaded, model_line, progress_callback, user_errors
from ui.presets import TranscribePreset

AUTO_LANGUAGE = "Auto-detect"
LANGUAGES = [AUTO_LANGUAGE, "en", "de", "fr", "es", "it", "nl", "pt", "pl", "ru", "uk", "tr", "ar", "hi", "ja", "ko", "zh"]
LIVE_TIME_LIMIT = 3 * 3600  # seconds of one live recording
LIVE_IDLE_SECONDS = 120  # a recording no chunk reached for this long was abandoned (its page is gone)


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
    channels: bool = False  # each channel of a two-channel recording is one speaker (calls, podcasts)

    def engine_options(self) -> TranscribeOptions:
        return TranscribeOptions(
            language=None if self.language in ("", None, AUTO_LANGUAGE) else self.language,
            task=self.task or "transcribe",
            beam_size=int(self.beam_size),
            vad_filter=bool(self.vad_filter),
            word_timestamps=bool(self.word_timestamps or self.speakers or self.channels),  # speakers go per word
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
        partial = folder / f".{stem}.{fmt}.part"
        partial.write_text(subtitles.export(transcript, fmt, names), encoding="utf-8")
        partial.replace(path)  # atomic: never half a file
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
        # Recordings are kept here rather than in a gr.State: the page's chunk calls are not Gradio events
        # (ui/live_mic.py says why), and a chunk arriving after Stop must not start one nobody finishes.
        self._live: dict[str, LiveCaptioner | None] = {}  # by recording id; None: stopped, late chunks dropped
        self._owners: dict[str, str] = {}  # recording id -> the page (session) that records it
        self._makers: dict[str, str] = {}  # recording id -> the person recording it (Principal.encode())
        self._tail: SpeechEngine | None = None  # the embedded tiny.en, for the live tail of a slower model
        self._copy: SpeechEngine | None = None  # the panel's model again, for live captions only
        self._copy_of: tuple = ()
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
        if options.channels:
            yield from self._transcribe_channels(audio_path, engine_options, started, progress, principal)
            return
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

    def _transcribe_channels(
        self, audio_path: str, engine_options: TranscribeOptions, started: float, progress, principal: Principal = HOST
    ):
        """A two-channel recording with one speaker per channel: each channel transcribed on its own, the two
        merged by time (words leaking from the other speaker's microphone left out: engines.speech.speakers)."""
        name = Path(audio_path).name
        with user_errors(), tempfile.TemporaryDirectory(prefix="melange-channels-") as folder:
            audio_stream.probe_audio(audio_path)
            count = audio_stream.channel_count(audio_path)
            if count != 2:
                raise gr.Error(
                    f"'One speaker per channel' takes a two-channel recording (a call, a podcast); {name} has "
                    f"{count} channel{'s' if count != 1 else ''}. Turn it off, or use 'Label speakers'.",
                    title="Check your input",
                )  # fmt: skip
            progress(None, desc="Splitting the channels…")
            paths = audio_stream.split_channels(audio_path, folder)
            if speakers_module.channels_alike(paths):
                raise gr.Error(
                    f"Both channels of {name} hold the same sound, so they are not one speaker each. Turn off "
                    "'One speaker per channel', or use 'Label speakers'.",
                    title="Check your input",
                )  # fmt: skip
            heard: list[tuple[Path, list]] = []
            for index, path in enumerate(paths):
                info, segments = self.engine.transcribe(str(path), engine_options)
                header = f"{info_line(Transcript(info, [], engine_options))} · one speaker per channel"
                got: list = []
                heard.append((path, got))
                for segment in segments:
                    got.append(segment)
                    done = (index + min(segment.end / info.duration, 1.0)) / len(paths) if info.duration > 0 else None
                    progress(done, desc=f"Channel {index + 1} of {len(paths)}: {clock(segment.end)}")
                    so_far = Transcript(info, speakers_module.merge_channels([(p, list(g)) for p, g in heard]), engine_options)
                    yield so_far.text, timed_lines(so_far), header, None, None, []
            transcript = Transcript(info, speakers_module.merge_channels(heard), engine_options)
        elapsed = time.perf_counter() - started
        rtf = f" · real-time factor {elapsed / info.duration:.3f}" if info.duration > 0 else ""
        if not transcript.segments:
            header += " · no speech found"
        files = write_exports(transcript, Path(audio_path).stem, base=self.exports_dir(principal))
        yield transcript.text, timed_lines(transcript), f"{header} · done in {elapsed:.1f} s{rtf}", transcript, files, speaker_rows(transcript)

    def rename(self, transcript: Transcript | None, rows, principal: Principal = HOST) -> tuple[str, list[str] | None]:
        """Apply the names typed in the speakers table to the transcript view and every export."""
        if transcript is None:
            raise gr.Error("Transcribe something first.", title="Check your input")
        names = names_from_rows(rows)
        return timed_lines(transcript, names), write_exports(transcript, "transcript", names, self.exports_dir(principal))

    # ---------------------------------------------------------------- live

    def owns(self, key: str, principal: Principal) -> bool:
        """Whether the recording ``key`` is this person's: its id is the page's, so it is checked on every use."""
        return self._makers.get(key) == principal.encode()

    def live_begin(self, key: str, principal: Principal = HOST) -> None:
        """Record pressed (``key``: the recording's id, made by the page): its file is opened now, before
        the first chunk, so no chunk can start a second one. Recordings nobody fed for a while are finished."""
        now = time.monotonic()
        with self._live_lock:
            idle = [k for k, s in self._live.items() if s is not None and now - s.last_fed > LIVE_IDLE_SECONDS]
            stale = [self._live.pop(k) for k in idle]
            if key in self._makers and self._makers[key] != principal.encode():
                raise gr.Error("That recording belongs to someone else.", title="Not found")
            running = sum(1 for s in self._live.values() if s is not None and not s.closed)
            if key not in self._live and running >= self.access.limits.max_live_sessions:
                raise gr.Error(
                    f"{running} live captions are running, the most this machine takes at once. Try again when one stops.",
                    title="Busy",
                )
            if key not in self._live:
                folder = self.recordings_dir(principal)
                folder.mkdir(parents=True, exist_ok=True)
                name = f"recording-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}.wav"
                self._live[key] = LiveCaptioner(
                    self._live_engine(), folder / name, FileOptions().engine_options(), background=True,
                    max_seconds=LIVE_TIME_LIMIT,
                )  # fmt: skip
                self._makers[key] = principal.encode()
        for session in stale:
            with contextlib.suppress(Exception):
                session.finish()

    def live_start(
        self, key: str, options: FileOptions, owner: str = "", error: str = "", progress: gr.Progress = gr.Progress(),
        principal: Principal = HOST,
    ):  # fmt: skip
        """The Record event: the panel's options for the recording ``key``, the page that owns it (``owner``,
        whose closing finishes it), and the model loaded with progress. ``error``: the browser's refusal."""
        if error:
            raise gr.Error(
                "The browser did not allow the microphone: allow it for this page (the icon left of the "
                "address) and press Record again.",
                title="No microphone",
            )
        if key not in self._live:
            self.live_begin(key, principal)
        if not self.owns(key, principal):
            raise gr.Error("That recording belongs to someone else.", title="Not found")
        session = self._live.get(key)
        if session is not None:
            engine_options = replace(options.engine_options(), task="transcribe")
            session.options = engine_options
            session.tail_engine = self._tail_engine(engine_options)
            self._owners[key] = owner or key
        ensure_loaded(self.engine, progress)
        if session is not None:
            ensure_loaded(session.engine, progress)
        return "Recording: captions appear as you speak; Stop transcribes all of it again."

    def _live_engine(self) -> SpeechEngine:
        """The panel's model as a copy of its own for live captions (``live_copy``): on a CPU a live decode
        then never waits behind a file job, and keeps the CPU while file jobs run at batch priority
        (engines.priority). On a GPU, or for an engine without a copy, the panel's engine. Called with the
        live lock held; the copy is freed when the last recording stops."""
        copy = getattr(self.engine, "live_copy", None)
        if copy is None or getattr(self.engine, "device", "cpu") != "cpu":
            return self.engine
        wanted = (str(getattr(self.engine, "model", "")), getattr(self.engine, "display_name", ""))
        if self._copy is None or self._copy_of != wanted:
            if self._copy is not None:  # a copy of the model chosen before: gone for good, off the books too
                getattr(self._copy, "unregister", self._copy.unload)()
            self._copy, self._copy_of = copy(), wanted
        return self._copy

    def _free_live_copy(self) -> None:
        """No recording is running: the live copy's memory goes back (it loads again with the next one)."""
        with self._live_lock:
            if self._copy is not None and not any(s is not None and not s.closed for s in self._live.values()):
                self._copy.unload()

    def _tail_engine(self, options: TranscribeOptions) -> SpeechEngine | None:
        """The embedded tiny.en for the tentative tail, when the panel's model is another and English is
        spoken: the captioner hands it the tail only while the panel's model is too slow to keep up."""
        name = str(getattr(self.engine, "display_name", ""))
        english = options.language == "en" or ".en" in name
        if not english or name == embedded.WHISPER_TINY_EN_NAME or not hasattr(self.engine, "transcribe_window"):
            return None
        with self._live_lock:
            if self._tail is None and embedded.whisper_tiny_en() is not None:
                from engines.speech.whisper import WhisperSpeechEngine

                self._tail = WhisperSpeechEngine(
                    embedded.whisper_tiny_en(), getattr(self.engine, "device", "cpu"),
                    display_name=embedded.WHISPER_TINY_EN_NAME, cpu_threads=getattr(self.engine, "cpu_threads", 0),
                    background=False,
                )  # fmt: skip
            return self._tail

    def live_chunk(
        self, key: str, chunk, options: FileOptions | None = None, seq: int | None = None, principal: Principal = HOST
    ) -> dict:
        """One chunk of the recording ``key`` (``seq``: its number; the captioner puts chunks back in order and
        drops copies); answers the captions so far, as the page shows them."""
        session = self._live.get(key) if self.owns(key, principal) else None
        if session is None or session.closed:
            return {"stop": True}  # after Stop, or an unknown recording: the final transcript owns the page
        if chunk is None:
            return self._answer(session, session.captions())
        rate, data = chunk
        with user_errors():
            captions = session.feed(rate, data, seq)
        return self._answer(session, captions)

    def live_wait(self, key: str, version: int, timeout: float = 10.0, principal: Principal = HOST) -> dict:
        """The page's long poll: answers as soon as the captions differ from ``version``."""
        session = self._live.get(key) if self.owns(key, principal) else None
        if session is None or session.closed:
            return {"stop": True}
        return self._answer(session, session.wait(version, timeout))

    @staticmethod
    def _answer(session: LiveCaptioner, captions: Captions) -> dict:
        answer = {"version": captions.version, "html": captions_html(captions, error=session.error)}
        if session.received >= session.max_seconds:
            answer["stop"] = True
        if session.gaps:
            answer["note"] = f"{session.gaps} piece(s) of audio never arrived."
        elif session.skipped:
            answer["note"] = "The machine is busy: live captions skipped ahead (…); Stop transcribes all of it."
        return answer

    def live_stop(self, key: str, options: FileOptions, progress: gr.Progress = gr.Progress(), principal: Principal = HOST):
        """Re-transcribe the whole recording in one pass, with word timestamps; it replaces the live text."""
        if key in self._makers and not self.owns(key, principal):
            raise gr.Error("That recording belongs to someone else.", title="Not found")
        with self._live_lock:
            session = self._live.get(key)
            self._live[key] = None  # chunks still on their way are dropped
            self._owners.pop(key, None)
        if session is None:
            raise gr.Error(
                "Nothing was recorded. If the browser asked for the microphone, allow it (the icon left of "
                "the address) and press Record again.",
                title="No audio",
            )
        with user_errors():
            path = session.finish()
        self._free_live_copy()
        final = replace(options, word_timestamps=True)
        last = None
        for last in self.transcribe(str(path), final, progress, principal):
            text = last[0]
            yield (captions_html(session.captions()) if last[3] is None else captions_html(None, text), *last, str(path))

    def live_forget(self, owner: str) -> None:
        """The page ``owner`` closed: finish its recordings that are still running, so nothing is left open."""
        with self._live_lock:
            keys = [k for k, o in self._owners.items() if o == owner] + ([owner] if owner in self._live else [])
            sessions = [self._live.pop(k, None) for k in keys]
            for k in keys:
                self._owners.pop(k, None)
        for session in sessions:
            if session is not None:
                session.finish()
        self._free_live_copy()


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
                live_html = live_mic.recorder(panel, captions_html(None))
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
                channels = gr.Checkbox(
                    value=False, label="One speaker per channel (two-channel calls and podcasts)", elem_id="transcribe-channels",
                    info="Each channel is transcribed on its own and the two are merged by time.",
                )  # fmt: skip
            with gr.Accordion("Model", open=False, elem_id="transcribe-model-settings") as model_settings:
                model_choice = gr.Dropdown(panel_model_choices(models_dir, engine), label="Model", elem_id="transcribe-model-choice")
                use_model = gr.Button("Use this model")
                hub_id = gr.Textbox(label="Or a Hugging Face id", placeholder="Systran/faster-whisper-large-v3")
                download = gr.Button("Download and use")
        with gr.Column(scale=3):
            info = gr.Markdown(elem_id="transcribe-info")
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
                     label_speakers, num_speakers, channels]  # fmt: skip

    # Spelled out (not *values) so the API names every input: client.predict(audio, word_timestamps=True, ...).
    def file_handler(
        request: gr.Request, audio, language, task, beam_size, vad_filter, word_timestamps, initial_prompt, hotwords,
        batched, speakers, num_speakers, channels, progress=gr.Progress(),
    ):  # fmt: skip
        principal = principal_of(request)
        audio = panel.access.checked_file(principal, audio, "audio file")
        options = FileOptions(language, task, beam_size, vad_filter, word_timestamps, initial_prompt, hotwords, batched,
                              speakers, num_speakers, channels)  # fmt: skip
        yield from panel.transcribe(audio, options, progress, principal)

    private = {"api_visibility": "private"}
    file_outputs = [text, timed, info, transcript_state, files, speaker_table]
    event = run.click(file_handler, [audio, *option_inputs], file_outputs, concurrency_id="speech", api_name="transcribe")
    stop.click(None, None, None, cancels=[event])
    event.then(lambda: model_line(engine), None, model_info, **private)

    def on_rename(request: gr.Request, transcript, rows):
        return panel.rename(transcript, rows, principal_of(request))

    rename.click(on_rename, [transcript_state, speaker_table], [timed, files], **private)

    def on_add_to_documents(request: gr.Request, transcript, rows, audio_path, recording_path):
        source = audio_path or recording_path  # only its name is used, for the document's name
        collection = documents.add_transcript(transcript, names_from_rows(rows), source, principal_of(request))
        gr.Info(f"Added to your documents, collection {collection.name!r}: choose it under Documents in Chat to ask about it.")

    if documents is not None:
        add_to_documents.click(
            on_add_to_documents, [transcript_state, speaker_table, audio, recording], None, api_visibility="private"
        )

    # gr.Request comes first: Gradio fills it by position, and after *values it would never arrive.
    # The recorder's events carry the recording's id in their data (ui/live_mic.py).
    def start_handler(request: gr.Request, event: gr.EventData, *values, progress=gr.Progress()):
        data = live_mic.event_data(event)
        return panel.live_start(
            data.get("id", ""), FileOptions(*values), request.session_hash, data.get("error", ""), progress, principal_of(request)
        )

    def stop_handler(request: gr.Request, event: gr.EventData, *values, progress=gr.Progress()):
        yield from panel.live_stop(live_mic.event_data(event).get("id", ""), FileOptions(*values), progress, principal_of(request))

    live_html.start_recording(start_handler, option_inputs, info, show_progress="minimal", **private)
    live_html.stop_recording(
        stop_handler, option_inputs, [live_html, *file_outputs, recording], concurrency_id="speech", **private
    ).then(lambda: model_line(engine), None, model_info, **private)
    if blocks is not None:

        def page_closed(request: gr.Request) -> None:
            panel.live_forget(request.session_hash)

        blocks.unload(page_closed)

    def switch(request: gr.Request, value, progress=gr.Progress()):
        require_host(principal_of(request), "switch models")
        if not value:
            raise gr.Error("Choose a model first.", title="Check your input")
        name = next((n for n, v in panel_model_choices(models_dir, engine) if v == value), None)
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

    use_model.click(switch, model_choice, model_info, concurrency_id="speech", **private)
    download.click(from_hub, hub_id, model_info, concurrency_id="speech", **private)
    if blocks is not None:

        def on_load(request: gr.Request):
            return gr.update(visible=principal_of(request).is_host)

        blocks.load(on_load, None, model_settings, **private)


def panel_model_choices(models_dir: Path | None, engine: SpeechEngine | None = None) -> list[tuple[str, str]]:
    remote = getattr(engine, "models", None)
    if remote is not None:  # a remote engine: the server's /v1/models
        try:
            return [(m, m) for m in remote()]
        except (EngineError, InputError):
            return []
    return [(m.name, m.model) for m in speech_models.find_models(models_dir)]
