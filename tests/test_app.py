"""The app as a whole: flags, presets validated at start-up, /health, the factory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import app
from settings import Settings, parse_settings
from ui.presets import PRESETS_DIR, PresetError, load_presets

ROOT = Path(__file__).resolve().parent.parent
LOCAL = "http://127.0.0.1:7860"


def run_app(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "app.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_help_documents_every_flag():
    result = run_app("--help")
    assert result.returncode == 0
    for flag in ("--host", "--port", "--data-dir", "--models-dir", "--engines", "--device", "--lan", "--no-auth", "--http",
                 "--ssl-certfile", "--ssl-keyfile", "--admin-password-file", "--allowed-hosts", "--queue-size"):  # fmt: skip
        assert flag in result.stdout
    assert "--admin-password " not in result.stdout, "the password itself comes from the environment only"
    assert "{real,fake}" in result.stdout and "{auto,cpu,cuda}" in result.stdout


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::"])
def test_listening_beyond_loopback_without_lan_is_refused(host, tmp_path):
    result = run_app("--host", host, "--engines", "fake", "--data-dir", str(tmp_path))
    assert result.returncode != 0
    assert "Use --lan instead" in result.stderr
    assert not (tmp_path / "melange.db").exists(), "refused before anything was made"


@pytest.mark.parametrize("flag", ["--no-auth", "--http"])
def test_lan_only_flags_are_refused_without_lan(flag, tmp_path):
    result = run_app(flag, "--engines", "fake", "--data-dir", str(tmp_path))
    assert result.returncode != 0 and "only go with --lan" in result.stderr


def test_a_bad_flag_value_is_refused():
    result = run_app("--engines", "magic")
    assert result.returncode != 0
    assert "engines" in result.stderr


def test_flags_and_environment_become_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("MELANGE_PORT", "9000")
    settings = parse_settings(["--data-dir", str(tmp_path), "--engines", "fake"])
    assert settings.port == 9000
    assert settings.data_dir == tmp_path
    assert settings.resolved_models_dir == tmp_path / "models"


def test_gradios_cached_copies_expire(tmp_path):
    settings = Settings(data_dir=tmp_path, engines="fake", cache_minutes=5)
    assert app.cache_sweep_times(settings) == (30, 300), "swept every tenth of the age: the cache stays within 1.1 ages"
    assert app.cache_sweep_times(Settings(data_dir=tmp_path, engines="fake")) == (600, 86400), "a day by default"
    blocks = app.create_app(settings).state.blocks
    assert blocks.delete_cache == (300, 300), "Gradio's own sweep stays on for the shutdown, which empties the cache"


def test_shipped_presets_are_valid():
    presets = load_presets()
    assert presets.chat and presets.image and presets.transcribe


def test_a_broken_preset_is_named_at_start_up(tmp_path):
    for panel in ("chat", "image", "transcribe"):
        (tmp_path / panel).mkdir()
        for preset in (PRESETS_DIR / panel).glob("*.toml"):
            (tmp_path / panel / preset.name).write_text(preset.read_text())
    (tmp_path / "image" / "broken.toml").write_text('name = "Odd size"\nwidth = 100\n')
    with pytest.raises(PresetError, match="broken.toml"):
        load_presets(tmp_path)


def test_health_reports_version_device_and_each_engine(tmp_path):
    settings = Settings(data_dir=tmp_path, engines="fake")
    client = TestClient(app.create_app(settings), base_url=LOCAL)
    body = client.get("/health").json()
    assert body["app"] == "melange"
    assert body["version"]
    assert body["device"] == "cpu"
    assert set(body["engines"]) == {"chat", "image", "speech"}
    for status in body["engines"].values():
        assert status["backend"] == "fake" and status["loaded"] is False
    assert client.get("/").status_code == 200
    memory = body["memory"]["cpu"]
    assert memory["device"] == "cpu" and memory["budget"] > 0 and not memory["residents"]


def test_memory_status_follows_loads(tmp_path):
    settings = Settings(data_dir=tmp_path, engines="fake")
    engines = app.manage(app.build_engines(settings), settings)
    engines.chat.load()
    body = app.health(engines)
    assert [r["kind"] for r in body["memory"]["cpu"]["residents"]] == ["chat"]
    assert body["engines"]["chat"]["loaded"] is True
    engines.chat.unload()
    assert not app.health(engines)["memory"]["cpu"]["residents"]


def test_a_bad_gpu_budget_is_refused():
    result = run_app("--engines", "fake", "--gpu-budget", "lots")
    assert result.returncode != 0
    assert "--gpu-budget" in result.stderr and "Not a memory size" in result.stderr


def test_real_engines_are_built_without_loading_any_model(tmp_path):
    settings = Settings(data_dir=tmp_path, engines="real", device="cpu")
    engines = app.build_engines(settings)
    statuses = {s.kind: s for s in (e.status() for e in engines.all())}
    assert {s.backend for s in statuses.values()} == {"llama-cpp", "diffusers", "faster-whisper"}
    assert not any(s.loaded for s in statuses.values())
    assert statuses["image"].demo is True
    assert "SmolLM2" in statuses["chat"].model and "tiny.en" in statuses["speech"].model


def test_asking_for_cuda_without_it_stops_with_a_clear_message(tmp_path):
    from engines import device

    if device.torch_cuda():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SystemExit, match="--device cuda"):
        app.build_engines(Settings(data_dir=tmp_path, device="cuda"))


def test_the_suggested_profile_follows_the_gpu_memory():
    from ui.presets import suggest_profile

    profiles = load_presets().profiles
    gib = 2**30
    assert suggest_profile(profiles, None).name == "CPU laptop"
    assert suggest_profile(profiles, 4 * gib).name == "CPU laptop"
    assert suggest_profile(profiles, 8 * gib).name == "8 GB GPU"
    assert suggest_profile(profiles, 24 * gib).name == "24 GB GPU"
    assert suggest_profile(profiles, 80 * gib).name == "80 GB GPU"


def test_first_start_opens_the_suggested_setup(tmp_path):
    data = tmp_path / "new"
    client = TestClient(app.create_app(Settings(data_dir=data, engines="fake")), base_url=LOCAL)
    page = client.get("/config").json()
    profile = next(c for c in page["components"] if c.get("props", {}).get("elem_id") == "profile")
    assert profile["props"]["open"] is True
    again = TestClient(app.create_app(Settings(data_dir=data, engines="fake")), base_url=LOCAL).get("/config").json()
    profile = next(c for c in again["components"] if c.get("props", {}).get("elem_id") == "profile")
    assert profile["props"]["open"] is False


def test_uvicorn_parses_http_with_httptools():
    """uvicorn falls back to the pure-Python h11 parser when httptools is missing, which cost each /v1 first
    token through Melange about 3 ms (bench/api.py's remote section): httptools is a dependency for that."""
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    assert AutoHTTPProtocol.__name__ == "HttpToolsProtocol"
