"""Text-to-image with diffusers: a Hugging Face repo id, a local diffusers folder or one .safetensors file.

torch and diffusers are imported when a model loads, so the fake engines run without them.
"""

from __future__ import annotations

import gc
import re
import secrets
import threading
import time
from dataclasses import replace
from pathlib import Path

from engines.base import (
    EngineError,
    EngineStatus,
    ImageParams,
    ImageResult,
    InputError,
    ProgressCallback,
    StepCallback,
)
from engines.tiny_pipeline import ensure_tiny_pipeline, is_demo_pipeline

TINY_DEMO_NAME = "Melange tiny demo pipeline (random weights)"

# Sampler name as people know it from the SD web UIs -> diffusers scheduler class and the options
# that make it that sampler. Options are explicit so a model's own config (say Karras sigmas on)
# never changes what a name means.
SAMPLERS: dict[str, tuple[str, dict]] = {
    "Euler": ("EulerDiscreteScheduler", {"use_karras_sigmas": False}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    "DDIM": ("DDIMScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler", {"use_karras_sigmas": False}),
}

# Pickled checkpoints can run arbitrary code when loaded; we only read safetensors.
PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin"}
REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class DiffusersImageEngine:
    kind = "image"
    samplers: tuple[str, ...] = tuple(SAMPLERS)

    def __init__(
        self,
        model: str | Path,
        device: str = "cpu",
        *,
        display_name: str | None = None,
        demo: bool = False,
    ) -> None:
        if device not in ("cpu", "cuda"):
            raise InputError(f"Device must be 'cpu' or 'cuda', got {device!r}.")
        suffix = Path(str(model)).suffix.lower()
        if suffix in PICKLE_SUFFIXES:
            raise InputError(
                f"{Path(str(model)).name} is a pickled checkpoint, which can run code when loaded. "
                "Use a .safetensors file or a diffusers folder instead."
            )
        self.model = str(model)
        self.device = device
        # A local model is named by its file or folder, a hub model by its full repo id.
        self.display_name = display_name or (Path(self.model).name if Path(self.model).exists() else self.model)
        self.demo = demo or is_demo_pipeline(Path(self.model))
        self._pipe = None
        self._scheduler_config = None  # the model's own, kept so each sampler starts from it
        self._lock = threading.Lock()  # one load or generation at a time: a pipeline is not re-entrant

    def status(self) -> EngineStatus:
        return EngineStatus("image", "diffusers", self.display_name, self._pipe is not None, self.device, self.demo)

    def load(self, progress: ProgressCallback | None = None) -> None:
        with self._lock:
            self._load_locked(progress)

    def unload(self) -> None:
        with self._lock:
            self._pipe = None
            self._free_memory()

    def _free_memory(self) -> None:
        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()

    def _load_locked(self, progress: ProgressCallback | None) -> None:
        if self._pipe is not None:
            return
        if progress:
            progress(None, f"Loading {self.display_name}…")
        import torch

        dtype = torch.float16 if self.device == "cuda" else torch.float32
        try:
            pipe = self._open(dtype)
            pipe.to(self.device)
        except (InputError, EngineError):
            raise
        except Exception as e:  # diffusers raises OSError, ValueError, safetensors and hub errors alike
            self._free_memory()
            raise EngineError(f"Could not load image model {self.display_name}: {e}") from e
        pipe.set_progress_bar_config(disable=True)
        self._scheduler_config = pipe.scheduler.config
        self._pipe = pipe

    def _open(self, dtype):
        from diffusers import DiffusionPipeline

        path = Path(self.model)
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise EngineError(f"{path} is not a diffusers model folder: it has no model_index.json.")
            return DiffusionPipeline.from_pretrained(path, dtype=dtype)
        if path.is_file():
            if path.suffix.lower() != ".safetensors":
                raise InputError(f"{path.name}: image models must be a .safetensors file or a diffusers folder.")
            return self._open_single_file(path, dtype)
        if REPO_ID.match(self.model):
            return DiffusionPipeline.from_pretrained(self.model, dtype=dtype)
        raise EngineError(f"Image model not found: {self.model} is neither a file, a folder nor a Hugging Face repo id.")

    def _open_single_file(self, path: Path, dtype):
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
        from safetensors import safe_open

        # Reading the header first turns a truncated or foreign file into a clear error, and its
        # keys tell SDXL (two text encoders under "conditioner") from SD 1.x/2.x.
        try:
            with safe_open(str(path), framework="pt") as f:
                keys = list(f.keys())
        except Exception as e:
            raise EngineError(f"{path.name} is not a readable .safetensors file: {e}") from e
        is_sdxl = any(k.startswith("conditioner.embedders.1.") for k in keys)
        cls = StableDiffusionXLPipeline if is_sdxl else StableDiffusionPipeline
        return cls.from_single_file(str(path), dtype=dtype)

    def _scheduler(self, sampler: str):
        import diffusers

        class_name, options = SAMPLERS[sampler]
        return getattr(diffusers, class_name).from_config(self._scheduler_config, **options)

    def generate(self, params: ImageParams, on_step: StepCallback | None = None) -> ImageResult:
        params.check()
        if params.sampler not in SAMPLERS:
            raise InputError(f"Unknown sampler {params.sampler!r}; choose one of {', '.join(self.samplers)}.")
        if params.seed == -1:
            params = replace(params, seed=secrets.randbelow(2**32))
        import torch

        with self._lock:
            self._load_locked(None)
            pipe = self._pipe
            # A fresh scheduler per request: schedulers keep per-run state (timesteps, step index).
            pipe.scheduler = self._scheduler(params.sampler)

            def step_end(pipeline, step: int, timestep, callback_kwargs: dict) -> dict:
                if on_step:
                    on_step(step + 1, getattr(pipeline, "num_timesteps", None) or params.steps)
                return callback_kwargs

            started = time.perf_counter()
            oom = False
            try:
                image = pipe(
                    prompt=params.prompt,
                    negative_prompt=params.negative_prompt or None,
                    width=params.width,
                    height=params.height,
                    num_inference_steps=params.steps,
                    guidance_scale=params.guidance,
                    # Seeded on the CPU so a seed gives the same image on every device.
                    generator=torch.Generator(device="cpu").manual_seed(params.seed),
                    callback_on_step_end=step_end,
                ).images[0]
            except torch.cuda.OutOfMemoryError:
                oom = True  # freed below, outside this block: its traceback still holds the tensors
            except (ValueError, TypeError, RuntimeError) as e:
                raise EngineError(f"Image generation failed: {e}") from e
            if oom:
                self._free_memory()
                raise EngineError(
                    f"Out of memory at {params.width}×{params.height}. Try a smaller size or close other GPU programs."
                )
            seconds = time.perf_counter() - started
        return ImageResult(image=image, params=params, model=self.display_name, seconds=seconds)


def load_tiny_demo(data_dir: Path, device: str = "cpu") -> DiffusersImageEngine:
    """The engine on the tiny random-weight pipeline, built under ``data_dir`` on first use."""
    return DiffusersImageEngine(ensure_tiny_pipeline(Path(data_dir)), device, display_name=TINY_DEMO_NAME, demo=True)
