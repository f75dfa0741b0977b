"""Making images bigger: latents or pixels for the hi-res fix, Lanczos or a super-resolution model after.

The super-resolution model is a diffusers ``StableDiffusionUpscalePipeline`` (stabilityai's ×4 upscaler
shape) found in the models folder; it is itself a small diffusion run, seeded like the image.
"""

from __future__ import annotations

from engines.base import InputError

SR_STEPS = 20  # the ×4 upscaler's default is 75; 20 keeps its detail at a quarter of the time
SR_MAX_INPUT_SIDE = 1024  # its UNet runs at the input's size: 1024² in, 4096² out is already a lot of memory


def resize_latents(latents, width: int, height: int):
    """Latents stretched to a bigger image's latent size (what A1111 calls the "Latent" upscaler)."""
    import torch.nn.functional as F

    factor = 8  # every supported family's VAE
    return F.interpolate(latents, size=(height // factor, width // factor), mode="bilinear", align_corners=False)


def lanczos(images: list, width: int, height: int) -> list:
    from PIL import Image

    return [im if im.size == (width, height) else im.resize((width, height), Image.Resampling.LANCZOS) for im in images]


def scaled(size: tuple[int, int], factor: float) -> tuple[int, int]:
    return round(size[0] * factor), round(size[1] * factor)


def super_resolve(pipe, images: list, prompt: str, seeds: list[int], factor: float, callback=None) -> list:
    """Each image through the ×4 model, then Lanczos down to ``factor`` when that is less than 4."""
    import torch

    width, height = images[0].size
    if max(width, height) > SR_MAX_INPUT_SIDE:
        raise InputError(
            f"The super-resolution model takes images up to {SR_MAX_INPUT_SIDE} px a side, this one is "
            f"{width}×{height}: use Lanczos, or upscale a smaller image."
        )
    out = pipe(
        prompt=[prompt] * len(images),
        image=images,
        num_inference_steps=SR_STEPS,
        guidance_scale=0.0,  # no classifier-free guidance: half the work, and the low-res image guides enough
        generator=[torch.Generator(device="cpu").manual_seed(seed) for seed in seeds],
        callback=callback,
    ).images
    target = scaled((width, height), factor)
    return lanczos(out, *target)
