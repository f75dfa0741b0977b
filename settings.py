"""Melange settings: one pydantic model that is also the command line (`python app.py --help`).

Every field can also be set from the environment with the ``MELANGE_`` prefix, e.g. ``MELANGE_PORT=8000``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, CliApp, CliSuppress, SettingsConfigDict

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

    host: str | None = Field(None, description="Address to listen on (default 127.0.0.1: this machine only; with --lan 0.0.0.0: every interface). Anything but loopback needs --lan.")
    port: int = Field(7860, ge=0, le=65535, description="Port to listen on (0 picks a free one).")
    data_dir: Path = Field(DEFAULT_DATA_DIR, description="Where Melange keeps generated files, the demo image pipeline and later the chat history.")
    models_dir: Path | None = Field(None, description="Folder scanned for your own models (default: DATA_DIR/models).")
    engines: Literal["real", "fake"] = Field("real", description="'real' runs the models; 'fake' uses deterministic stand-ins (for UI development and fast tests).")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where models run: 'auto' uses CUDA when torch sees a GPU, else the CPU.")
    lan: bool = Field(False, description="Share on the LAN: listen on every interface, with login, per-visitor data and https.")
    auth: bool = Field(True, description="With --lan, --no-auth turns the login off: everyone on the network is the host, and a red banner says so.")
    http: bool = Field(False, description="With --lan: plain http instead of https (colleagues' microphones will not work).")
    ssl_certfile: Path | None = Field(None, description="Your own TLS certificate (PEM) for --lan, instead of the self-signed one.")
    ssl_keyfile: Path | None = Field(None, description="The private key (PEM) of --ssl-certfile.")
    admin_password_file: Path | None = Field(None, description="A file holding the admin password (or set MELANGE_ADMIN_PASSWORD); else one is made on the first --lan start and printed once.")
    # From MELANGE_ADMIN_PASSWORD only: a flag would show the password in the process list.
    admin_password: CliSuppress[SecretStr | None] = Field(None)
    allowed_hosts: list[str] = Field(default_factory=list, description="More host names the server answers to (e.g. a DNS name colleagues use), besides localhost and this machine's names and addresses.")
    session_hours: float = Field(12.0, gt=0, le=24 * 7, description="A sign-in lasts this long after its last use (at most 7 days in all).")
    loopback_is_host: bool = Field(True, description="With --lan: a browser on this machine itself is the host without signing in.")
    max_upload_mb: int = Field(2048, ge=1, description="The largest file anyone may upload, in MB (a long recording fits; a disk image does not).")
    queue_size: int = Field(64, ge=1, le=10000, description="Jobs waiting at once, all panels together; past it the app answers 'busy, try again' (503).")
    guest_max_image_work: float = Field(32.0, gt=0, description="Per guest request: megapixels x steps x images (32: four 512x512 images at 30 steps).")
    guest_max_audio_minutes: float = Field(30.0, gt=0, description="Per guest request: the longest audio file, in minutes.")
    guest_max_tokens: int = Field(1024, ge=1, description="Per guest request: the most new tokens a reply may have.")
    max_image_work: float = Field(2000.0, gt=0, description="Per request, for everyone: megapixels x steps x images.")
    max_audio_hours: float = Field(12.0, gt=0, description="Per request, for everyone: the longest audio file, in hours.")
    max_live_sessions: int = Field(4, ge=1, le=64, description="Live-caption microphones at once.")
    chat_remote_images: bool = Field(False, description="Let chat replies load images from other sites (off: a prompt-injected reply could use one to send your data out).")
    chat_model: str | None = Field(None, description="GGUF file for the chat panel (default: the embedded SmolLM2-135M-Instruct); with --chat-backend openai, the server's model id (default: the first it lists).")
    image_model: str | None = Field(None, description="Diffusers folder, .safetensors file or Hugging Face repo id for the image panel (default: the tiny demo pipeline); with --image-backend melange, the server's model id.")
    speech_model: str | None = Field(None, description="CTranslate2 Whisper folder or faster-whisper model id (default: the embedded Whisper tiny.en); with --speech-backend openai, the server's model id.")
    chat_backend: Literal["local", "openai"] = Field("local", description="Where chat runs: 'local' (llama-cpp-python in this process) or 'openai' (an OpenAI-compatible server at --chat-base-url: llama.cpp, vLLM, another Melange).")
    chat_base_url: str | None = Field(None, description="With --chat-backend openai: the server's /v1 address, e.g. http://gpu-box:8000/v1.")
    chat_api_key: SecretStr | None = Field(None, description="With --chat-backend openai: the server's API key (better set MELANGE_CHAT_API_KEY: the process list shows flags). Never logged.")
    speech_backend: Literal["local", "openai"] = Field("local", description="Where transcription runs: 'local' (faster-whisper) or 'openai' (any server with /v1/audio/transcriptions at --speech-base-url, e.g. another Melange).")
    speech_base_url: str | None = Field(None, description="With --speech-backend openai: the server's /v1 address.")
    speech_api_key: SecretStr | None = Field(None, description="With --speech-backend openai: the server's API key (or MELANGE_SPEECH_API_KEY). Never logged.")
    image_backend: Literal["local", "melange"] = Field("local", description="Where images are drawn: 'local' (diffusers) or 'melange' (another Melange's /v1/images/generations at --image-base-url; it takes Melange's extra fields, which OpenAI's own image API does not).")
    image_base_url: str | None = Field(None, description="With --image-backend melange: the other Melange's /v1 address.")
    image_api_key: SecretStr | None = Field(None, description="With --image-backend melange: an API key made on that Melange (or MELANGE_IMAGE_API_KEY). Never logged.")
    remote_ca_file: Path | None = Field(None, description="A certificate (PEM) to trust for https remote servers besides the system's: another Melange's DATA_DIR/tls/melange-cert.pem.")
    remote_concurrency: int = Field(4, ge=1, le=256, description="Jobs at once on each remote engine (the server batches them); a local engine runs one at a time.")
    threads: int = Field(0, ge=0, description="CPU threads for the chat and speech engines (0: chat takes all cores but one, speech its own default).")
    gpu_budget: str | None = Field(None, description="GPU memory the models may use together, e.g. 12GB (default: all but a margin). Loading past it unloads others.")
    image_channels_last: bool = Field(False, description="Image: UNet and VAE in channels-last memory layout (faster on CUDA).")
    image_fuse_qkv: bool = Field(False, description="Image: fuse attention's query/key/value projections.")
    image_compile: bool = Field(False, description="Image: torch.compile the UNet and VAE decoder; the first image at each size warms up (can take minutes).")
    image_tiny_vae_preview: bool = Field(False, description="Image: step previews through TAESD (downloaded once) instead of the cheap linear preview.")
    idle_unload_minutes: float = Field(0, ge=0, description="Unload a model nobody used for this many minutes (0: keep models loaded).")
    cache_minutes: float = Field(
        1440, ge=1, description="Delete Gradio's cached copies of uploads and results this many minutes after they were made (what you made stays in the data folder)."
    )
    api_session_minutes: float = Field(
        10, gt=0, description="Forget an API caller's session (Gradio keeps ~400 KB for each) this many minutes after its last call; a page's lasts while it is open, and an hour after."
    )

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir if self.models_dir is not None else self.data_dir / "models"

    @property
    def bind(self) -> str:
        """The address to listen on: --host, else every interface with --lan, else this machine only."""
        if self.host:
            return self.host
        return "0.0.0.0" if self.lan else "127.0.0.1"


def parse_settings(argv: list[str] | None = None) -> Settings:
    """Settings from the command line (``argv``; None reads sys.argv) over the environment."""
    return CliApp.run(Settings, cli_args=argv)
