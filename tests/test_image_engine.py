"""The diffusers image engine, run for real on CPU on the tiny random-weight pipeline."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from engines.image import tiny_pipeline
from engines.base import EngineError, ImageEngine, ImageParams, InputError
from engines.image.diffusion import TINY_DEMO_NAME, DiffusersImageEngine, load_tiny_demo
from engines.image.tiny_pipeline import build_tiny_pipeline, ensure_tiny_pipeline, is_demo_pipeline

SMALL = ImageParams(prompt="a red fox in the snow", width=64, height=64, steps=2, guidance=7.0, seed=1234)


def pixels(result) -> bytes:
    return result.image.tobytes()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def engine(data_dir) -> DiffusersImageEngine:
    engine = load_tiny_demo(data_dir, "cpu")
    engine.load()
    return engine


def test_is_an_image_engine(engine):
    assert isinstance(engine, ImageEngine)
    assert engine.kind == "image"
    assert {"Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "DDIM", "LCM", "UniPC"} <= set(engine.samplers)
    status = engine.status()
    assert (status.kind, status.backend, status.model, status.device, status.demo) == ("image", "diffusers", TINY_DEMO_NAME, "cpu", True)


def test_same_seed_same_pixels(engine):
    first, second = engine.generate(SMALL), engine.generate(SMALL)
    assert first.image.size == (64, 64)
    assert pixels(first) == pixels(second)
    assert first.params == replace(SMALL, model=TINY_DEMO_NAME) and first.model == TINY_DEMO_NAME and first.seconds > 0
    assert len(first.model_hash) == 10


def test_different_seed_different_pixels(engine):
    assert pixels(engine.generate(SMALL)) != pixels(engine.generate(replace(SMALL, seed=4321)))


def test_size_is_respected(engine):
    assert engine.generate(replace(SMALL, width=96, height=64)).image.size == (96, 64)


@pytest.mark.parametrize("sampler", DiffusersImageEngine.samplers)
def test_every_sampler_runs_and_reports_each_step(engine, sampler):
    steps = []
    result = engine.generate(replace(SMALL, sampler=sampler), on_step=lambda done, total: steps.append((done, total)))
    assert steps == [(1, 2), (2, 2)]
    assert result.params.sampler == sampler


def test_samplers_differ(engine):
    # Euler and Euler a share the first noise, so they differ only if the scheduler really changed.
    euler = engine.generate(replace(SMALL, sampler="Euler"))
    ancestral = engine.generate(replace(SMALL, sampler="Euler a"))
    assert pixels(euler) != pixels(ancestral)


def test_random_seed_is_reported_and_reproduces(engine):
    result = engine.generate(replace(SMALL, seed=-1))
    assert 0 <= result.params.seed < 2**32
    assert pixels(engine.generate(result.params)) == pixels(result)


def test_samplers_all_differ(engine):
    # Six steps: at two, DPM++ 2M and UniPC both take only first-order steps and agree.
    images = {sampler: pixels(engine.generate(replace(SMALL, steps=6, sampler=sampler))) for sampler in engine.samplers}
    assert len(set(images.values())) == len(images), "each sampler name must really change the scheduler"


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": "   "},
        {"width": 100},
        {"height": 32},
        {"steps": 0},
        {"guidance": -1.0},
        {"seed": -2},
        {"sampler": "Heun++ 9M"},
        {"width": 1032},  # above the SD 1.x-shaped demo's 1024 limit, below the generic 2048
        {"steps": 10**6},
        {"init_image": "x.png", "strength": 0.0},
        {"init_image": "x.png", "steps": 2, "strength": 0.3},  # no step left to run
        {"refiner": TINY_DEMO_NAME, "refiner_start": 1.0},
        {"refiner": TINY_DEMO_NAME, "steps": 2, "refiner_start": 0.8},
        {"model": "no-such-model"},
        {"model": "weights.ckpt"},
    ],
)
def test_bad_params_raise_input_error(engine, change):
    with pytest.raises(InputError):
        engine.generate(replace(SMALL, **change))


@pytest.mark.parametrize("name", ["model.ckpt", "model.pt", "model.bin"])
def test_pickled_checkpoints_are_refused(tmp_path, name):
    (tmp_path / name).write_bytes(b"not even a pickle")
    with pytest.raises(InputError, match="safetensors"):
        DiffusersImageEngine(tmp_path / name)


def test_unknown_file_type_is_an_input_error(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"x")
    with pytest.raises(InputError):
        DiffusersImageEngine(tmp_path / "model.onnx").load()


def test_folder_without_model_index_is_an_engine_error(tmp_path):
    (tmp_path / "unet").mkdir()
    engine = DiffusersImageEngine(tmp_path)
    with pytest.raises(EngineError, match="model_index.json"):
        engine.load()
    assert not engine.status().loaded


def test_corrupt_safetensors_is_an_engine_error(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(os.urandom(4096))
    with pytest.raises(EngineError, match="broken.safetensors"):
        DiffusersImageEngine(path).load()


def test_missing_model_is_an_engine_error(tmp_path):
    with pytest.raises(EngineError, match="not found"):
        DiffusersImageEngine(tmp_path / "nowhere" / "model.safetensors").load()


def test_load_is_lazy_and_unload_frees(data_dir):
    engine = DiffusersImageEngine(ensure_tiny_pipeline(data_dir))
    assert engine.status().demo  # told apart by its marker file
    assert not engine.status().loaded
    messages = []
    engine.load(lambda fraction, text: messages.append(text))
    assert engine.status().loaded and any("Loading" in m for m in messages)
    count = len(messages)
    engine.load(lambda fraction, text: messages.append(text))  # already resident: no second load
    assert len(messages) == count
    engine.unload()
    assert not engine.status().loaded
    engine.generate(SMALL)  # loads again on demand
    assert engine.status().loaded
    engine.unload()
    assert not engine.status().loaded


def test_concurrent_requests_match_serial_ones(engine):
    expected = pixels(engine.generate(SMALL))
    results = []
    threads = [threading.Thread(target=lambda: results.append(pixels(engine.generate(SMALL)))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected, expected]


def test_out_of_memory_becomes_engine_error(data_dir, monkeypatch):
    import torch

    engine = load_tiny_demo(data_dir, "cpu")
    engine.load()

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(type(engine._resident[TINY_DEMO_NAME].pipe), "__call__", oom)
    with pytest.raises(EngineError, match="smaller size"):
        engine.generate(SMALL)


def test_build_is_deterministic(data_dir, tmp_path):
    first = ensure_tiny_pipeline(data_dir)
    second = build_tiny_pipeline(tmp_path / "again")
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert any(f.suffix == ".safetensors" for f in files)
    for f in files:
        assert (first / f).read_bytes() == (second / f).read_bytes(), f
    assert sum((first / f).stat().st_size for f in files) < 10_000_000


def test_ensure_builds_once_and_build_refuses_to_overwrite(data_dir):
    path = ensure_tiny_pipeline(data_dir)
    assert path == data_dir / "models" / "melange-tiny-sd" and is_demo_pipeline(path)
    stamp = (path / "model_index.json").stat().st_mtime_ns
    assert ensure_tiny_pipeline(data_dir) == path
    assert (path / "model_index.json").stat().st_mtime_ns == stamp
    with pytest.raises(FileExistsError):
        build_tiny_pipeline(path)


def test_failed_build_leaves_nothing_behind(tmp_path, monkeypatch):
    def crash(folder, family):
        (folder / "unet").mkdir(parents=True)
        raise RuntimeError("killed mid-build")

    monkeypatch.setattr(tiny_pipeline, "_build_into", crash)
    with pytest.raises(RuntimeError):
        build_tiny_pipeline(tmp_path / "models" / "melange-tiny-sd")
    assert list((tmp_path / "models").iterdir()) == []


# ---------------------------------------------------------------- batches, previews, cancel


def test_batch_images_have_their_own_seeds_and_reproduce_alone(engine):
    import numpy as np

    batch = [replace(SMALL, seed=s) for s in (7, 8, 9)]
    results = engine.generate_batch(batch)
    assert [r.params.seed for r in results] == [7, 8, 9]
    assert len({pixels(r) for r in results}) == 3
    for r in results:
        alone = np.asarray(engine.generate(r.params).image, dtype=int)
        # Batched convolutions may round differently in the last bit: a level or two, never a new image.
        assert np.abs(alone - np.asarray(r.image, dtype=int)).max() <= 2


def test_a_batch_must_share_all_but_the_seed(engine):
    with pytest.raises(InputError, match="share"):
        engine.generate_batch([SMALL, replace(SMALL, steps=3)])
    with pytest.raises(InputError, match="Batch size"):
        engine.generate_batch([replace(SMALL, seed=s) for s in range(1000)])


def test_previews_come_every_step(engine):
    previews = []
    engine.generate(replace(SMALL, steps=3), on_preview=lambda draw: previews.append(draw()))
    assert len(previews) == 3
    assert all(p.mode == "RGB" and p.size == (8, 8) for p in previews), "latent-sized: the page scales it up"
    assert previews[0].tobytes() != previews[-1].tobytes(), "the preview follows the denoising"


def test_cancel_stops_at_the_next_step(engine):
    from engines.base import Cancelled

    cancel = threading.Event()
    seen = []

    def on_step(done, total):
        seen.append(done)
        if done == 2:
            cancel.set()

    with pytest.raises(Cancelled, match="after step 2 of 50"):
        engine.generate(replace(SMALL, steps=50), on_step=on_step, cancel=cancel)
    assert seen == [1, 2]
    assert pixels(engine.generate(SMALL)) == pixels(engine.generate(SMALL)), "the engine serves again after a cancel"


# ---------------------------------------------------------------- img2img and refiner


@pytest.fixture(scope="module")
def start_image(engine, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("init") / "start.png"
    engine.generate(replace(SMALL, width=96, height=64)).image.save(path)  # another size: it gets resized
    return str(path)


def test_img2img_runs_strength_steps_and_depends_on_the_image(engine, start_image, tmp_path):
    steps = []
    params = replace(SMALL, steps=10, init_image=start_image, strength=0.5)
    result = engine.generate(params, on_step=lambda done, total: steps.append((done, total)))
    assert steps[-1] == (5, 5) and len(steps) == 5, "strength 0.5 of 10 steps runs 5"
    assert result.image.size == (64, 64)
    assert pixels(engine.generate(params)) == pixels(result)
    other = tmp_path / "other.png"
    from PIL import Image

    Image.new("RGB", (64, 64), (250, 10, 10)).save(other)
    assert pixels(engine.generate(replace(params, init_image=str(other)))) != pixels(result)
    assert pixels(engine.generate(replace(params, strength=0.9))) != pixels(result)


@pytest.mark.parametrize("content", [b"this is not an image", b""])
def test_a_file_that_is_not_an_image_is_refused(engine, tmp_path, content):
    bogus = tmp_path / "photo.png"
    bogus.write_bytes(content)
    with pytest.raises(InputError, match="photo.png"):
        engine.generate(replace(SMALL, init_image=str(bogus)))


def test_sd_refiner_is_an_img2img_second_pass(engine):
    steps = []
    params = replace(SMALL, steps=10, refiner=TINY_DEMO_NAME, refiner_start=0.7)
    refined = engine.generate(params, on_step=lambda done, total: steps.append((done, total)))
    # 10 base steps, then the refiner redraws the last 30%: int(10 * 0.3) = 3 steps.
    assert steps[-1] == (13, 13) and [d for d, _ in steps] == list(range(1, 14))
    plain = engine.generate(replace(params, refiner=""))
    assert pixels(refined) != pixels(plain)
    assert pixels(engine.generate(params)) == pixels(refined)
    assert refined.refiner_hash == refined.model_hash  # the demo refines itself here


@pytest.fixture(scope="module")
def sdxl_engine(data_dir) -> DiffusersImageEngine:
    ensure_tiny_pipeline(data_dir, "sdxl")
    return load_tiny_demo(data_dir, "cpu")


def test_sdxl_refiner_takes_over_the_latents(sdxl_engine, monkeypatch):
    engine = sdxl_engine
    assert "melange-tiny-sdxl" in engine.models()
    calls = []
    params = replace(SMALL, steps=10, model="melange-tiny-sdxl", refiner="melange-tiny-sdxl", refiner_start=0.7)
    engine.prepare(params)
    pipe = engine._resident["melange-tiny-sdxl"].pipe
    img2img_cls = type(engine.img2img(engine._resident["melange-tiny-sdxl"]))
    for cls in (type(pipe), img2img_cls):
        original = cls.__call__

        def spy(self, *args, _original=original, **kwargs):
            calls.append((type(self).__name__, kwargs.get("denoising_end"), kwargs.get("denoising_start"), kwargs.get("output_type")))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__call__", spy)
    steps = []
    result = engine.generate(params, on_step=lambda done, total: steps.append((done, total)))
    assert calls == [
        ("StableDiffusionXLPipeline", 0.7, None, "latent"),
        ("StableDiffusionXLImg2ImgPipeline", None, 0.7, None),
    ]
    assert steps[-1] == (10, 10), "base and refiner share the 10 steps"
    assert result.model == "melange-tiny-sdxl" and result.image.size == (64, 64)
    monkeypatch.undo()
    assert pixels(engine.generate(params)) == pixels(result)
    # The refiner here is the base model itself, and Euler is deterministic: a seamless latent hand-off
    # continues the very same trajectory, so the image is the base model's own, wherever the switch is.
    import numpy as np

    plain = np.asarray(engine.generate(replace(params, refiner="")).image, dtype=int)
    assert np.abs(plain - np.asarray(result.image, dtype=int)).max() <= 2
    # An ancestral sampler adds fresh noise each step, so the switch point shows.
    ancestral = replace(params, sampler="Euler a")
    assert pixels(engine.generate(ancestral)) != pixels(engine.generate(replace(ancestral, refiner="")))


def test_sdxl_base_with_sd_refiner_uses_a_second_pass(sdxl_engine):
    params = replace(SMALL, steps=10, model="melange-tiny-sdxl", refiner=TINY_DEMO_NAME, refiner_start=0.6)
    steps = []
    result = sdxl_engine.generate(params, on_step=lambda done, total: steps.append((done, total)))
    assert steps[-1] == (14, 14)  # 10 + int(10 * 0.4)
    assert result.refiner_hash and result.refiner_hash != result.model_hash


def test_speed_options_keep_the_image(data_dir):
    import numpy as np

    from engines.image.diffusion import SpeedOptions

    plain = load_tiny_demo(data_dir, "cpu").generate(SMALL)
    fast = load_tiny_demo(data_dir, "cpu", speed=SpeedOptions(channels_last=True, fuse_qkv=True)).generate(SMALL)
    assert np.abs(np.asarray(plain.image, dtype=int) - np.asarray(fast.image, dtype=int)).max() <= 3
