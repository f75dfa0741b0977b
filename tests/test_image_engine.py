"""The diffusers image engine, run for real on CPU on the tiny random-weight pipeline."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from engines import tiny_pipeline
from engines.base import EngineError, ImageEngine, ImageParams, InputError
from engines.image_diffusers import TINY_DEMO_NAME, DiffusersImageEngine, load_tiny_demo
from engines.tiny_pipeline import build_tiny_pipeline, ensure_tiny_pipeline, is_demo_pipeline

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
    assert {"Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras", "DDIM", "UniPC"} <= set(engine.samplers)
    status = engine.status()
    assert (status.kind, status.backend, status.model, status.device, status.demo) == ("image", "diffusers", TINY_DEMO_NAME, "cpu", True)


def test_same_seed_same_pixels(engine):
    first, second = engine.generate(SMALL), engine.generate(SMALL)
    assert first.image.size == (64, 64)
    assert pixels(first) == pixels(second)
    assert first.params == SMALL and first.model == TINY_DEMO_NAME and first.seconds > 0


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
    engine.load(lambda fraction, text: messages.append(text))  # already resident: no second load
    assert engine.status().loaded and len(messages) == 1 and "Loading" in messages[0]
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

    monkeypatch.setattr(type(engine._pipe), "__call__", oom)
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
    def crash(folder):
        (folder / "unet").mkdir(parents=True)
        raise RuntimeError("killed mid-build")

    monkeypatch.setattr(tiny_pipeline, "_build_into", crash)
    with pytest.raises(RuntimeError):
        build_tiny_pipeline(tmp_path / "models" / "melange-tiny-sd")
    assert list((tmp_path / "models").iterdir()) == []
