"""Transcribe panel handlers on the fake engine: fast checks of the glue."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import gradio as gr
import pytest
import srt

from engines.base import Segment, Transcript, TranscriptInfo, Word
from engines.fake import FakeSpeechEngine
from server.principal import HOST
from ui import transcribe
from ui.transcribe import FileOptions, TranscribePanel


def write_wav(path, seconds=1.5, rate=16000):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(seconds * rate))
    return path


class FakeLabeler:
    """Calls the first half of the words Speaker 1 and the rest Speaker 2."""

    def __init__(self):
        self.calls = []

    def label(self, audio, segments, num_speakers=None):
        self.calls.append(num_speakers)
        out = []
        for s in segments:
            half = len(s.words) // 2
            for name, words in (("Speaker 1", s.words[:half]), ("Speaker 2", s.words[half:])):
                words = tuple(Word(w.start, w.end, w.text, w.probability, name) for w in words)
                out.append(Segment(words[0].start, words[-1].end, " ".join(w.text for w in words), words, name))
        return out


@pytest.fixture
def panel():
    return TranscribePanel(FakeSpeechEngine(), FakeLabeler())


def run(panel, path, **options):
    return list(panel.transcribe(str(path) if path else path, FileOptions(**options)))


def test_transcribe_streams_text_timestamps_info_and_exports(panel, tmp_path):
    updates = run(panel, write_wav(tmp_path / "a.wav"))
    assert updates[0][:2] == ("", "")  # the header comes before the first segment
    text, timed, info, transcript, files, rows = updates[-1]
    assert text == "fake transcript of 1.5 seconds"
    assert timed.startswith("[00:00.0 → 00:01.5]")
    assert "Language **en**" in info and "done in" in info and "real-time factor" in info
    assert isinstance(transcript, Transcript) and rows == []
    assert sorted(Path(f).suffix for f in files) == [".json", ".srt", ".txt", ".vtt"]
    by_suffix = {Path(f).suffix: Path(f).read_text() for f in files}
    assert Path(files[0]).stem == "a"
    cues = list(srt.parse(by_suffix[".srt"]))
    assert [c.content for c in cues] == [text]
    assert by_suffix[".vtt"].startswith("WEBVTT")
    data = json.loads(by_suffix[".json"])
    assert data["text"] == text and data["model"] == "fake-whisper" and data["options"]["beam_size"] == 5


def test_options_reach_the_engine(tmp_path):
    seen = []
    engine = FakeSpeechEngine()
    original = engine.transcribe
    engine.transcribe = lambda path, options: (seen.append(options), original(path, options))[1]
    panel = TranscribePanel(engine, FakeLabeler())
    run(panel, write_wav(tmp_path / "a.wav"), language="fr", task="translate", beam_size=3, vad_filter=False,
        initial_prompt="Melange", hotwords="CTranslate2", batched=True, speakers=True)  # fmt: skip
    options = seen[0]
    assert (options.language, options.task, options.beam_size, options.vad_filter) == ("fr", "translate", 3, False)
    assert (options.initial_prompt, options.hotwords, options.batched) == ("Melange", "CTranslate2", True)
    assert options.word_timestamps, "speaker labels need word timestamps, so they are switched on"


def test_speakers_are_labelled_shown_and_renamed(panel, tmp_path):
    *_, (text, timed, info, transcript, files, rows) = run(panel, write_wav(tmp_path / "a.wav"), speakers=True, num_speakers=2)
    assert panel.speakers.calls == [2]
    assert rows == [["Speaker 1", ""], ["Speaker 2", ""]]
    assert "Speaker 1: fake transcript" in timed and "Speaker 2: of 1.5 seconds" in timed
    timed, files = panel.rename(transcript, [["Speaker 1", "Alice"], ["Speaker 2", " "]])
    assert "Alice: fake transcript" in timed and "Speaker 2: of 1.5 seconds" in timed
    by_suffix = {Path(f).suffix: Path(f).read_text() for f in files}
    assert "Alice: fake" in by_suffix[".srt"] and "<v Alice>fake" in by_suffix[".vtt"]
    assert json.loads(by_suffix[".json"])["speakers"] == ["Alice", "Speaker 2"]


def test_rename_before_any_transcript_asks_for_one(panel):
    with pytest.raises(gr.Error, match="Transcribe something first"):
        panel.rename(None, [])


def test_transcribe_without_a_file_asks_for_one(panel):
    with pytest.raises(gr.Error, match="Upload or record"):
        run(panel, None)


def test_transcribe_turns_unreadable_audio_into_a_clear_message(panel, tmp_path):
    bogus = tmp_path / "notes.wav"
    bogus.write_text("this is not audio")
    with pytest.raises(gr.Error, match="not a readable"):
        run(panel, bogus)


def test_bad_beam_size_is_a_clear_message(panel, tmp_path):
    with pytest.raises(gr.Error, match="Beam size"):
        run(panel, write_wav(tmp_path / "a.wav"), beam_size=0)


def test_live_stop_without_a_recording_explains_the_microphone(panel):
    with pytest.raises(gr.Error, match="microphone"):
        list(panel.live_stop("a-page", FileOptions()))


def test_info_line_for_english_only_and_translation():
    info = TranscriptInfo("en", 1.0, 65.0, "tiny.en", multilingual=False)
    assert transcribe.info_line(Transcript(info)) == "Language **en** (English-only model) · 01:05.0 of audio"
    info = TranscriptInfo("fr", 0.93, 3725.0, "base", multilingual=True)
    from engines.base import TranscribeOptions

    line = transcribe.info_line(Transcript(info, [], TranscribeOptions(task="translate")))
    assert line == "Language **fr** (93%) → English · 1:02:05.0 of audio"


def test_captions_html_shows_the_tentative_tail_grey_and_escapes():
    from engines.speech.live_captions import Captions

    page = transcribe.captions_html(Captions("Good <b>morning</b>.", "today we", 2.0))
    assert "Good &lt;b&gt;morning&lt;/b&gt;." in page
    assert 'class="tentative" style="color:#888' in page and "today we" in page
    assert "tentative" not in transcribe.captions_html(Captions("done", "", 1.0))


def test_switching_to_a_broken_model_is_a_clear_message():
    engine = FakeSpeechEngine()
    panel = TranscribePanel(engine, FakeLabeler())
    with pytest.raises(Exception, match="model.bin"):
        engine.switch("/models/missing")
    assert panel.engine.status().model == "fake-whisper"


def test_a_failed_live_decode_is_shown_under_the_captions(panel):
    from engines.speech.live_captions import Captions

    class Session:  # a recording whose background decode failed after two words
        error = "the model ran out of memory"
        closed = False
        received, max_seconds, gaps, skipped = 1.0, 3600.0, 0, 0.0

        def captions(self):
            return Captions("Hello there", "", 1.0)

    panel._live["a-page"] = Session()
    panel._makers["a-page"] = HOST.encode()  # the host's own recording
    page = panel.live_chunk("a-page", None, FileOptions())["html"]
    assert "Hello there" in page
    assert 'class="live-error"' in page and "the model ran out of memory" in page and "Stop transcribes all of it" in page
    assert "live-error" not in transcribe.captions_html(Captions("Hello there", "", 1.0))


def microphone_chunk(seconds: float = 0.5, rate: int = 48000):
    import numpy as np

    return rate, np.zeros((int(seconds * rate), 2), dtype=np.int16)


def test_chunks_racing_out_of_order_make_one_recording_in_order_and_none_after_stop(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    panel = TranscribePanel(FakeSpeechEngine(), FakeLabeler(), recordings_dir=tmp_path)
    panel.live_begin("a-page-recording")
    panel.live_start("a-page-recording", FileOptions(), owner="a-page")
    chunks = [(16000, np.full(8000, 100 * (i + 1), np.int16)) for i in range(8)]  # each chunk marked by its level
    order = [3, 0, 7, 1, 1, 5, 2, 6, 4, 0]  # shuffled, two sent twice (a retry)
    with ThreadPoolExecutor(4) as pool:  # chunk calls handled at once, as the server may
        list(pool.map(lambda i: panel.live_chunk("a-page-recording", chunks[i], seq=i), order))
    panel.live_begin("other-page-recording")
    panel.live_start("other-page-recording", FileOptions(), owner="other-page")
    panel.live_chunk("other-page-recording", microphone_chunk(), seq=0)
    assert len(list(tmp_path.glob("*.wav.part"))) == 2, "one recording each, written as it comes"
    *_, last = panel.live_stop("a-page-recording", FileOptions())
    recording = Path(last[-1])
    assert recording.parent == tmp_path and transcribe_duration(recording) == 4.0, "every chunk once"
    with wave.open(str(recording)) as w:
        samples = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    assert [int(samples[i * 8000]) for i in range(8)] == [100 * (i + 1) for i in range(8)], "in order"
    assert panel.live_chunk("a-page-recording", microphone_chunk(), seq=8) == {"stop": True}, "a late chunk is dropped"
    assert panel.live_chunk("never-begun", microphone_chunk(), seq=0) == {"stop": True}, "and starts no recording"
    assert len(list(tmp_path.glob("*.wav*"))) == 2
    panel.live_forget("other-page")  # its page closed without Stop: the file is finished, nothing left open
    assert sorted(p.suffix for p in tmp_path.glob("*.wav*")) == [".wav", ".wav"]
    assert all(transcribe_duration(p) > 0 for p in tmp_path.glob("*.wav"))


def transcribe_duration(path: Path) -> float:
    import wave

    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()


def test_a_recording_is_its_makers_whoever_learns_its_id(tmp_path):
    import numpy as np

    from server.principal import Principal
    from ui.access import Access, Limits

    alice, bob = Principal("guest", "Alice"), Principal("guest", "Bob")
    panel = TranscribePanel(FakeSpeechEngine(), FakeLabeler(), recordings_dir=tmp_path / "recordings",
                            access=Access(tmp_path, limits=Limits(max_live_sessions=2)))  # fmt: skip
    key = "0123456789abcdef0123"
    panel.live_begin(key, alice)
    chunk = (16000, (np.sin(np.arange(8000) / 7) * 9000).astype(np.int16))
    assert "html" in panel.live_chunk(key, chunk, seq=0, principal=alice)
    assert panel.live_chunk(key, chunk, seq=1, principal=bob) == {"stop": True}, "Bob cannot add to it"
    assert panel.live_wait(key, -1, timeout=0.1, principal=bob) == {"stop": True}, "nor read its captions"
    with pytest.raises(gr.Error, match="someone else"):
        panel.live_begin(key, bob)
    with pytest.raises(gr.Error, match="someone else"):
        list(panel.live_stop(key, FileOptions(), principal=bob))
    assert [p.parent.name for p in (tmp_path / "recordings").rglob("*.part")] == ["alice"], "kept in its maker's folder"
    panel.live_begin("fedcba9876543210fedc", bob)
    with pytest.raises(gr.Error, match="live captions are running"):
        panel.live_begin("00000000000000000000", Principal("guest", "Carol"))
    outputs = list(panel.live_stop(key, FileOptions(), principal=alice))
    assert outputs[-1][-1].endswith(".wav") and "/guests/alice/" in outputs[-1][-1]


def test_the_recorders_server_functions_are_given_the_callers_request(panel):
    """Gradio injects ``gr.Request`` only when it can resolve the annotation; an unresolvable one meant every
    live call ran with no request, and the recorder refused to start ("carries no session")."""
    from gradio.helpers import special_args

    from ui import live_mic

    with gr.Blocks():
        component = live_mic.recorder(panel, "")
    for name in ("live_begin", "live_chunk", "live_wait"):
        fn = getattr(component, name)
        marker = object()
        inputs, *_ = special_args(fn, [{}], marker, None)
        assert inputs == [{}, marker], f"{name} would get no request"
