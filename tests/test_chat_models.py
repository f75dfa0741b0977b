"""Chat model discovery and the real Hugging Face download code, against a local stand-in for the hub."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines import embedded
from engines.chat import models as chat_models
from tests.fake_hub import FakeHub, calling

PAYLOAD = b"GGUF" + bytes(range(256)) * 800


@pytest.fixture(scope="module")
def hub():
    hub = FakeHub({"someone/tiny-GGUF": {"tiny.Q4_0.gguf": PAYLOAD}})
    yield hub
    hub.close()


def download(hub: FakeHub, hf_home: Path, repo: str, filename: str) -> dict:
    return hub.run(calling(f"__import__('engines.chat.models', fromlist=['x']).download({repo!r}, {filename!r})"), hf_home)


def test_download_lands_in_the_standard_hub_cache(hub, tmp_path):
    path = Path(download(hub, tmp_path / "hf", "someone/tiny-GGUF", "tiny.Q4_0.gguf")["result"])
    assert path.read_bytes() == PAYLOAD
    assert path.is_relative_to(tmp_path / "hf" / "hub" / "models--someone--tiny-GGUF")


def test_a_missing_repo_or_file_gets_a_clear_message(hub, tmp_path):
    repo = download(hub, tmp_path / "hf", "someone/no-such-repo", "x.gguf")
    assert repo["error"] == "InputError" and "No model repo 'someone/no-such-repo'" in repo["message"]
    file = download(hub, tmp_path / "hf", "someone/tiny-GGUF", "missing.gguf")
    assert file["error"] == "InputError" and "has no file 'missing.gguf'" in file["message"]


def test_the_embedded_model_is_always_offered(tmp_path):
    choices = chat_models.find_models(tmp_path / "absent")
    assert [c.path for c in choices] == [embedded.smollm2_gguf()]
