"""Diffusers pipelines from the hub: the real download, against a local stand-in for the hub."""

from __future__ import annotations

import pytest

from engines.image.tiny_pipeline import ensure_tiny_pipeline
from tests.fake_hub import FakeHub, calling


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    folder = ensure_tiny_pipeline(tmp_path_factory.mktemp("data"))
    files = {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    files["unet/diffusion_pytorch_model.bin"] = b"a pickle we must never fetch"
    hub = FakeHub({"someone/tiny-sd": files, "someone/pickles-only": {"model_index.json": b"{}", "unet/diffusion_pytorch_model.bin": b"x"}})
    yield hub
    hub.close()


def test_a_hub_pipeline_is_downloaded_without_pickles_and_draws(hub, tmp_path):
    code = (
        "import json\n"
        "from pathlib import Path\n"
        "from engines.base import ImageParams\n"
        "from engines.image.diffusion import DiffusersImageEngine\n"
        "from engines.image.models import download\n"
        "seen = []\n"
        "folder, variant = download('someone/tiny-sd', lambda f, d: seen.append(d))\n"
        "engine = DiffusersImageEngine('someone/tiny-sd')\n"
        "result = engine.generate(ImageParams('a fox', width=64, height=64, steps=2, seed=3))\n"
        "files = sorted(str(p.relative_to(folder)) for p in Path(folder).rglob('*') if p.is_file())\n"
        "print(json.dumps({'folder': str(folder), 'files': files, 'size': list(result.image.size), 'progress': seen[:1]}))\n"
    )
    result = hub.run(code, tmp_path / "hf")
    assert result["size"] == [64, 64]
    assert "unet/diffusion_pytorch_model.safetensors" in result["files"]
    assert not any(f.endswith(".bin") for f in result["files"]), "pickles are never fetched"
    assert result["folder"].startswith(str(tmp_path / "hf" / "hub" / "models--someone--tiny-sd"))
    assert result["progress"] and "someone/tiny-sd" in result["progress"][0]


def test_a_missing_repo_or_one_with_only_pickles_gets_a_clear_message(hub, tmp_path):
    def download(repo: str) -> dict:
        return hub.run(calling(f"__import__('engines.image.models', fromlist=['x']).download({repo!r}, None)"), tmp_path / "hf")

    missing = download("someone/nothing")
    assert missing["error"] == "InputError" and "No model repo 'someone/nothing'" in missing["message"]
    pickles = download("someone/pickles-only")
    assert pickles["error"] == "InputError" and "someone/pickles-only cannot be used" in pickles["message"], pickles


@pytest.fixture(scope="module")
def addon_hub(tmp_path_factory):
    from engines.image.tiny_pipeline import build_tiny_controlnet, build_tiny_lora

    folder = tmp_path_factory.mktemp("addons")
    lora = build_tiny_lora(folder / "lora.safetensors")
    controlnet = build_tiny_controlnet(folder / "cn")
    hub = FakeHub({
        "someone/tiny-lora": {"pytorch_lora_weights.safetensors": lora.read_bytes(), "README.md": b"# a LoRA"},
        "someone/two-loras": {"a.safetensors": lora.read_bytes(), "b.safetensors": lora.read_bytes()},
        "someone/tiny-controlnet": {p.name: p.read_bytes() for p in controlnet.iterdir()} | {"diffusion_pytorch_model.bin": b"pickle"},
    })  # fmt: skip
    yield hub
    hub.close()


def test_loras_and_controlnets_by_hub_id_are_downloaded_and_used(addon_hub, tmp_path):
    code = (
        "import json\n"
        "from engines.base import ImageParams, LoraWeight\n"
        "from engines.image.diffusion import load_tiny_demo\n"
        f"engine = load_tiny_demo({str(tmp_path / 'data')!r})\n"
        "from PIL import Image\n"
        f"Image.new('RGB', (64, 64), (200, 10, 10)).save({str(tmp_path / 'start.png')!r})\n"
        "p = ImageParams('a fox', width=64, height=64, steps=2, seed=3, loras=(LoraWeight('someone/tiny-lora', 0.5),),\n"
        f"                controlnet='someone/tiny-controlnet', control_image={str(tmp_path / 'start.png')!r})\n"
        "r = engine.generate(p)\n"
        "two = engine.generate(ImageParams('a fox', width=64, height=64, steps=2, loras=(LoraWeight('someone/two-loras/b.safetensors'),)))\n"
        "print(json.dumps({'lora': r.lora_hashes, 'cn': r.controlnet_hash, 'two': two.lora_hashes}))\n"
    )
    result = addon_hub.run(code, tmp_path / "hf")
    assert len(result["lora"][0]) == 10 and len(result["cn"]) == 10 and result["two"] == result["lora"]
    files = sorted(p.name for p in (tmp_path / "hf").rglob("*") if p.is_file() and "snapshots" in str(p))
    assert "diffusion_pytorch_model.bin" not in files, "pickles are never fetched"
    ambiguous = addon_hub.run(
        calling("__import__('engines.image.models', fromlist=['x']).download_file_model('someone/two-loras', None, 'LoRA')"), tmp_path / "hf"
    )
    assert ambiguous["error"] == "InputError" and "name one as someone/two-loras/<file>" in ambiguous["message"]
