"""Faults that must lose nothing: corrupt models, writes cut short, recordings a crash interrupted, a regenerate
that does not finish. The same faults through the running app (kill -9, a client that leaves) are in
test_faults_app.py."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest

from engines import embedded
from engines.base import ChatDelta, EngineError, ImageParams, InputError, TranscribeOptions
from engines.speech.recordings import repair_recordings, repair_wav

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- corrupt models


@pytest.fixture(scope="module")
def image_engine(tmp_path_factory):
    from engines.image.diffusion import load_tiny_demo

    data = tmp_path_factory.mktemp("image-data")
    engine = load_tiny_demo(data, "cpu")
    yield engine
    engine.unload()


def test_a_corrupt_image_model_is_a_clear_error_and_the_previous_one_keeps_serving(image_engine):
    models = image_engine.models_dir
    models.mkdir(parents=True, exist_ok=True)
    tiny = Path(image_engine.model)
    unet = next((tiny / "unet").glob("*.safetensors"))
    data = unet.read_bytes()
    (models / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (models / "noise.safetensors").write_bytes(os.urandom(4096))
    broken_folder = models / "broken-pipeline"
    shutil.copytree(tiny, broken_folder)
    broken_unet = next((broken_folder / "unet").glob("*.safetensors"))
    broken_unet.write_bytes(broken_unet.read_bytes()[:1000])

    params = ImageParams("a lighthouse", width=64, height=64, steps=2, seed=5)
    before = image_engine.generate(params).image.tobytes()
    for name in ("truncated.safetensors", "noise.safetensors", "broken-pipeline"):
        with pytest.raises((EngineError, InputError), match=name.split(".")[0]):
            image_engine.prepare(ImageParams("a lighthouse", model=name))
        assert image_engine.status().model == image_engine.display_name
        assert image_engine.generate(params).image.tobytes() == before, "the previous model still makes the same image"


def test_a_corrupt_whisper_folder_is_a_clear_error_and_the_previous_model_keeps_serving(tmp_path):
    from engines.speech.whisper import WhisperSpeechEngine
    from tests import fixtures

    wav = fixtures.speech_wav(tmp_path)
    engine = WhisperSpeechEngine(embedded.whisper_tiny_en(), cpu_threads=2, display_name="tiny.en")
    options = TranscribeOptions(beam_size=1)
    try:
        before = " ".join(s.text for s in engine.transcribe(str(wav), options)[1])
        broken = tmp_path / "broken-whisper"
        shutil.copytree(embedded.whisper_tiny_en(), broken)
        model = broken / "model.bin"
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 3])
        with pytest.raises(EngineError, match="Could not load Whisper model broken-whisper"):
            engine.switch(broken)
        assert engine.status().model == "tiny.en"
        assert " ".join(s.text for s in engine.transcribe(str(wav), options)[1]) == before
    finally:
        engine.unload()


# ---------------------------------------------------------------- regenerate


class SlowWords:
    """A chat engine that says ``words`` one at a time and lets the test look at the store between them."""

    kind = "chat"
    n_ctx = 4096

    def __init__(self, words: list[str], fail_after: int | None = None, on_word=None) -> None:
        from engines.fake import FakeChatEngine

        self._fake = FakeChatEngine()
        self.words, self.fail_after, self.on_word, self.seen = words, fail_after, on_word, []

    def __getattr__(self, name):
        return getattr(self._fake, name)

    def stream(self, messages, params):
        self.seen.append([m.content for m in messages])
        for i, word in enumerate(self.words):
            if self.fail_after is not None and i == self.fail_after:
                raise EngineError("the model crashed")
            if self.on_word:
                self.on_word(i)
            yield ChatDelta(word)


@pytest.fixture
def chat(tmp_path):
    from conversations import ConversationStore
    from ui.chat import ChatPanel
    from ui.presets import load_presets

    store = ConversationStore(tmp_path / "melange.db")

    def panel(engine):
        return ChatPanel(engine, store, tmp_path / "models", load_presets().chat, tmp_path / "presets")

    yield store, panel
    store.close()


CONTROLS = ("", 0.5, 0.9, 40, 1.1, 64, -1, "Helpful assistant")


def stored(store, conversation_id) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in store.messages(conversation_id)]


def test_regenerate_keeps_the_old_reply_until_the_new_one_is_complete(chat):
    store, panel = chat
    conversation_id = list(panel(SlowWords(["Old ", "reply."])).send(None, "Hello", *CONTROLS))[0][1]
    old = store.messages(conversation_id)[-1]
    during = []  # what the store holds as each new word comes
    engine = SlowWords([f"word{i} " for i in range(40)], on_word=lambda i: during.append(stored(store, conversation_id)))
    list(panel(engine).regenerate(conversation_id, *CONTROLS))
    assert len(during) == 40 and all(s == [("user", "Hello"), ("assistant", "Old reply.")] for s in during)
    assert engine.seen == [["Hello"]], "the new reply is not asked to follow the old one"
    assert stored(store, conversation_id) == [("user", "Hello"), ("assistant", "".join(engine.words))]
    assert store.messages(conversation_id)[-1].id == old.id


def test_a_regenerate_stopped_or_failed_halfway_leaves_the_old_reply(chat):
    import gradio as gr

    store, panel = chat
    conversation_id = list(panel(SlowWords(["Old ", "reply."])).send(None, "Hello", *CONTROLS))[0][1]
    old = store.messages(conversation_id)[-1]
    updates = panel(SlowWords([f"word{i} " for i in range(40)])).regenerate(conversation_id, *CONTROLS)
    next(updates)  # the conversation without the old reply
    assert next(updates)[0][-1]["content"].startswith("word0"), "the new reply is streaming"
    updates.close()  # Stop, or the tab closed
    assert store.messages(conversation_id)[-1] == old
    with pytest.raises(gr.Error, match="crashed"):
        list(panel(SlowWords(["New ", "words ", "then"], fail_after=2)).regenerate(conversation_id, *CONTROLS))
    assert store.messages(conversation_id)[-1] == old and len(store.messages(conversation_id)) == 2


# ---------------------------------------------------------------- writes cut short


def png_result(seed: int = 1, size: int = 64):
    from PIL import Image

    from engines.base import ImageResult

    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    return ImageResult(Image.fromarray(pixels), ImageParams("a test", width=size, height=size, seed=seed), "m", 0.1)


def test_an_image_write_cut_short_leaves_no_half_png(tmp_path, monkeypatch):
    from PIL import Image

    from engines.image.gallery import Gallery

    gallery = Gallery(tmp_path / "images")
    first = gallery.save(png_result(1))
    real_save = Image.Image.save

    def crash_mid_write(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG\r\n\x1a\n half of an image")
        raise OSError("No space left on device")

    monkeypatch.setattr(Image.Image, "save", crash_mid_write)
    with pytest.raises(OSError, match="No space"):
        gallery.save(png_result(2))
    monkeypatch.setattr(Image.Image, "save", real_save)
    assert gallery.newest() == [first], "no half-written PNG in the gallery"
    assert sorted(os.listdir(gallery.folder)) == [first.name], "nor a leftover temporary file"
    second = gallery.save(png_result(3))
    assert gallery.newest() == [second, first]


def test_kill_9_during_an_image_write_leaves_only_whole_pngs(tmp_path):
    """A real kill in the middle of writing a large PNG: the gallery holds the finished images only."""
    from PIL import Image

    from engines.image.gallery import Gallery

    folder = tmp_path / "images"
    script = (
        "import sys; sys.path.insert(0, sys.argv[2])\n"
        "from engines.image.gallery import Gallery\n"
        "from tests.test_faults import png_result\n"
        "gallery = Gallery(sys.argv[1])\n"
        "print(gallery.save(png_result(1)), flush=True)\n"
        "while True:\n"
        "    gallery.save(png_result(2, size=3000))  # seconds of encoding each\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script, str(folder), str(ROOT)], stdout=subprocess.PIPE, text=True)
    try:
        finished = Path(writer.stdout.readline().strip())
        # Kill it once the large image is being written: its temporary file has grown.
        deadline = time.monotonic() + 120
        while not any(p.name.endswith(".part") and p.stat().st_size > 100_000 for p in folder.iterdir()):
            assert writer.poll() is None and time.monotonic() < deadline, "the writer never got to the large image"
            time.sleep(0.02)
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait()
    pngs = Gallery(folder).newest()
    assert finished in pngs
    for png in pngs:
        with Image.open(png) as image:
            image.verify()  # whole, with its recipe chunk
        assert "melange" in Image.open(png).text


REAL_WRITE_TEXT = Path.write_text


def crash_mid_write_text(monkeypatch):
    """Path.write_text that writes half the text and then fails, as a crash or a full disk would."""
    real = Path.write_text

    def half(self, data, *args, **kwargs):
        real(self, data[: len(data) // 2], *args, **kwargs)
        raise OSError("No space left on device")

    monkeypatch.setattr(Path, "write_text", half)


def test_a_preset_write_cut_short_leaves_no_broken_preset(tmp_path, monkeypatch):
    from ui.presets import ChatPreset, load_presets, save_preset

    user = tmp_path / "presets"
    crash_mid_write_text(monkeypatch)
    with pytest.raises(OSError):
        save_preset(user / "chat", ChatPreset(name="Mine", system_prompt="Be brief. " * 50))
    monkeypatch.undo()
    assert not list((user / "chat").glob("*.toml")), "no half-written preset to stop the next start-up"
    load_presets(user_root=user)  # the app still starts
    path = save_preset(user / "chat", ChatPreset(name="Mine", system_prompt="Be brief."))
    assert "Mine" in [p.name for p in load_presets(user_root=user).chat] and path.name == "mine.toml"


def visible_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def test_exports_cut_short_leave_no_half_file(tmp_path, monkeypatch):
    import tempfile

    from engines.speech import subtitles
    from engines.base import Segment, Transcript, TranscriptInfo
    from ui.transcribe import write_exports

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the exports go, so the test can see them all
    transcript = Transcript(TranscriptInfo("en", 1.0, 2.0, "m"), [Segment(0.0, 2.0, "Hello there. " * 40)])
    crash_mid_write_text(monkeypatch)
    with pytest.raises(OSError):
        write_exports(transcript, "talk")
    monkeypatch.setattr(Path, "write_text", REAL_WRITE_TEXT)
    assert visible_files(tmp_path) == [], "no half-written export to download"
    files = write_exports(transcript, "talk")
    assert [Path(f).suffix for f in files] == [".txt", ".srt", ".vtt", ".json"]
    assert [Path(f).read_text(encoding="utf-8") for f in files] == [subtitles.export(transcript, fmt) for fmt in subtitles.FORMATS]
    assert visible_files(tmp_path) == sorted(Path(f) for f in files)


def test_a_chat_export_cut_short_leaves_no_half_file(chat, tmp_path, monkeypatch):
    import tempfile

    store, panel = chat
    chat_panel = panel(SlowWords(["A ", "reply."]))
    conversation_id = list(chat_panel.send(None, "Hello", *CONTROLS))[0][1]
    exports = tmp_path / "exports"
    exports.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(exports))
    crash_mid_write_text(monkeypatch)
    with pytest.raises(OSError):
        chat_panel.export(conversation_id)
    monkeypatch.setattr(Path, "write_text", REAL_WRITE_TEXT)
    assert visible_files(exports) == [], "no half-written export to download"
    md, js = chat_panel.export(conversation_id)
    assert "A reply." in Path(md).read_text() and '"A reply."' in Path(js).read_text()
    assert visible_files(exports) == sorted([Path(md), Path(js)])


# ---------------------------------------------------------------- recordings cut short


def write_wav(path: Path, seconds: float, rate: int = 16000) -> bytes:
    samples = (np.sin(np.arange(int(seconds * rate)) / 10) * 8000).astype(np.int16).tobytes()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples)
    return samples


def frames(path: Path) -> bytes:
    with wave.open(str(path)) as w:
        return w.readframes(w.getnframes())


def set_sizes(path: Path, riff: int, data: int) -> None:
    with open(path, "r+b") as f:
        f.seek(4)
        f.write(struct.pack("<I", riff))
        f.seek(40)
        f.write(struct.pack("<I", data))


def test_recordings_cut_short_get_their_header_repaired(tmp_path):
    folder = tmp_path / "recordings"
    (folder / "someone").mkdir(parents=True)
    never_patched = folder / "never-patched.wav"  # killed during the first chunk: sizes still 0
    samples = write_wav(never_patched, 2.0)
    set_sizes(never_patched, 36, 0)
    stale = folder / "someone" / "stale.wav"  # killed between a chunk and its header patch
    stale_samples = write_wav(stale, 3.0)
    set_sizes(stale, 36 + 16000, 16000)
    half_frame = folder / "half-frame.wav"  # killed in the middle of a sample
    half_samples = write_wav(half_frame, 1.0)
    with open(half_frame, "ab") as f:
        f.write(b"\x01")
    fine = folder / "fine.wav"
    write_wav(fine, 1.0)
    with_trailer = folder / "with-trailer.wav"  # a finished file with a chunk after its audio
    write_wav(with_trailer, 1.0)
    with open(with_trailer, "ab") as f:
        f.write(b"LIST" + struct.pack("<I", 4) + b"INFO")
    not_wav = folder / "notes.wav"
    not_wav.write_bytes(b"not a recording")
    untouched = {p: p.read_bytes() for p in (fine, with_trailer, not_wav)}

    assert frames(never_patched) == b"" and len(frames(stale)) == 16000, "broken before the repair"
    assert sorted(repair_recordings(folder)) == sorted([never_patched, stale, half_frame])
    assert frames(never_patched) == samples and frames(stale) == stale_samples and frames(half_frame) == half_samples
    assert all(p.read_bytes() == data for p, data in untouched.items())
    assert repair_recordings(folder) == [], "a repaired file needs nothing more"
    assert repair_recordings(tmp_path / "none") == []
    assert repair_wav(fine) is False


def test_kill_9_during_a_live_recording_keeps_it_up_to_the_kill(tmp_path):
    """The real LiveCaptioner writes a recording from microphone-sized chunks until it is killed; the app's start-up
    then repairs it, and it holds every chunk written before the kill."""
    from fastapi.testclient import TestClient

    import app
    from settings import Settings

    recordings = tmp_path / "data" / "recordings"
    recordings.mkdir(parents=True)
    script = (
        "import sys, numpy as np; sys.path.insert(0, sys.argv[2])\n"
        "from engines.fake import FakeSpeechEngine\n"
        "from engines.speech.live_captions import LiveCaptioner\n"
        "captioner = LiveCaptioner(FakeSpeechEngine(), sys.argv[1], background=True)\n"
        "chunk = (np.sin(np.arange(4800) / 7) * 9000).astype(np.int16)  # 0.3 s at 16 kHz, as the page sends\n"
        "for i in range(100000):\n"
        "    captioner.feed(16000, chunk)\n"
        "    print(i + 1, flush=True)\n"
    )
    recording = recordings / "recording.wav"
    writer = subprocess.Popen([sys.executable, "-c", script, str(recording), str(ROOT)], stdout=subprocess.PIPE, text=True)
    try:
        fed = 0
        while fed < 20:
            fed = int(writer.stdout.readline())
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait()
    TestClient(app.create_app(Settings(data_dir=tmp_path / "data", engines="fake")))
    with wave.open(str(recording)) as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1
        assert w.getnframes() >= fed * 4800, "every chunk fed before the kill is in the recording"
        assert len(w.readframes(w.getnframes())) == w.getnframes() * 2
