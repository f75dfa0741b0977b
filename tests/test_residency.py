"""The memory manager: accounting, eviction order, idle unload (fake engines that report sizes), and
real engines that load and unload twenty times without their memory creeping up."""

from __future__ import annotations

import gc

import pytest

from engines.base import ChatMessage, ChatParams
from engines.fake import FakeChatEngine, FakeImageEngine, FakeSpeechEngine
from engines.residency import ResidencyManager, parse_size, process_rss

GB = 10**9


class Meter:
    """Device memory as the fakes change it: each engine's load adds its size."""

    def __init__(self) -> None:
        self.used = 0


def sized(engine, meter: Meter, size: int):
    load, unload = engine.load, engine.unload

    def sized_load(progress=None):
        if not engine.loaded:
            meter.used += size
        load(progress)

    def sized_unload():
        if engine.loaded:
            meter.used -= size
        unload()

    engine.load, engine.unload = sized_load, sized_unload
    return engine


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup():
    meter, clock = Meter(), Clock()
    manager = ResidencyManager("cuda", budget=10 * GB, measure=lambda: meter.used, total=12 * GB, clock=clock, idle_seconds=60)
    chat = manager.register(sized(FakeChatEngine(), meter, 4 * GB))
    image = manager.register(sized(FakeImageEngine(), meter, 5 * GB))
    speech = manager.register(sized(FakeSpeechEngine(), meter, 3 * GB))
    return manager, clock, meter, chat, image, speech


def test_loads_are_measured_and_accounted(setup):
    manager, clock, meter, chat, image, speech = setup
    assert chat.load() == []
    clock.now = 1
    assert image.load() == []
    status = manager.status()
    assert status.used == 9 * GB == meter.used
    assert {r.kind: r.size for r in status.residents} == {"chat": 4 * GB, "image": 5 * GB}
    assert status.budget == 10 * GB and status.total == 12 * GB


def test_a_model_that_does_not_fit_evicts_the_lowest_priority_first(setup):
    manager, clock, meter, chat, image, speech = setup
    chat.load()
    clock.now = 1
    image.load()
    clock.now = 2
    # speech (3 GB) needs room: chat has the lowest priority, so chat goes even though image is older.
    speech.load()  # size unknown before the first load: it is measured, and the next load uses it
    speech.unload()
    chat.load()
    clock.now = 3
    evicted = speech.load()
    assert evicted == ["fake-echo"]
    assert {r.kind for r in manager.status().residents} == {"image", "speech"}
    assert meter.used <= manager.budget


def test_least_recently_used_goes_first_among_equals():
    meter, clock = Meter(), Clock()
    manager = ResidencyManager("cpu", budget=8 * GB, measure=lambda: meter.used, clock=clock, priority={"chat": 5, "image": 5, "speech": 5})
    a = manager.register(sized(FakeChatEngine(), meter, 4 * GB))
    b = manager.register(sized(FakeImageEngine(), meter, 4 * GB))
    c = manager.register(sized(FakeSpeechEngine(), meter, 4 * GB))
    for engine in (a, b, c):
        engine.load()
        engine.unload()
    a.load()
    clock.now = 1
    b.load()
    clock.now = 2
    a.stream([ChatMessage("user", "hi")], ChatParams())  # a is used again: b is now the least recent
    clock.now = 3
    assert c.load() == ["fake-colour"]


def test_work_calls_reload_an_evicted_model(setup):
    manager, clock, meter, chat, image, speech = setup
    chat.load()
    manager.release(chat.engine)
    assert not chat.status().loaded
    reply = "".join(d.text for d in chat.stream([ChatMessage("user", "back")], ChatParams()))
    assert reply == "You said: back" and chat.status().loaded


def test_idle_models_are_unloaded(setup):
    manager, clock, meter, chat, image, speech = setup
    chat.load()
    clock.now = 30
    image.load()
    clock.now = 70
    assert manager.unload_idle() == ["fake-echo"]
    assert [r.kind for r in manager.status().residents] == ["image"]
    clock.now = 200
    assert manager.unload_idle() == ["fake-colour"]
    assert meter.used == 0


def test_a_managed_engine_keeps_the_engine_contract(setup):
    from engines.base import ChatEngine, ImageEngine, SpeechEngine

    manager, clock, meter, chat, image, speech = setup
    assert isinstance(chat, ChatEngine) and isinstance(image, ImageEngine) and isinstance(speech, SpeechEngine)
    assert chat.kind == "chat" and image.samplers == FakeImageEngine.samplers


def test_cpu_manager_uses_system_memory():
    manager = ResidencyManager.for_device("cpu")
    assert 0 < manager.budget < manager.total


@pytest.mark.parametrize("text, expected", [("8GB", 8 * GB), ("512MiB", 512 * 2**20), ("1.5 GiB", int(1.5 * 2**30)), ("1000", 1000)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1GB", "8XB"])
def test_parse_size_refuses_nonsense(text):
    with pytest.raises(ValueError):
        parse_size(text)


def rss_after_cycles(engine, cycles: int, use) -> list[int]:
    readings = []
    for _ in range(cycles):
        engine.load()
        use(engine)
        engine.unload()
        gc.collect()
        readings.append(process_rss())
    return readings


def assert_flat(readings: list[int], bound: int) -> None:
    # Allocators keep some memory after the first loads; from the fifth cycle on it must stay flat.
    growth = max(readings[4:]) - readings[4]
    assert growth < bound, f"RSS grew {growth / 2**20:.0f} MiB over {len(readings) - 4} load/unload cycles"


def test_real_chat_engine_does_not_leak_over_20_reloads():
    from engines import embedded
    from engines.chat_llama import LlamaChatEngine

    engine = LlamaChatEngine(embedded.smollm2_gguf(), "cpu", n_ctx=512, threads=2)
    readings = rss_after_cycles(engine, 20, lambda e: list(e.stream([ChatMessage("user", "Hi")], ChatParams(max_tokens=4, temperature=0))))
    assert_flat(readings, 40 * 2**20)


def test_real_speech_engine_does_not_leak_over_20_reloads(tmp_path):
    from engines import embedded
    from engines.base import TranscribeOptions
    from engines.speech_whisper import WhisperSpeechEngine
    from tests import fixtures

    wav = fixtures.silence_wav(tmp_path, 1.0)
    engine = WhisperSpeechEngine(embedded.whisper_tiny_en(), "cpu", cpu_threads=2)

    def use(e):
        info, segments = e.transcribe(str(wav), TranscribeOptions(beam_size=1, vad_filter=False))
        list(segments)

    assert_flat(rss_after_cycles(engine, 20, use), 40 * 2**20)


def test_real_image_engine_does_not_leak_over_20_reloads(tmp_path):
    from engines.base import ImageParams
    from engines.image_diffusers import load_tiny_demo

    engine = load_tiny_demo(tmp_path, "cpu")
    readings = rss_after_cycles(engine, 20, lambda e: e.generate(ImageParams("a cat", width=64, height=64, steps=1, seed=1)))
    assert_flat(readings, 60 * 2**20)
