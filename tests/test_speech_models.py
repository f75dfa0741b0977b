"""Whisper models from the hub: the real snapshot download, against a local stand-in for the hub."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines import embedded
from tests.fake_hub import FakeHub, calling

TINY = embedded.whisper_tiny_en()


@pytest.fixture(scope="module")
def hub():
    files = {p.name: p.read_bytes() for p in TINY.iterdir() if p.is_file()}
    files["README.md"] = b"# not wanted: only the model's files are fetched"
    hub = FakeHub({"someone/whisper-tiny-ct2": files, "someone/not-whisper": {"config.json": b"{}"}})
    yield hub
    hub.close()


def test_a_hub_model_is_downloaded_and_transcribes(hub, tmp_path):
    from tests import fixtures

    wav = fixtures.speech_wav(tmp_path)
    code = (
        "import json\n"
        "from engines.base import TranscribeOptions\n"
        "from engines.speech.models import download\n"
        "from engines.speech.whisper import WhisperSpeechEngine\n"
        "path = download('someone/whisper-tiny-ct2')\n"
        f"info, segments = WhisperSpeechEngine(path).transcribe({str(wav)!r}, TranscribeOptions(beam_size=1))\n"
        "print(json.dumps({'path': str(path), 'text': ' '.join(s.text for s in segments)}))\n"
    )
    result = hub.run(code, tmp_path / "hf")
    path = Path(result["path"])
    assert path.is_relative_to(tmp_path / "hf" / "hub" / "models--someone--whisper-tiny-ct2")
    assert (path / "model.bin").read_bytes() == (TINY / "model.bin").read_bytes()
    assert not (path / "README.md").exists(), "only the model's files are fetched"
    assert fixtures.word_error_rate(fixtures.SPEECH_TEXT, result["text"]) <= 0.15


def test_a_missing_repo_or_a_repo_that_is_not_whisper_gets_a_clear_message(hub, tmp_path):
    missing = hub.run(calling("__import__('engines.speech.models', fromlist=['x']).download('someone/nothing-here')"), tmp_path / "hf")
    assert missing["error"] == "InputError" and "No model repo 'someone/nothing-here'" in missing["message"]
    other = hub.run(calling("__import__('engines.speech.models', fromlist=['x']).download('someone/not-whisper')"), tmp_path / "hf")
    assert other["error"] == "InputError" and "not a CTranslate2 Whisper model" in other["message"]
