"""Melange settings: one pydantic model that is also the command line (`python app.py --help`).

Every field can also be set from the environment with the ``MELANGE_`` prefix, e.g. ``MELANGE_PORT=8000``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, CliApp, SettingsConfigDict

DEFAULT_DATA_DIR = Path.home() / ".local" / "share" / "melange"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MELANGE_",
        cli_prog_name="python app.py",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_enforce_required=False,
        extra="ignore",
    )

    host: str = Field("127.0.0.1", description="Address to listen on. 127.0.0.1 keeps it on this machine.")
    port: int = Field(7860, ge=0, le=65535, description="Port to listen on (0 picks a free one).")
    data_dir: Path = Field(DEFAULT_DATA_DIR, description="Where Melange keeps generated files, the demo image pipeline and later the chat history.")
    models_dir: Path | None = Field(None, description="Folder scanned for your own models (default: DATA_DIR/models).")
    engines: Literal["real", "fake"] = Field("real", description="'real' runs the models; 'fake' uses deterministic stand-ins (for UI development and fast tests).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where models run: 'auto' uses CUDA when torch sees a GPU, else the CPU.")
    lan: bool = Field(False, description="Serve on the LAN with login (not available yet).")
    chat_model: str | None = Field(None, description="GGUF file for the chat panel (default: the embedded SmolLM2-135M-Instruct).")
    image_model: str | None = Field(None, description="Diffusers folder, .safetensors file or Hugging Face repo id for the image panel (default: the tiny demo pipeline).")
    speech_model: str | None = Field(None, description="CTranslate2 Whisper folder or faster-whisper model id (default: the embedded Whisper tiny.en).")
    threads: int = Field(0, ge=0, description="CPU threads for the chat and speech engines (0: chat takes all cores but one, speech its own default).")
    gpu_budget: str | None = Field(None, description="GPU memory the models may use together, e.g. 12GB (default: all but a margin). Loading past it unloads others.")
    image_channels_last: bool = Field(False, description="Image: UNet and VAE in channels-last memory layout (faster on CUDA).")
    image_fuse_qkv: bool = Field(False, description="Image: fuse attention's query/key/value projections.")
    image_compile: bool = Field(False, description="Image: torch.compile the UNet and VAE decoder; the first image at each size warms up (can take minutes).")
    image_tiny_vae_preview: bool = Field(False, description="Image: step previews through TAESD (downloaded once) instead of the cheap linear preview.")
    idle_unload_minutes: float = Field(0, ge=0, description="Unload a model nobody used for this many minutes (0: keep models loaded).")

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir if self.models_dir is not None else self.data_dir / "models"


def parse_settings(argv: list[str] | None = None) -> Settings:
    """Settings from the command line (``argv``; None reads sys.argv) over the environment."""
    return CliApp.run(Settings, cli_args=argv)
