"""The Transcribe panel in a real browser: exports after an upload, and live captions from Chromium's
fake microphone (a project-made wav played as the microphone), then the final transcript; a minute of
speech recorded exactly."""

from __future__ import annotations

import base64
import io
import time
import wave
from collections import Counter

import numpy as np
import pytest
import srt
import webvtt
from playwright.sync_api import expect

from tests import fixtures, speech_fixtures
from tests.speech_fixtures import SAMPLE_RATE
from tests.browser.conftest import launch_chromium, screenshot_page

# Keeps every chunk the recorder sends (its 'live-audio-sent' events), to compare with the saved file.
KEEP_SENT_AUDIO = """
window.__sent = [];
document.addEventListener('live-audio-sent', (e) => {
  const bytes = new Uint8Array(e.detail.pcm.buffer); let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  window.__sent.push([e.detail.seq, e.detail.rate, btoa(s)]);
}, true);
"""

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def microphone_wav(tmp_path_factory):
    """The speech fixture with 1 s of silence before and 3 s after, as the fake microphone plays it."""
    directory = tmp_path_factory.mktemp("mic")
    speech = fixtures.speech_wav(directory, name="speech_src.wav")
    out = directory / "microphone.wav"
    fixtures._run("sox", str(speech), str(out), "pad", "1.0", "3.0")
    return out


def microphone_page(playwright, wav, request):
    """A page whose microphone plays ``wav`` once (then silence)."""
    browser = launch_chromium(
        playwright,
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",
    )
    try:
        with screenshot_page(browser, request.node.name, permissions=["microphone"]) as page:
            page.add_init_script(KEEP_SENT_AUDIO)
            yield page
    finally:
        browser.close()


@pytest.fixture
def mic_page(playwright, microphone_wav, request):
    yield from microphone_page(playwright, microphone_wav, request)


def start_recording(page, url: str) -> None:
    page.goto(url)
    page.get_by_role("tab", name="Transcribe").click()
    page.get_by_role("tab", name="Live microphone").click()
    page.locator("#live-captions button", has_text="Record").click()


def test_live_captions_then_the_final_transcript(real_app, mic_page):
    page = mic_page
    start_recording(page, real_app.url)
    seen: list[str] = []  # the final (black) text each time it changed
    shown: list[str] = []  # all the words on the page, grey ones too, each time they changed
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        text = page.locator("#live-captions .confirmed").inner_text() if page.locator("#live-captions .confirmed").count() else ""
        words = page.locator("#live-captions .caption-area").inner_text()
        if text and (not seen or text != seen[-1]):
            seen.append(text)
        if words.strip() and (not shown or words != shown[-1]):
            shown.append(words)
        if fixtures.word_error_rate(fixtures.SPEECH_TEXT, text) <= 0.25:
            break
        time.sleep(0.05)
    assert seen, "no live captions appeared"
    # Words become final a phrase at a time (a beam decode at a pause or every few seconds), so the black
    # text may grow in two steps for these two sentences; the words on the page grow as they are spoken.
    assert len(shown) >= 3, f"captions should grow while the person speaks; saw {shown}"
    for a, b in zip(seen, seen[1:]):
        assert b.startswith(a), "confirmed text never changes"
    live = seen[-1]
    # Live text is decoded from short windows of real-time capture on a busy 2-core machine; the
    # final pass below is held to the file bound. (The engine test holds live text to 0.15 offline.)
    assert fixtures.word_error_rate(fixtures.SPEECH_TEXT, live) <= 0.4, live
    page.locator("#live-captions button", has_text="Stop").click()
    expect(page.locator("#transcribe-info")).to_contain_text("done in", timeout=120_000)
    final = page.locator("#transcript textarea").input_value()
    # The recording holds every sample the page sent, so the one-pass transcript meets the file bound.
    assert fixtures.word_error_rate(fixtures.SPEECH_TEXT, final) <= 0.2, (final, live)
    expect(page.locator("#live-captions")).to_contain_text(final[:20])
    assert "[00:0" in page.locator("#transcript-timed textarea").input_value()
    expect(page.locator("#transcript-files")).to_contain_text(".srt")


def test_upload_gives_parseable_srt_and_vtt_exports(real_app, page, tmp_path):
    wav = fixtures.speech_wav(tmp_path)
    page.goto(real_app.url)
    page.get_by_role("tab", name="Transcribe").click()
    page.locator("#transcribe-audio input[type=file]").set_input_files(str(wav))
    page.locator("#transcribe-run").click()
    expect(page.locator("#transcribe-info")).to_contain_text("done in", timeout=120_000)
    links = page.locator("#transcript-files a[href]")
    expect(links).to_have_count(4)
    hrefs = {links.nth(i).get_attribute("href").rsplit(".", 1)[-1]: links.nth(i).get_attribute("href") for i in range(4)}
    assert set(hrefs) == {"txt", "srt", "vtt", "json"}
    srt_text = page.request.get(hrefs["srt"]).text()
    cues = list(srt.parse(srt_text))
    assert fixtures.word_error_rate(fixtures.SPEECH_TEXT, " ".join(c.content for c in cues)) <= 0.25
    vtt = list(webvtt.from_buffer(io.StringIO(page.request.get(hrefs["vtt"]).text())))
    assert [c.text for c in vtt] == [c.content for c in cues]


def test_a_denied_microphone_gets_a_clear_message_and_the_app_keeps_serving(real_app, playwright):
    # A fake device but no fake consent: the browser denies the page the microphone.
    browser = launch_chromium(playwright, "--use-fake-device-for-media-stream")
    try:
        page = browser.new_context().new_page()
        page.goto(real_app.url)
        page.get_by_role("tab", name="Transcribe").click()
        page.get_by_role("tab", name="Live microphone").click()
        page.locator("#live-captions button", has_text="Record").click()
        expect(page.locator(".toast-body").first).to_contain_text("did not allow the microphone")
        assert real_app.health()["app"] == "melange"
    finally:
        browser.close()


@pytest.fixture(scope="module")
def minute_of_speech(tmp_path_factory):
    """A minute of continuous speech, no sentence said twice (flite's awb voice, 0.3 s between sentences),
    with 1 s of silence before and 2 s after, as the fake microphone plays it."""
    directory = tmp_path_factory.mktemp("minute")
    speech, text = speech_fixtures.monologue_wav(directory, "flite-awb", 60.0)
    return speech_fixtures.silence_then(1.0, speech, 2.0, "microphone.wav"), text


@pytest.fixture
def minute_page(playwright, minute_of_speech, request):
    yield from microphone_page(playwright, minute_of_speech[0], request)


def test_a_minute_of_speech_is_saved_exactly_as_the_microphone_sent_it(real_app, minute_page, minute_of_speech, tmp_path):
    page = minute_page
    source, text = minute_of_speech
    start_recording(page, real_app.url)
    # The page's clock counts the seconds it has sent; the fake microphone plays the file in real time.
    played = fixtures.wav_duration(source)
    page.wait_for_function(
        f"parseFloat(document.querySelector('#live-captions .mic-clock').textContent) >= {played}", timeout=180_000
    )
    page.locator("#live-captions button", has_text="Stop").click()
    expect(page.locator("#transcribe-info")).to_contain_text("done in", timeout=600_000)  # a busy machine is slow
    href = page.locator("#live-recording a[href]").first.get_attribute("href")
    saved = tmp_path / "saved.wav"
    saved.write_bytes(page.request.get(href).body())

    # 1. Byte for byte what the page sent, in order, nothing missing or doubled.
    chunks = page.evaluate("window.__sent")
    assert [seq for seq, _, _ in chunks] == list(range(len(chunks)))
    assert {rate for _, rate, _ in chunks} == {16000}
    sent = np.frombuffer(b"".join(base64.b64decode(pcm) for _, _, pcm in chunks), np.int16)
    with wave.open(str(saved)) as w:
        kept = np.frombuffer(w.readframes(w.getnframes()), np.int16)
    assert len(kept) == len(sent) and np.array_equal(kept, sent), (len(kept), len(sent))

    # 2. Aligned second by second against the file the microphone played: one offset throughout.
    offsets = speech_fixtures.alignment_offsets(saved, source)
    speech_seconds = fixtures.wav_duration(source) - 3.0
    assert len(offsets) >= 0.9 * speech_seconds, f"{len(offsets)} seconds with speech in {speech_seconds:.0f}"
    # Part 1 proved the page's chunks reach the file exactly. Between the fake microphone and the page, Web
    # Audio itself may insert or drop a whole 10 ms capture buffer when Chromium's audio thread runs late (a
    # busy machine): the offset then moves by a multiple of 160 samples and stays. Anything else is drift:
    # a piece of the recording that matches no part of the source, or an offset moved by a part of a buffer.
    buffer = SAMPLE_RATE // 100
    offset, _ = Counter(o for _, o, _ in offsets).most_common(1)[0]
    moved = [o - offset for _, o, _ in offsets]
    torn = [(round(t), d) for (t, _, q), d in zip(offsets, moved) if q >= 0.9 and abs(d - round(d / buffer) * buffer) > 1]
    jumps = [b - a for a, b in zip(moved, moved[1:]) if abs(b - a) > 1]
    # The piece where the offset moves holds the glitch (measured: 234 ms of zeros where Chromium, starved of
    # CPU, dropped 254 ms of capture): it matches the source only in part. Pieces on both sides of a jump may.
    beside_jump = {j for i, (a, b) in enumerate(zip(moved, moved[1:])) if abs(b - a) > 1 for j in (i, i + 1)}
    # The last piece has no later one to show whether the offset moved there: a glitch in the recording's last
    # second (Chromium starved as Stop is pressed) cannot be told from anything else, so it is judged as one.
    beside_jump.add(len(offsets) - 1)
    unmatched = [(round(t), round(q, 2)) for i, (t, _, q) in enumerate(offsets) if q < 0.9 and i not in beside_jump]
    assert not torn, f"(second, samples off) not a whole 10 ms buffer from offset {offset}: {torn}"
    assert not unmatched, f"(second, match) where the recording is not the source: {unmatched}"
    # How much Chromium drops (or fills with zeros) depends on how starved it is, not on the recorder: measured
    # from 0.02 s to 0.75 s a minute on CI runs of this VM, so no bound on it beyond the 90% of seconds above.
    print(f"Chromium's capture moved by {jumps} samples")

    final = page.locator("#transcript textarea").input_value()
    assert speech_fixtures.wer(text, final) <= 0.2, final
