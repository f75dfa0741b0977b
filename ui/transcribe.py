"""Transcribe panel: upload or record speech; the transcript grows as segments are decoded."""

from __future__ import annotations

import time

import gradio as gr

from engines.base import SpeechEngine, TranscribeOptions
from ui.common import ensure_loaded, model_line, user_errors
from ui.presets import TranscribePreset

AUTO_LANGUAGE = "Auto-detect"


def clock(seconds: float) -> str:
    minutes, secs = divmod(seconds, 60)
    return f"{int(minutes):02d}:{secs:04.1f}"


def transcribe(
    engine: SpeechEngine,
    audio_path: str | None,
    language: str,
    beam_size: float,
    vad_filter: bool,
    progress: gr.Progress = gr.Progress(),
):
    """Generator handler: yields (transcript, timed lines, info) as segments arrive."""
    if not audio_path:
        raise gr.Error("Upload or record some audio first.", title="Check your input")
    options = TranscribeOptions(
        language=None if language in ("", AUTO_LANGUAGE) else language,
        beam_size=int(beam_size),
        vad_filter=bool(vad_filter),
    )
    ensure_loaded(engine, progress)
    started = time.perf_counter()
    texts: list[str] = []
    timed: list[str] = []
    with user_errors():
        info, segments = engine.transcribe(audio_path, options)
        header = f"Language **{info.language}** ({info.language_probability:.0%}) · {clock(info.duration)} of audio"
        progress(0.0, desc="Transcribing…")
        yield "", "", header
        for segment in segments:
            texts.append(segment.text.strip())
            timed.append(f"[{clock(segment.start)} → {clock(segment.end)}] {segment.text.strip()}")
            if info.duration > 0:
                progress(min(segment.end / info.duration, 1.0), desc=f"Transcribed {clock(segment.end)}")
            yield " ".join(texts), "\n".join(timed), header
    elapsed = time.perf_counter() - started
    rtf = f" · real-time factor {elapsed / info.duration:.3f}" if info.duration > 0 else ""
    if not texts:
        header += " · no speech found"
    yield " ".join(texts), "\n".join(timed), f"{header} · done in {elapsed:.1f} s{rtf}"


def build(engine: SpeechEngine, presets: list[TranscribePreset]) -> None:
    preset = presets[0]
    model_info = gr.Markdown(lambda: model_line(engine))
    with gr.Row():
        with gr.Column(scale=2):
            audio = gr.Audio(
                sources=["upload", "microphone"], type="filepath", format=None, label="Audio", elem_id="transcribe-audio"
            )
            with gr.Row():
                language = gr.Dropdown(
                    [AUTO_LANGUAGE, "en", "de", "fr", "es", "it", "nl", "pt", "ja", "zh"],
                    value=preset.language or AUTO_LANGUAGE,
                    label="Language",
                    allow_custom_value=True,
                )
                beam_size = gr.Slider(1, 10, value=preset.beam_size, step=1, label="Beam size")
            vad_filter = gr.Checkbox(value=preset.vad_filter, label="Skip silence (voice activity detection)")
            run = gr.Button("Transcribe", variant="primary", elem_id="transcribe-run")
        with gr.Column(scale=3):
            info = gr.Markdown(elem_id="transcribe-info")
            text = gr.Textbox(label="Transcript", lines=8, elem_id="transcript", buttons=["copy"])
            timed = gr.Textbox(label="With timestamps", lines=8, elem_id="transcript-timed")

    def handler(audio_path, lang, beams, vad, progress=gr.Progress()):
        yield from transcribe(engine, audio_path, lang, beams, vad, progress)

    run.click(handler, [audio, language, beam_size, vad_filter], [text, timed, info], concurrency_id="speech").then(
        lambda: model_line(engine), None, model_info
    )
