"""Text-to-image, image-to-image and inpainting with diffusers; LoRAs, ControlNet, a refiner or a hi-res
fix, an upscale after; step previews throughout.

A model is a Hugging Face repo id (downloaded into the standard cache), a diffusers folder or one
.safetensors checkpoint. Pipelines stay resident (the base and its refiner) in fp16 on CUDA, float32
on the CPU. torch and diffusers are imported when a model loads, so the fake engines run without them.
"""

from __future__ import annotations

import gc
import logging
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

from engines.image import models as image_models, upscale as image_upscale
from engines.base import (
    PIXEL_UPSCALER,
    SAMPLERS as SAMPLER_NAMES,
    Cancelled,
    EngineError,
    EngineStatus,
    ImageParams,
    ImageResult,
    InputError,
    PreviewCallback,
    ProgressCallback,
    StepCallback,
    check_batch,
)
from engines.image.control import load_controlnet
from engines.image.lora import LoraState, ResolvedLora, check_lora_family
from engines.image.run import Addons, Inputs, StepReporter, Stop, read_inputs, run
from engines.image.models import MAX_SIDE, is_xl
from engines.image.tiny_pipeline import ensure_tiny_pipeline, is_demo_pipeline

log = logging.getLogger(__name__)

TINY_DEMO_NAME = "Melange tiny demo pipeline (random weights)"

# Sampler name -> diffusers scheduler class and the options that make it that sampler. Options are
# explicit so a model's own config (say Karras sigmas on) never changes what a name means.
SAMPLERS: dict[str, tuple[str, dict]] = {
    "Euler": ("EulerDiscreteScheduler", {"use_karras_sigmas": False}),
    "Euler a": ("EulerAncestralDiscreteScheduler", {}),
    "DPM++ 2M": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False}),
    "DPM++ 2M Karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    "DDIM": ("DDIMScheduler", {}),
    "LCM": ("LCMScheduler", {}),
    "UniPC": ("UniPCMultistepScheduler", {"use_karras_sigmas": False}),
}
assert tuple(SAMPLERS) == SAMPLER_NAMES, "engines.base.SAMPLERS and this mapping must name the same samplers"

# Cheap latent -> RGB previews: one linear map per latent space (the factors A1111 and ComfyUI use).
LATENT_RGB = {
    "sd": ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473)),
    "sdxl": ((0.3448, 0.4168, 0.4395), (-0.1953, -0.0290, 0.0250), (0.1074, 0.0886, -0.0163), (-0.3730, -0.2499, -0.2088)),
}


@dataclass(frozen=True)
class SpeedOptions:
    """GPU speed-ups, all off by default. Each trades start-up time or memory for faster steps."""

    channels_last: bool = False  # UNet and VAE in NHWC memory layout (faster convolutions on CUDA)
    fuse_qkv: bool = False  # one matmul for attention's query, key and value
    compile: bool = False  # torch.compile the UNet and VAE decoder; the first run warms up (minutes)
    tiny_vae_preview: bool = False  # step previews through TAESD (downloaded once) instead of the linear map


@dataclass
class _Model:
    name: str
    source: str
    family: str
    hash: str
    demo: bool
    pipe: object
    scheduler_config: object
    derived: dict = field(default_factory=dict)  # (mode, controlnet) -> a pipeline sharing this one's modules
    lora: LoraState = field(default_factory=LoraState)
    controlnet: tuple | None = None  # (name, ControlNetModel, hash): one resident per model

    @property
    def cross_dim(self) -> int:
        return int(self.pipe.unet.config.cross_attention_dim)

    @property
    def inpaint_unet(self) -> bool:
        return self.pipe.unet.config.in_channels == 9


class DiffusersImageEngine:
    kind = "image"
    samplers: tuple[str, ...] = SAMPLER_NAMES

    def __init__(
        self,
        model: str | Path,
        device: str = "cpu",
        *,
        display_name: str | None = None,
        demo: bool = False,
        models_dir: Path | None = None,
        speed: SpeedOptions = SpeedOptions(),
        max_resident: int = 2,
    ) -> None:
        if device not in ("cpu", "cuda"):
            raise InputError(f"Device must be 'cpu' or 'cuda', got {device!r}.")
        image_models.refuse_pickle(model)
        self.model = str(model)
        self.device = device
        # A local model is named by its file or folder, a hub model by its full repo id.
        self.display_name = display_name or (Path(self.model).name if Path(self.model).exists() else self.model)
        self.demo = demo or is_demo_pipeline(Path(self.model))
        self.models_dir = Path(models_dir) if models_dir is not None else None
        self.speed = speed
        self.max_resident = max(1, max_resident)
        self._hashes = image_models.HashCache(self.models_dir / ".melange-hashes.json" if self.models_dir else None)
        self._active = self.display_name
        self._resident: OrderedDict[str, _Model] = OrderedDict()  # least recently used first
        self._taesd = None
        self.loads = 0  # models opened so far: the memory manager books a load when this moves
        self._lock = threading.Lock()  # one load or generation at a time: a pipeline is not re-entrant

    # ------------------------------------------------------------ models

    def status(self) -> EngineStatus:
        entry = self._resident.get(self._active)
        demo = entry.demo if entry else (self.demo if self._active == self.display_name else False)
        return EngineStatus("image", "diffusers", self._active, entry is not None, self.device, demo)

    def models(self) -> list[str]:
        names = [self.display_name]
        default = Path(self.model).resolve() if Path(self.model).exists() else None
        for name, path in image_models.local_models(self.models_dir).items():
            if path.resolve() != default and name not in names:
                names.append(name)
        names += [repo for repo in image_models.cached_hub_models() if repo not in names]
        names += [name for name in self._resident if name not in names]
        return names

    def loras(self) -> list[str]:
        """LoRA files in the models folder (a Hugging Face id works too)."""
        return list(image_models.local_assets(self.models_dir, "lora"))

    def controlnets(self) -> list[str]:
        return list(image_models.local_assets(self.models_dir, "controlnet"))

    def upscalers(self) -> list[str]:
        """Lanczos, then the super-resolution models in the models folder."""
        return [PIXEL_UPSCALER, *image_models.local_assets(self.models_dir, "upscaler")]

    def _source(self, name: str) -> str:
        if name in ("", self.display_name):
            return self.model
        image_models.refuse_pickle(name)
        local = image_models.local_models(self.models_dir)
        if name in local:
            return str(local[name])
        upscalers = image_models.local_assets(self.models_dir, "upscaler")
        if name in upscalers:
            return str(upscalers[name])
        if Path(name).exists() or image_models.REPO_ID.match(name):
            return name
        raise InputError(f"Unknown image model {name!r}: pick one from the list, or give a Hugging Face repo id.")

    def load(self, progress: ProgressCallback | None = None) -> None:
        with self._lock:
            self._model(self._active, progress)

    def prepare(self, params: ImageParams, progress: ProgressCallback | None = None) -> None:
        """Load (downloading if needed) the model, refiner, LoRAs, ControlNet and upscaler ``params`` name."""
        with self._lock:
            base = self._model(params.model or self.display_name, progress)
            self._active = base.name
            if params.refiner:
                self._model(params.refiner, progress, keep=base.name)
            self._addons(params, base, progress)

    def unload(self) -> None:
        with self._lock:
            self._resident.clear()
            self._taesd = None
            self._free_memory()

    def _free_memory(self) -> None:
        gc.collect()
        if self.device == "cuda":
            import torch

            torch.cuda.empty_cache()

    def _model(self, name: str, progress: ProgressCallback | None, keep: str | None = None) -> _Model:
        name = name or self.display_name
        if name in self._resident:
            self._resident.move_to_end(name)
            return self._resident[name]
        source = self._source(name)
        # Make room, least recently used first, but never evict the base of this request.
        evictable = [n for n in self._resident if n != keep]
        while evictable and len(self._resident) >= self.max_resident:
            del self._resident[evictable.pop(0)]
            self._free_memory()
        try:
            entry = self._open(name, source, progress)
        except (InputError, EngineError):
            self._free_memory()
            raise
        except Exception as e:  # diffusers raises OSError, ValueError, safetensors and hub errors alike
            self._free_memory()
            raise EngineError(f"Could not load image model {name}: {e}") from e
        self._resident[name] = entry
        if self.speed.compile:
            self._warm_up(entry, progress)
        return entry

    def _open(self, name: str, source: str, progress: ProgressCallback | None) -> _Model:
        self.loads += 1
        import torch
        from diffusers import DiffusionPipeline, StableDiffusionPipeline, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline

        dtype = torch.float16 if self.device == "cuda" else torch.float32
        path = Path(source)
        variant = None
        if not path.exists():
            if not image_models.REPO_ID.match(source):
                raise EngineError(f"Image model not found: {source} is neither a file, a folder nor a Hugging Face repo id.")
            path, variant = image_models.download(source, progress, prefer_fp16=self.device == "cuda")
        if progress:
            progress(None, f"Loading {name}…")
        if path.is_dir():
            if not (path / "model_index.json").is_file():
                raise EngineError(f"{path} is not a diffusers model folder: it has no model_index.json.")
            upscaler = image_models.folder_kind(path) == "upscaler"
            family = "sd-upscaler" if upscaler else image_models.detect_family(path)
            pipe = DiffusionPipeline.from_pretrained(path, dtype=dtype, variant=variant)
        elif path.suffix.lower() != ".safetensors":
            raise InputError(f"{path.name}: image models must be a .safetensors file or a diffusers folder.")
        else:
            # Reading the header first turns a truncated or foreign file into a clear error.
            family = image_models.detect_family(path, image_models.safetensors_keys(path))
            cls = {"sdxl-refiner": StableDiffusionXLImg2ImgPipeline}.get(
                family, StableDiffusionXLPipeline if is_xl(family) else StableDiffusionPipeline
            )
            pipe = cls.from_single_file(str(path), dtype=dtype)
        model_hash = self._hashes.short_hash(path, progress)
        pipe.to(self.device)
        pipe.set_progress_bar_config(disable=True)
        self._speed_up(pipe)
        return _Model(name, source, family, model_hash, is_demo_pipeline(path), pipe, pipe.scheduler.config)

    def _speed_up(self, pipe) -> None:
        import torch

        if self.speed.channels_last:
            pipe.unet.to(memory_format=torch.channels_last)
            pipe.vae.to(memory_format=torch.channels_last)
        if self.speed.fuse_qkv and hasattr(pipe, "fuse_qkv_projections"):
            pipe.fuse_qkv_projections()
        if self.speed.compile:
            pipe.unet = torch.compile(pipe.unet)
            pipe.vae.decode = torch.compile(pipe.vae.decode)

    def _warm_up(self, entry: _Model, progress: ProgressCallback | None) -> None:
        """torch.compile works on the first call; do it now, with the progress bar saying so."""
        if entry.family in ("sdxl-refiner", "sd-upscaler") or entry.inpaint_unet:
            return
        side = 1024 if is_xl(entry.family) else 512
        if progress:
            progress(None, f"Compiling {entry.name} for {side}×{side} (first time only, can take minutes)…")
        params = ImageParams("warm-up", width=side, height=side, steps=2, seed=0, model=entry.name)
        run(self, [params], entry, None, Inputs(), Addons([], None, None), None, None, None)

    # ------------------------------------------------------------ generation

    def scheduler(self, entry: _Model, sampler: str):
        import diffusers

        class_name, options = SAMPLERS[sampler]
        return getattr(diffusers, class_name).from_config(entry.scheduler_config, **options)

    def pipeline(self, entry: _Model, mode: str, controlnet: tuple | None = None):
        """The model's pipeline for "txt2img", "img2img" or "inpaint", with a ControlNet or not; derived ones
        share the model's modules (from_pipe), so they cost no memory but the ControlNet."""
        own = type(entry.pipe).__name__
        native = {"txt2img": "Img2Img" not in own and "Inpaint" not in own, "img2img": "Img2Img" in own, "inpaint": "Inpaint" in own}
        if controlnet is None and native[mode]:
            return entry.pipe
        key = (mode, controlnet[0] if controlnet else "")
        if key not in entry.derived:
            from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image

            auto = {"txt2img": AutoPipelineForText2Image, "img2img": AutoPipelineForImage2Image, "inpaint": AutoPipelineForInpainting}[mode]
            pipe = auto.from_pipe(entry.pipe, **({"controlnet": controlnet[1]} if controlnet else {}))
            pipe.set_progress_bar_config(disable=True)
            entry.derived[key] = pipe
        return entry.derived[key]

    def img2img(self, entry: _Model):
        return self.pipeline(entry, "img2img")

    # ------------------------------------------------------------ add-ons: LoRAs, ControlNet, upscaler

    def _addons(self, params: ImageParams, base: _Model, progress: ProgressCallback | None) -> Addons:
        loras = [self._lora(lora.name, lora.weight, base, progress) for lora in params.loras]
        controlnet = self._controlnet(params.controlnet, base, progress) if params.controlnet else None
        upscaler = None
        if params.upscale > 1 and params.upscaler != PIXEL_UPSCALER:
            upscaler = self._upscaler(params.upscaler, progress, keep=base.name)
        return Addons(loras, controlnet, upscaler)

    def _addon_path(self, name: str, kind: str, label: str, progress: ProgressCallback | None) -> Path:
        """A LoRA or ControlNet by its name in the models folder, or by Hugging Face id (downloaded once).
        Never an arbitrary path: names come from the page and the API."""
        local = image_models.local_assets(self.models_dir, kind)
        if name in local:
            return local[name]
        image_models.refuse_pickle(name)
        if name.count("/") >= 1 and image_models.REPO_ID.match("/".join(name.split("/")[:2])):
            return image_models.download_file_model(name, progress, label)
        raise InputError(f"Unknown {label} {name!r}: pick one from the models folder, or give a Hugging Face id.")

    def _lora(self, name: str, weight: float, base: _Model, progress) -> ResolvedLora:
        path = self._addon_path(name, "lora", "LoRA", progress)
        check_lora_family(name, path, base.name, base.cross_dim)
        return ResolvedLora(name, path, self._hashes.short_hash(path, progress), weight)

    def _controlnet(self, name: str, base: _Model, progress) -> tuple:
        if base.controlnet is not None and base.controlnet[0] == name:
            return base.controlnet
        path = self._addon_path(name, "controlnet", "ControlNet", progress)
        if progress:
            progress(None, f"Loading ControlNet {name}…")
        import torch

        dtype = torch.float16 if self.device == "cuda" else torch.float32
        model = load_controlnet(name, path, dtype, self.device, base.name, base.cross_dim)
        # One ControlNet per model: the pipelines built around the old one go with it.
        base.derived = {key: pipe for key, pipe in base.derived.items() if not key[1]}
        base.controlnet = (name, model, self._hashes.short_hash(path, progress))
        self._free_memory()
        return base.controlnet

    def _upscaler(self, name: str, progress, keep: str) -> _Model:
        if name not in image_models.local_assets(self.models_dir, "upscaler"):
            raise InputError(
                f"Unknown upscaler {name!r}: choose {PIXEL_UPSCALER}, or a super-resolution model in the models folder."
            )
        return self._model(name, progress, keep=keep)

    def upscale_image(self, image, params: ImageParams, on_step: StepCallback | None = None, cancel=None) -> tuple[object, str]:
        """A finished image made bigger as ``params.upscale`` and ``params.upscaler`` say (its prompt and seed
        steer a super-resolution model). Returns the image and the upscaler's hash."""
        if params.upscale == 1:
            raise InputError("Choose a factor above 1 to upscale.")
        params = replace(params, width=image.width, height=image.height, hires_scale=1.0, outpaint=(), init_image=None, mask_image=None)
        params.check_upscale()
        with self._lock:
            if params.upscaler == PIXEL_UPSCALER:
                return image_upscale.lanczos([image], *image_upscale.scaled(image.size, params.upscale))[0], ""
            model = self._upscaler(params.upscaler, None, keep=self._active)
            steps = StepReporter(on_step, None, cancel, [], self.preview)
            steps.expect(image_upscale.SR_STEPS)
            try:
                out = image_upscale.super_resolve(model.pipe, [image.convert("RGB")], params.prompt, [max(params.seed, 0)], params.upscale, steps.legacy)
            except Stop as stop:
                raise Cancelled(str(stop)) from None
            except (ValueError, TypeError, RuntimeError) as e:  # torch's out of memory is a RuntimeError too
                self._free_memory()
                raise EngineError(f"The upscale with {params.upscaler} failed: {e}") from e
            return out[0], model.hash

    def _apply_loras(self, entry: _Model, loras: list[ResolvedLora]) -> None:
        # Fused q/k/v projections are built from the separate ones: rebuild them around the LoRAs.
        fused_qkv = self.speed.fuse_qkv and hasattr(entry.pipe, "unfuse_qkv_projections")
        if tuple((lora.hash, lora.weight) for lora in loras) == entry.lora.key:
            return
        if fused_qkv:
            entry.pipe.unfuse_qkv_projections()
        try:
            entry.lora.apply(entry.pipe, loras)
        finally:
            if fused_qkv:
                entry.pipe.fuse_qkv_projections()

    def preview(self, latents, xl: bool):
        """A small RGB picture of the first image's latents: a linear map at latent size (the page scales it
        up), or TAESD at full size when asked for."""
        import torch
        from PIL import Image

        with torch.no_grad():
            latent = latents[:1]
            if self._taesd is not None:
                rgb = self._taesd.decode(latent.to(self._taesd.dtype)).sample[0].permute(1, 2, 0)
            else:
                coefs = torch.tensor(LATENT_RGB["sdxl" if xl else "sd"], dtype=torch.float32, device=latent.device)
                rgb = torch.einsum("chw,cr->hwr", latent[0].float(), coefs)
            rgb = ((rgb.float().clamp(-1, 1) + 1) * 127.5).to(torch.uint8).cpu().numpy()
        return Image.fromarray(rgb)

    def _load_taesd(self, xl: bool) -> None:
        if not self.speed.tiny_vae_preview or self._taesd is not None:
            return
        try:
            import torch
            from diffusers import AutoencoderTiny

            repo = "madebyollin/taesdxl" if xl else "madebyollin/taesd"
            dtype = torch.float16 if self.device == "cuda" else torch.float32
            self._taesd = AutoencoderTiny.from_pretrained(repo, dtype=dtype).to(self.device)
        except Exception as e:  # previews are a nicety: fall back to the linear map
            log.warning("tiny VAE previews unavailable, using the linear preview: %s", e)

    def generate(
        self,
        params: ImageParams,
        on_step: StepCallback | None = None,
        *,
        on_preview: PreviewCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> ImageResult:
        return self.generate_batch([params], on_step, on_preview=on_preview, cancel=cancel)[0]

    def generate_batch(
        self,
        batch: list[ImageParams],
        on_step: StepCallback | None = None,
        *,
        on_preview: PreviewCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> list[ImageResult]:
        if not batch:
            raise InputError("Nothing to generate: the batch is empty.")
        check_batch(1, len(batch))
        first = batch[0]
        first.check()
        if any(replace(p, seed=0) != replace(first, seed=0) for p in batch):
            raise InputError("The images of one batch must share every parameter but the seed.")
        batch = [replace(p, seed=secrets.randbelow(2**32)) if p.seed == -1 else p for p in batch]
        inputs = read_inputs(first)  # pictures are checked before any model is touched
        import torch

        with self._lock:
            base = self._model(first.model, None)
            refiner = self._model(first.refiner, None, keep=base.name) if first.refiner else None
            self._active = base.name
            first.check(MAX_SIDE.get(base.family, 2048))
            self._check_model_fits(base, first, inputs)
            addons = self._addons(first, base, None)
            self._apply_loras(base, addons.loras)
            self._load_taesd(is_xl(base.family))
            started = time.perf_counter()
            oom = False
            try:
                images = run(self, batch, base, refiner, inputs, addons, on_step, on_preview, cancel)
            except Stop as stop:
                raise Cancelled(str(stop)) from None
            except torch.OutOfMemoryError:
                oom = True  # freed below, outside this block: its traceback still holds the tensors
            except (ValueError, TypeError, RuntimeError) as e:
                raise EngineError(f"Image generation failed: {e}") from e
            if oom:
                self._free_memory()
                raise EngineError(
                    f"Out of memory at {first.width}×{first.height}"
                    f"{f' with a batch of {len(batch)}' if len(batch) > 1 else ''}. "
                    "Try a smaller size or batch, or close other GPU programs."
                )
            seconds = (time.perf_counter() - started) / len(batch)
        return [
            ImageResult(
                image=image,
                params=replace(p, model=base.name),
                model=base.name,
                seconds=seconds,
                model_hash=base.hash,
                refiner_hash=refiner.hash if refiner else "",
                lora_hashes=tuple(lora.hash for lora in addons.loras),
                controlnet_hash=addons.controlnet[2] if addons.controlnet else "",
                upscaler_hash=addons.upscaler.hash if addons.upscaler else "",
            )
            for p, image in zip(batch, images)
        ]

    def _check_model_fits(self, base: _Model, p: ImageParams, inputs: Inputs) -> None:
        if base.family == "sd-upscaler":
            raise InputError(f"{base.name} is a super-resolution model: choose it as the upscaler under Upscale.")
        if base.family == "sdxl-refiner" and inputs.init is None and inputs.job is None:
            raise InputError(f"{base.name} is an SDXL refiner: use it as the refiner, or give it a starting image.")
        if base.inpaint_unet and inputs.job is None:
            raise InputError(
                f"{base.name} is an inpainting model: give it a start image and paint a mask (or outpaint), "
                "or pick another model."
            )

def load_tiny_demo(data_dir: Path, device: str = "cpu", **options) -> DiffusersImageEngine:
    """The engine on the tiny random-weight pipeline, built under ``data_dir`` on first use.

    Other models in ``data_dir/models`` (diffusers folders, .safetensors files) are offered beside it.
    """
    options.setdefault("models_dir", Path(data_dir) / "models")
    return DiffusersImageEngine(ensure_tiny_pipeline(Path(data_dir)), device, display_name=TINY_DEMO_NAME, demo=True, **options)
