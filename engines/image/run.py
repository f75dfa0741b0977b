"""One generation run's passes over the diffusers pipelines, its inputs, and its step reporting.

The engine (image/diffusion.py) loads models and add-ons and holds the lock; this runs what one request
asks for, pass after pass, and counts the steps of them all for one progress bar.
"""

from __future__ import annotations

from dataclasses import dataclass

from engines.image import inpaint as image_inpaint, upscale as image_upscale
from engines.base import ImageParams, hires_size
from engines.image.control import control_image
from engines.image.inpaint import InpaintJob
from engines.image.lora import ResolvedLora
from engines.image.models import is_xl


@dataclass(frozen=True)
class Inputs:
    """A request's pictures, read and checked before the model is touched."""

    init: object | None = None  # img2img start image at width×height
    job: InpaintJob | None = None
    control: object | None = None  # the preprocessed control image at the size drawn


@dataclass(frozen=True)
class Addons:
    loras: list[ResolvedLora]
    controlnet: tuple | None  # (name, model, hash)
    upscaler: object | None  # a super-resolution pipeline; None: Lanczos or no upscale


class Stop(Exception):
    """Raised from a step callback to stop the pipeline; the engine turns it into Cancelled."""


def read_inputs(p: ImageParams) -> Inputs:
    """The start image, the inpainting canvas and mask, the control image: read and checked, no model needed."""
    init = job = None
    if p.inpainting:
        job = image_inpaint.prepare(p)
    elif p.init_image:
        init = open_image(p.init_image, p.width, p.height)
    control = None
    if p.controlnet:
        # An "only masked" inpaint crops the control image with the canvas: it is made at the canvas's size.
        size = (p.width, p.height) if job is None else job.image.size
        control = control_image(p, size)
    return Inputs(init, job, control)


def open_image(path: str, width: int, height: int):
    """The img2img starting image as RGB at the requested size; anything PIL cannot read is an InputError."""
    from PIL import Image

    image = image_inpaint.read_image(path, "start image").convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return image


def run(engine, batch, base, refiner, inputs: Inputs, addons: Addons, on_step, on_preview, cancel) -> list:
    """Every pass of one batch, in order: the first (text, image, inpaint; with a ControlNet or not), then the
    refiner or the hi-res fix, the inpaint overlay, the upscale. ``engine`` gives the pipelines and schedulers."""
    import torch

    p = batch[0]
    n = len(batch)
    seeds = [q.seed for q in batch]
    latent_handoff = refiner is not None and is_xl(base.family) and is_xl(refiner.family)
    hires = p.hires_scale > 1
    # Steps each phase will run, for an honest progress total (the pipeline tells the exact count).
    base_steps = int(p.steps * p.strength) if inputs.init is not None or inputs.job is not None else p.steps
    later = []
    if latent_handoff:
        later.append(p.steps - round(p.steps * p.refiner_start))
    elif refiner is not None:
        later.append(int(p.steps * (1 - p.refiner_start)))
    if hires:
        later.append(int((p.hires_steps or p.steps) * p.hires_strength))
    if addons.upscaler is not None:
        later.append(image_upscale.SR_STEPS)
    steps = StepReporter(on_step, on_preview, cancel, later, engine.preview)

    def call(entry, pipe, **kwargs):
        pipe.scheduler = engine.scheduler(entry, p.sampler)  # fresh: schedulers keep per-run state
        steps.xl = is_xl(entry.family)
        kwargs.setdefault("num_inference_steps", p.steps)
        out = pipe(
            prompt=[p.prompt] * n,
            negative_prompt=[p.negative_prompt] * n if p.negative_prompt else None,
            guidance_scale=p.guidance,
            # Seeded on the CPU so a seed gives the same image on every device; one per image
            # so each image of a batch can be made again alone from its own seed.
            generator=[torch.Generator(device="cpu").manual_seed(seed) for seed in seeds],
            callback_on_step_end=steps.callback,
            **kwargs,
        ).images
        steps.next_phase()
        return out

    control = addons.controlnet
    control_kwargs = {}
    if control is not None:
        control_kwargs = {
            "controlnet_conditioning_scale": p.control_scale,
            "control_guidance_start": p.control_start,
            "control_guidance_end": p.control_end,
        }
    if inputs.job is not None:
        job = inputs.job
        first_pipe = engine.pipeline(base, "inpaint", control)
        first_kwargs = {
            "image": job.image, "mask_image": job.mask, "strength": p.strength, "width": job.width,
            "height": job.height, "padding_mask_crop": job.padding,
        }  # fmt: skip
        if control is not None:
            first_kwargs["control_image"] = inputs.control
    elif inputs.init is not None:
        first_pipe = engine.pipeline(base, "img2img", control)
        first_kwargs = {"image": [inputs.init] * n, "strength": p.strength}
        if control is not None:
            first_kwargs["control_image"] = inputs.control
    else:
        first_pipe = engine.pipeline(base, "txt2img", control)
        first_kwargs = {"width": p.width, "height": p.height}
        if control is not None:
            first_kwargs["image"] = inputs.control
    first_kwargs.update(control_kwargs)
    steps.expect(base_steps)

    if latent_handoff:
        latents = call(base, first_pipe, denoising_end=p.refiner_start, output_type="latent", **first_kwargs)
        images = call(refiner, engine.img2img(refiner), image=latents, denoising_start=p.refiner_start)
    elif hires:
        width, height = hires_size(p.width, p.height, p.hires_scale)
        if p.hires_upscaler == "Latent":
            latents = call(base, first_pipe, output_type="latent", **first_kwargs)
            bigger = image_upscale.resize_latents(latents, width, height)
        else:
            bigger = image_upscale.lanczos(call(base, first_pipe, **first_kwargs), width, height)
        hires_steps = p.hires_steps or p.steps
        images = call(base, engine.img2img(base), image=bigger, strength=p.hires_strength, num_inference_steps=hires_steps)
    else:
        images = call(base, first_pipe, **first_kwargs)
        if refiner is not None:
            images = call(refiner, engine.img2img(refiner), image=images, strength=1 - p.refiner_start)
    if inputs.job is not None and inputs.job.padding is None:
        images = [image_inpaint.overlay(inputs.job.image, im, inputs.job.mask) for im in images]
    if p.upscale > 1:
        if addons.upscaler is None:
            images = image_upscale.lanczos(images, *image_upscale.scaled(images[0].size, p.upscale))
        else:
            steps.xl = False
            images = image_upscale.super_resolve(addons.upscaler.pipe, images, p.prompt, seeds, p.upscale, steps.legacy)
    return images


class StepReporter:
    """Counts steps across the phases of one run, sends previews, and stops at the next step on Cancel."""

    def __init__(self, on_step, on_preview, cancel, later: list[int], preview) -> None:
        self.on_step, self.on_preview, self.cancel, self.later, self.preview = on_step, on_preview, cancel, later, preview
        self.done = 0  # steps finished in earlier phases
        self.expected = 0
        self.xl = False

    def expect(self, steps: int) -> None:
        self.expected = steps

    def next_phase(self) -> None:
        self.done += self.expected
        self.expected = self.later.pop(0) if self.later else 0

    def callback(self, pipeline, step: int, timestep, callback_kwargs: dict) -> dict:
        self.expected = getattr(pipeline, "num_timesteps", None) or self.expected
        done, total = self.done + step + 1, self.done + self.expected + sum(self.later)
        if self.on_step:
            self.on_step(done, total)
        if self.on_preview and "latents" in callback_kwargs:
            latents, xl = callback_kwargs["latents"], self.xl
            self.on_preview(lambda: self.preview(latents, xl))
        if self.cancel is not None and self.cancel.is_set() and done < total:
            raise Stop(f"Cancelled after step {done} of {total}.")
        return callback_kwargs

    def legacy(self, step: int, timestep, latents) -> None:
        """The same, for pipelines that still take the old ``callback(step, timestep, latents)``."""
        self.callback(None, step, timestep, {"latents": latents})
