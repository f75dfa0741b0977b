"""Speaker labels offline: Resemblyzer's bundled encoder and k-means on two synthetic espeak-ng voices."""

from __future__ import annotations

from collections import Counter

import pytest

from engines import embedded
from engines.base import InputError, TranscribeOptions
from engines.speakers import SpeakerLabeler, _smooth
from engines.speech_whisper import WhisperSpeechEngine
from tests import fixtures

pytest.importorskip("resemblyzer")


@pytest.fixture(scope="module")
def engine():
    engine = WhisperSpeechEngine(embedded.whisper_tiny_en(), cpu_threads=2)
    yield engine
    engine.unload()


@pytest.fixture(scope="module")
def labeler():
    return SpeakerLabeler()


@pytest.fixture(scope="module")
def two_voices(tmp_path_factory):
    return fixtures.two_voice_wav(tmp_path_factory.mktemp("voices"))


def words_of(engine, path):
    _, segments = engine.transcribe(str(path), TranscribeOptions(word_timestamps=True, beam_size=1))
    return list(segments)


def turn_of(word, turns) -> int:
    middle = (word.start + word.end) / 2
    return min(range(len(turns)), key=lambda i: 0 if turns[i][1] <= middle <= turns[i][2] else
               min(abs(middle - turns[i][1]), abs(middle - turns[i][2])))  # fmt: skip


@pytest.mark.parametrize("num_speakers", [None, 2], ids=["estimated", "given"])
def test_two_voices_get_two_speakers_with_the_turns_right(engine, labeler, two_voices, num_speakers):
    path, turns = two_voices
    labelled = labeler.label(path, words_of(engine, path), num_speakers)
    words = [w for s in labelled for w in s.words]
    assert {w.speaker for w in words} == {"Speaker 1", "Speaker 2"}
    # Each true turn is spoken by one label, and the labels alternate as the voices do.
    per_turn = [Counter(w.speaker for w in words if turn_of(w, turns) == i) for i in range(len(turns))]
    majority = [c.most_common(1)[0][0] for c in per_turn]
    assert majority == ["Speaker 1", "Speaker 2", "Speaker 1", "Speaker 2"]
    right = sum(c[m] for c, m in zip(per_turn, majority))
    assert right / len(words) >= 0.95, per_turn
    assert [s.speaker for s in labelled] == majority, "one segment per turn"
    for s in labelled:
        assert {w.speaker for w in s.words} == {s.speaker}


def test_one_voice_is_one_speaker(engine, labeler, tmp_path):
    path = fixtures.speech_wav(tmp_path)
    labelled = labeler.label(path, words_of(engine, path))
    assert {s.speaker for s in labelled} == {"Speaker 1"}
    assert " ".join(s.text for s in labelled) == " ".join(w.text for s in labelled for w in s.words)


def test_bad_speaker_count_is_a_clear_message(labeler):
    with pytest.raises(InputError, match="between 1 and 8"):
        labeler.label("x.wav", [], 9)


def test_single_word_runs_are_merged_into_their_neighbours():
    assert _smooth([0, 0, 0, 1, 0, 0, 1, 1, 1]) == [0, 0, 0, 0, 0, 0, 1, 1, 1]
    assert _smooth([0, 0, 1, 1]) == [0, 0, 1, 1]
