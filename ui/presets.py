"""Presets are TOML data files under ``presets/<panel>/``; they are validated when the app starts.

A bad preset stops start-up with a message naming the file, rather than failing later in a panel.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engines.base import SAMPLERS

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"


class PresetError(ValueError):
    pass


class _Preset(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)


class ChatPreset(_Preset):
    system_prompt: str = ""
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int = Field(40, ge=0, le=1000)
    repeat_penalty: float = Field(1.1, ge=0.5, le=2.0)
    max_tokens: int = Field(512, ge=16, le=4096)


class PresetLora(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1)
    weight: float = Field(1.0, ge=-4.0, le=4.0)


class ImagePreset(_Preset):
    model: str | None = None  # a model name, folder, .safetensors file or repo id; None keeps the current one
    sampler: Literal[SAMPLERS] = "Euler"
    steps: int = Field(20, ge=1, le=150)
    guidance: float = Field(7.0, ge=0.0, le=30.0)
    width: int = Field(512, ge=64, le=2048, multiple_of=8)
    height: int = Field(512, ge=64, le=2048, multiple_of=8)
    negative_prompt: str = ""
    refiner: str | None = None  # a second model that finishes the image
    refiner_start: float = Field(0.8, gt=0.0, lt=1.0)
    # The image panel's add-ons (issue #14); each is off unless a preset names it.
    loras: list[PresetLora] = Field(default_factory=list, max_length=4)
    strength: float = Field(0.75, gt=0.0, le=1.0)
    mask_blur: int = Field(4, ge=0, le=64)
    inpaint_only_masked: bool = False
    inpaint_padding: int = Field(32, ge=0, le=256)
    outpaint_pixels: int = Field(128, ge=8, le=1024, multiple_of=8)
    hires_scale: float = Field(1.0, ge=1.0, le=4.0)
    hires_upscaler: Literal["Latent", "Lanczos"] = "Latent"
    hires_strength: float = Field(0.5, gt=0.0, le=1.0)
    hires_steps: int = Field(0, ge=0, le=150)
    controlnet: str | None = None
    control_preprocessor: Literal["none", "canny"] = "none"
    control_scale: float = Field(1.0, ge=0.0, le=2.0)
    control_start: float = Field(0.0, ge=0.0, lt=1.0)
    control_end: float = Field(1.0, gt=0.0, le=1.0)
    upscale: float = Field(1.0, ge=1.0, le=4.0)
    upscaler: str = "Lanczos"


class TranscribePreset(_Preset):
    language: str | None = None
    beam_size: int = Field(5, ge=1, le=10)
    vad_filter: bool = True
    word_timestamps: bool = False
    task: Literal["transcribe", "translate"] = "transcribe"
    batched: bool = False
    speakers: bool = False
    num_speakers: int = Field(0, ge=0, le=8)  # 0: estimate


class Profile(_Preset):
    """A set of models that fits resident at once on a GPU of at least ``min_gpu_gb``."""

    min_gpu_gb: float = Field(ge=0)
    chat: str
    image: str
    speech: str


def suggest_profile(profiles: list[Profile], gpu_bytes: int | None) -> Profile:
    """The largest profile the GPU holds (the CPU one without a GPU)."""
    gb = (gpu_bytes or 0) / 2**30
    fitting = [p for p in profiles if p.min_gpu_gb <= gb] or [min(profiles, key=lambda p: p.min_gpu_gb)]
    return max(fitting, key=lambda p: p.min_gpu_gb)


P = TypeVar("P", bound=_Preset)


@dataclass(frozen=True)
class Presets:
    chat: list[ChatPreset]
    image: list[ImagePreset]
    transcribe: list[TranscribePreset]
    profiles: list[Profile]


def _load_folder(folder: Path, model: type[P], user_folder: Path | None = None) -> list[P]:
    files = sorted(folder.glob("*.toml"))
    if user_folder is not None and user_folder.is_dir():
        files += sorted(user_folder.glob("*.toml"))
    if not files:
        raise PresetError(f"No presets in {folder}: each panel needs at least one .toml preset.")
    presets = []
    for file in files:
        try:
            presets.append(model.model_validate(tomllib.loads(file.read_text(encoding="utf-8"))))
        except (tomllib.TOMLDecodeError, ValidationError) as e:
            raise PresetError(f"Invalid preset {file}: {e}") from e
    names = [p.name for p in presets]
    if len(set(names)) != len(names):
        raise PresetError(f"Two presets in {folder} share a name: {sorted(names)}")
    return presets


def load_presets(root: Path = PRESETS_DIR, user_root: Path | None = None) -> Presets:
    """The shipped presets, then the user's own (saved from the UI under the data folder)."""

    def user(panel: str) -> Path | None:
        return user_root / panel if user_root is not None else None

    return Presets(
        chat=_load_folder(root / "chat", ChatPreset, user("chat")),
        image=_load_folder(root / "image", ImagePreset, user("image")),
        transcribe=_load_folder(root / "transcribe", TranscribePreset, user("transcribe")),
        profiles=_load_folder(root / "profiles", Profile),
    )


def save_preset(folder: Path, preset: _Preset) -> Path:
    """Write a user preset as TOML, named after the preset; never overwrites."""
    import tomlkit

    folder.mkdir(parents=True, exist_ok=True)
    stem = "".join(c if c.isalnum() else "-" for c in preset.name.lower()).strip("-") or "preset"
    path = folder / f"{stem}.toml"
    if path.exists():
        raise PresetError(f"A preset file {path.name} exists already; choose another name.")
    data = {k: v for k, v in preset.model_dump().items() if v is not None}
    partial = path.with_name(f".{path.name}.part")
    partial.write_text(tomlkit.dumps(data), encoding="utf-8")
    partial.replace(path)  # atomic: a crash mid-write never leaves a broken preset that stops the next start-up
    return path
