"""Speaker labels offline: Resemblyzer's bundled encoder; the number of speakers given or estimated, on voices
from three synthesisers (tests/speech_fixtures.py) and on real people's speech shipped in packages."""

from __future__ import annotations

from collections import Counter

import pytest

from engines import embedded
from engines.base import InputError, Segment, TranscribeOptions, Word
from engines.speech.speakers import SpeakerLabeler, _smooth, sentence_spans
from engines.speech.whisper import WhisperSpeechEngine
from tests import fixtures, speech_fixtures

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


def test_two_espeak_voices_get_two_speakers_with_the_turns_right_when_told_there_are_two(engine, labeler, two_voices):
    # resemblyzer hears espeak-ng's two voices as nearly one (engines/speech/speakers.py): the count is needed here.
    path, turns = two_voices
    labelled = labeler.label(path, words_of(engine, path), 2)
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


@pytest.mark.parametrize("voice", ["flite-rms", "flite-kal", "festival-ked", "espeak-gb-f", "flite-rms-low"])
def test_a_monologue_is_never_split(engine, labeler, tmp_path, voice):
    path, _ = speech_fixtures.monologue_turns(tmp_path, voice, 30.0)
    assert {s.speaker for s in labeler.label(path, words_of(engine, path))} == {"Speaker 1"}


# Voices the speaker count was not calibrated on (speech_fixtures.HELD_OUT_VOICES), with one calibration
# voice in the first four-speaker case; turns 0.3 s apart, so stretches of speech span changes of speaker.
CONVERSATIONS = {
    2: ["flite-rms", "flite-kal"],
    3: ["flite-rms", "flite-kal", "festival-ked"],
    4: ["flite-rms", "flite-kal", "festival-ked", "flite-slt"],
    "4 held out": ["espeak-029-f", "espeak-nyc-m", "flite-rms", "festival-ked"],
}


@pytest.mark.parametrize("case", list(CONVERSATIONS))
def test_speakers_are_counted_and_labelled(engine, labeler, tmp_path, case):
    voices = CONVERSATIONS[case]
    count = len(voices)
    path, truth = speech_fixtures.conversation_wav(tmp_path, voices, 3 * count, first=4 * count, gap=0.3)
    segments = words_of(engine, path)
    given = speech_fixtures.speaker_turns(labeler.label(path, segments, count))
    assert speech_fixtures.der(truth, given) <= 0.10
    estimated = speech_fixtures.speaker_turns(labeler.label(path, segments))
    assert len({who for who, _, _ in estimated}) == count
    assert speech_fixtures.der(truth, estimated) <= 0.15


def test_real_people_are_told_apart(engine, labeler, tmp_path):
    """Film clips of Cate Blanchett and Heath Ledger (in the gradio package) and the woman reading channel
    names in alsa-utils: nothing was tuned on them."""
    path, truth = speech_fixtures.real_conversation_wav(tmp_path)
    segments = words_of(engine, path)
    estimated = speech_fixtures.speaker_turns(labeler.label(path, segments))
    assert len({who for who, _, _ in estimated}) == 3
    assert speech_fixtures.der(truth, estimated) <= 0.25


def test_a_real_phone_call_gets_its_two_speakers_without_being_told(engine, labeler, tmp_path):
    """Two women on a telephone line, with turns marked by people (pyannote.audio's sample). Counted on
    stretches of speech that ran across sentence ends, the two voices' groups were 0.78 alike over the line,
    nearly as alike as a synthetic monologue's halves (0.80-0.88): one speaker, DER 47%. Nothing was
    calibrated on it."""
    path, truth = speech_fixtures.phone_call_wav(tmp_path)
    segments = words_of(engine, path)
    estimated = speech_fixtures.speaker_turns(labeler.label(path, segments))
    assert len({who for who, _, _ in estimated}) == 2
    assert speech_fixtures.der(truth, estimated) <= 0.15
    given = speech_fixtures.speaker_turns(labeler.label(path, segments, 2))
    assert speech_fixtures.der(truth, given) <= 0.15


def test_a_real_person_alone_on_a_phone_line_is_one_speaker(engine, labeler):
    """73 s of Asterisk's demo instructions read by one woman, 8 kHz: the line that pushed the phone call's two
    voices together must not pull one voice apart (its groups are 0.83 alike, the threshold 0.70)."""
    path = speech_fixtures.PHONE_MONOLOGUE
    labelled = labeler.label(path, words_of(engine, path))
    assert sum(len(s.words) for s in labelled) > 100
    assert {w.speaker for s in labelled for w in s.words} == {"Speaker 1"}


def test_speakers_are_counted_on_stretches_that_end_at_pauses_and_sentence_ends():
    def words(*spec):
        return tuple(Word(start, end, text, 0.9) for start, end, text in spec)

    segments = [
        Segment(0.0, 3.0, "", words((0.0, 0.5, " This"), (0.6, 1.0, " is"), (1.1, 2.0, " Diane."), (2.1, 2.6, " And"), (2.7, 3.0, " I'm"))),
        Segment(3.0, 6.0, "", words((3.1, 3.5, " Sheila,"), (4.2, 4.6, " from"), (4.7, 5.0, " Texas?"))),
    ]
    # "Diane." ends a sentence: a new stretch however short the pause; 0.7 s before "from" is a pause.
    assert sentence_spans(segments) == [(0.0, 2.0), (2.1, 3.5), (4.2, 5.0)]
    assert sentence_spans([Segment(0.0, 2.0, "Hi.", ()), Segment(2.2, 4.0, "Yes.", ())]) == [(0.0, 4.0)]


def test_bad_speaker_count_is_a_clear_message(labeler):
    with pytest.raises(InputError, match="between 1 and 8"):
        labeler.label("x.wav", [], 9)


def test_single_word_runs_are_merged_into_their_neighbours():
    assert _smooth([0, 0, 0, 1, 0, 0, 1, 1, 1]) == [0, 0, 0, 0, 0, 0, 1, 1, 1]
    assert _smooth([0, 0, 1, 1]) == [0, 0, 1, 1]
