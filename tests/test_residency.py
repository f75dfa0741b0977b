"""The memory manager: accounting, eviction order, idle unload (fake engines that report sizes), and
real engines that load and unload twenty times without their memory creeping up."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest

from engines.base import ChatMessage, ChatParams, EngineError, ImageParams, TranscribeOptions
from engines.fake import FakeChatEngine, FakeImageEngine, FakeSpeechEngine
from engines.residency import ResidencyManager, parse_size, process_rss, trim_heap

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


def resident_now() -> int:
    """The process's resident size once what is free has gone back to the system.

    Without the trim, glibc keeps freed blocks in per-thread arenas and the size jumps by an arena's worth
    (~20 MiB) whenever a thread starts allocating in a new one, leak or not: the reading would say more about
    the allocator's history (and the tests that ran before in this process) than about the engine."""
    gc.collect()
    trim_heap(force=True)
    return process_rss()


def alive(model_class: type) -> int:
    """How many objects of ``model_class`` the process still holds (after a collection)."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if issubclass(type(o), model_class))


def assert_no_leak(engine, use, model_class: type, cycles: int = 20) -> None:
    """Load, use and unload ``engine`` ``cycles`` times; neither its model object nor its memory may pile up.

    Two checks, because each misses what the other sees. A stray reference keeps the model object alive: counted
    exactly, before and after. Memory the native library never frees shows only in the resident size, which also
    moves by tens of MiB on its own (even after the trim, native allocators keep or return pools as they please:
    a flat run of 80 cycles of Whisper read from -18 to +12 MiB, and a CI run stepped up 48 MiB once), so the size
    is judged by its trend, not its highest reading: the Theil–Sen slope over the cycles (a median of pairwise
    slopes, which one step cannot drag far) must stay under half of what one loaded model adds, measured here in
    the same run. A model leaked per cycle would make the slope its whole size."""
    from scipy.stats import theilslopes

    before = alive(model_class)
    base = resident_now()
    engine.load()
    use(engine)
    assert alive(model_class) == before + 1, "the check cannot see this engine's model"
    model_size = resident_now() - base
    engine.unload()
    readings = []
    for _ in range(cycles):
        engine.load()
        use(engine)
        engine.unload()
        readings.append(resident_now())
    assert alive(model_class) == before, f"{alive(model_class) - before} {model_class.__name__} kept after unload"
    # Caches fill during the first loads: the trend is read from the fifth cycle on.
    slope = theilslopes(readings[4:]).slope
    assert slope < model_size / 2, (
        f"resident size grows {slope / 2**20:.1f} MiB per load/unload cycle; one model is {model_size / 2**20:.1f} MiB "
        f"(readings in MiB from the fifth: {[round((r - readings[4]) / 2**20) for r in readings[4:]]})"
    )


def test_real_chat_engine_does_not_leak_over_20_reloads():
    from llama_cpp import Llama

    from engines import embedded
    from engines.chat.llama import LlamaChatEngine

    engine = LlamaChatEngine(embedded.smollm2_gguf(), "cpu", n_ctx=512, threads=2)
    assert_no_leak(engine, lambda e: list(e.stream([ChatMessage("user", "Hi")], ChatParams(max_tokens=4, temperature=0))), Llama)


def test_real_speech_engine_does_not_leak_over_20_reloads(tmp_path):
    from faster_whisper import WhisperModel

    from engines import embedded
    from engines.base import TranscribeOptions
    from engines.speech.whisper import WhisperSpeechEngine
    from tests import fixtures

    wav = fixtures.silence_wav(tmp_path, 1.0)
    engine = WhisperSpeechEngine(embedded.whisper_tiny_en(), "cpu", cpu_threads=2)

    def use(e):
        info, segments = e.transcribe(str(wav), TranscribeOptions(beam_size=1, vad_filter=False))
        list(segments)

    assert_no_leak(engine, use, WhisperModel)


def test_real_image_engine_does_not_leak_over_20_reloads(tmp_path):
    from diffusers import DiffusionPipeline

    from engines.base import ImageParams
    from engines.image.diffusion import load_tiny_demo

    engine = load_tiny_demo(tmp_path, "cpu")
    assert_no_leak(engine, lambda e: e.generate(ImageParams("a cat", width=64, height=64, steps=1, seed=1)), DiffusionPipeline)


# ---------------------------------------------------------------- every load path, loads that block, out of memory


class BlockingChat(FakeChatEngine):
    """A chat model whose load takes as long as the test wants: it waits for ``release``."""

    def __init__(self) -> None:
        super().__init__()
        self.started, self.release = threading.Event(), threading.Event()

    def load(self, progress=None) -> None:
        if not self.loaded:
            self.started.set()
            assert self.release.wait(60), "the test never let the load finish"
        super().load(progress)


def answers_within(seconds: float, call):
    """``call()``'s result if it returns within ``seconds``; a call that blocks fails the test instead of hanging it."""
    result: list = []
    worker = threading.Thread(target=lambda: result.append(call()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert result, f"no answer within {seconds} s: the call waited for the load"
    return result[0]


def test_health_and_the_status_strip_answer_while_a_model_loads(tmp_path):
    import app
    from fastapi.testclient import TestClient
    from settings import Settings
    from ui.status import memory_line

    settings = Settings(data_dir=tmp_path, engines="fake")
    slow = BlockingChat()
    engines = app.manage(app.Engines(slow, FakeImageEngine(), FakeSpeechEngine()), settings)
    client = TestClient(app.create_app(settings, engines), base_url="http://127.0.0.1:7860")
    engines.image.load()
    loading = threading.Thread(target=engines.chat.load, daemon=True)
    loading.start()
    assert slow.started.wait(30)
    try:
        body = answers_within(10, lambda: client.get("/health").json())
        assert body["engines"]["chat"]["loaded"] is False and body["engines"]["image"]["loaded"] is True
        assert "fake-colour" in answers_within(10, lambda: memory_line(engines.managers))
        # Another engine's work does not wait for the load either.
        assert answers_within(10, lambda: engines.image.generate(ImageParams("a boat", width=64, height=64, steps=2, seed=1))).params.seed == 1
    finally:
        slow.release.set()
        loading.join(30)
    assert [r["kind"] for r in client.get("/health").json()["memory"]["cpu"]["residents"]] == ["image", "chat"]


class TwoModels(FakeImageEngine):
    """An image engine that opens a second model when a request names it, as diffusers does, and counts loads."""

    def __init__(self, meter: Meter) -> None:
        super().__init__()
        self.meter, self.loads, self.open = meter, 0, set()

    def load(self, progress=None) -> None:
        self._open(self._models[0])
        super().load(progress)

    def _open(self, name: str) -> None:
        if name not in self.open:
            self.open.add(name)
            self.loads += 1
            self.meter.used += 2 * GB

    def prepare(self, params, progress=None) -> None:
        super().prepare(params, progress)
        self._open(params.model or self._models[0])

    def unload(self) -> None:
        self.meter.used -= 2 * GB * len(self.open)
        self.open.clear()
        super().unload()


def test_switch_prepare_generate_and_live_loads_are_all_booked(setup):
    manager, clock, meter, chat, image, speech = setup
    sizes = lambda: {r.kind: r.size for r in manager.status().residents}  # noqa: E731
    # A switch that loads at once (speech) is measured; the old model went first.
    speech.load()
    speech.switch("/models/other-whisper", "other")
    assert sizes() == {"speech": 3 * GB} and meter.used == 3 * GB
    # A lazy switch (the fake chat) leaves nothing resident until its next request, which is booked.
    chat.load()
    chat.switch("/models/other.gguf", "other")
    assert "chat" not in sizes()
    list(chat.stream([ChatMessage("user", "hi")], ChatParams()))
    assert sizes()["chat"] == 4 * GB
    # Live captions reload an evicted model through the manager.
    manager.release(speech.engine)
    speech.transcribe_samples(np.zeros(16000, np.float32), TranscribeOptions())
    assert sizes()["speech"] == 3 * GB and meter.used == 7 * GB


def test_a_second_model_named_by_an_image_request_is_booked():
    meter = Meter()
    manager = ResidencyManager("cpu", budget=100 * GB, measure=lambda: meter.used)
    image = manager.register(TwoModels(meter))
    image.prepare(ImageParams("a", model="fake-colour"))
    assert manager.status().used == 2 * GB
    image.prepare(ImageParams("a", model="fake-refiner"))  # the engine opens a second model inside the call
    assert manager.status().used == 4 * GB == meter.used
    image.generate(ImageParams("a", width=64, height=64, steps=1, seed=1, model="fake-refiner"))
    assert manager.status().used == 4 * GB, "a generation that loads nothing changes nothing"
    image.unload()
    assert manager.status().used == 0 == meter.used
    image.generate(ImageParams("a", width=64, height=64, steps=1, seed=1, model="fake-refiner"))  # no prepare first
    assert manager.status().used == 4 * GB == meter.used


class OutOfMemoryChat(FakeChatEngine):
    """Runs out of memory halfway through a load or a reply, once each, after taking some memory."""

    def __init__(self, meter: Meter, error: type[BaseException] = MemoryError) -> None:
        super().__init__()
        self.meter, self.error = meter, error
        self.fail_load = self.fail_reply = True

    def load(self, progress=None) -> None:
        if not self.loaded:
            self.meter.used += 4 * GB
            if self.fail_load:
                self.fail_load = False
                raise self.error("could not allocate 4294967296 bytes")
        super().load(progress)

    def unload(self) -> None:
        self.meter.used = 0
        super().unload()

    def stream(self, messages, params):
        for i, delta in enumerate(super().stream(messages, params)):
            if i == 2 and self.fail_reply:
                self.fail_reply = False
                raise self.error("could not allocate the KV cache")
            yield delta


@pytest.mark.parametrize("error", ["MemoryError", "torch.OutOfMemoryError"])
def test_out_of_memory_is_a_clear_error_frees_the_memory_and_the_engine_works_after(error):
    import torch

    meter = Meter()
    manager = ResidencyManager("cpu", budget=100 * GB, measure=lambda: meter.used)
    chat = manager.register(OutOfMemoryChat(meter, MemoryError if error == "MemoryError" else torch.OutOfMemoryError))
    with pytest.raises(EngineError, match="Out of memory while loading fake-echo"):
        chat.load()
    assert meter.used == 0 and not manager.status().residents
    reply = chat.stream([ChatMessage("user", "one two three four")], ChatParams())
    assert [next(reply).text, next(reply).text] == ["You", " said:"]
    with pytest.raises(EngineError, match="Out of memory while fake-echo was working"):
        next(reply)
    assert meter.used == 0 and not manager.status().residents and not chat.status().loaded
    assert "".join(d.text for d in chat.stream([ChatMessage("user", "again")], ChatParams())) == "You said: again"
    assert [r.kind for r in manager.status().residents] == ["chat"]


def test_the_real_engines_recover_from_out_of_memory(tmp_path, monkeypatch):
    """Injected where the real engines allocate: llama.cpp's load, and a diffusers step (torch's own error)."""
    import torch

    from engines import embedded
    from engines.chat.llama import LlamaChatEngine
    from engines.image.diffusion import load_tiny_demo

    manager = ResidencyManager.for_device("cpu")
    chat = manager.register(LlamaChatEngine(embedded.smollm2_gguf(), "cpu", n_ctx=512, threads=1))
    opened = LlamaChatEngine._open

    def out_of_memory(self):
        opened(self)  # the model is in memory, and then the context's buffers do not fit
        raise MemoryError("llama.cpp could not allocate the compute buffer")

    monkeypatch.setattr(LlamaChatEngine, "_open", out_of_memory)
    with pytest.raises(EngineError, match="Out of memory while loading"):
        chat.load()
    assert not chat.status().loaded
    monkeypatch.setattr(LlamaChatEngine, "_open", opened)
    reply = "".join(d.text for d in chat.stream([ChatMessage("user", "Say hi.")], ChatParams(temperature=0, max_tokens=8)))
    assert reply.strip()
    chat.unload()

    image = manager.register(load_tiny_demo(tmp_path, "cpu"))
    params = ImageParams("a lighthouse", width=64, height=64, steps=2, seed=3)
    expected = image.generate(params).image.tobytes()
    from engines.image import diffusion as image_diffusers

    def step_out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    with monkeypatch.context() as patched:
        patched.setattr(image_diffusers, "run", step_out_of_memory)  # the denoising loop the engine calls
        with pytest.raises(EngineError, match="Out of memory at 64×64"):
            image.generate(params)
    assert image.generate(params).image.tobytes() == expected, "the engine works as before"
    image.unload()
