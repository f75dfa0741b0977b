"""Image benchmark: the app's end-to-end latency through its API vs raw diffusers, same pipeline and settings.

    python bench/image.py [--runs 5] [--only base|addons] [--addons lora,inpaint,…] [--addon-size 256]

Prints JSON: per configuration, the median seconds per image through the running app's ``/generate`` API
(request, queue, generation, PNG with recipe, answer) and for the same pipeline called directly, and their
ratio. The app is timed through gradio_client ("app") and through the queue's event stream read directly
("app_sse", what a browser does); the page's own Generate, with step previews and the gallery, is timed on
the event stream too ("page_sse"). gradio_client's own floor, the time it takes to see the answer of an
endpoint that does nothing, is measured too ("client_floor"). Runs alternate raw/app so drift on a shared
machine hits both alike. The raw side does what a script needs for the same result: it saves its image as a
PNG (PIL's defaults, no recipe), and it runs at the priority the app gives its engines' jobs (a kept thread
lowered as ``engines.priority`` lowers them): on a shared machine a nice-0 raw run beside a nice-15 app run
measures the scheduler, not the app. On CPU it uses the tiny demo pipeline; with CUDA it adds SD-Turbo's architecture
with random weights (same layer shapes as stabilityai/sd-turbo, so the same cost, no download).

"addons" times each path of issue #14 (LoRA, inpainting, outpainting, hi-res fix, ControlNet, Lanczos and
super-resolution upscaling) on the event stream against the same work done with diffusers directly, with
tiny add-ons built like the demo pipeline. ``--only addons`` runs just those; ``--addon-size 512`` runs them at
512² (SD 1.5's own size) instead of 256², where a run of 0.4 s makes the app's fixed cost per request
(the event stream's round trip, the PNG with its recipe: 15-30 ms) 4-7% of it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import client_floor, find_event, machine, running_app, sse_call, summary  # noqa: E402
from engines.image.diffusion import SAMPLERS  # noqa: E402
from engines.priority import load_torch_with_sleeping_waits, run_as_job  # noqa: E402
from engines.image.tiny_pipeline import _scheduler, _write_tokenizer_files, ensure_tiny_pipeline  # noqa: E402

PROMPT = "a lighthouse on a cliff at dusk, oil painting"
CPU_CONFIGS = [
    {"name": "tiny 256² 8 steps Euler", "width": 256, "height": 256, "steps": 8, "guidance": 7.0, "sampler": "Euler"},
    {"name": "tiny 512² 20 steps DPM++ 2M", "width": 512, "height": 512, "steps": 20, "guidance": 7.0, "sampler": "DPM++ 2M"},
]
GPU_CONFIGS = [
    {"name": "SD-Turbo arch 512² 1 step", "width": 512, "height": 512, "steps": 1, "guidance": 0.0, "sampler": "Euler a"},
    {"name": "SD-Turbo arch 512² 4 steps", "width": 512, "height": 512, "steps": 4, "guidance": 0.0, "sampler": "Euler a"},
]


def sd_turbo_random(folder: Path) -> Path:
    """SD-Turbo's (SD 2.1's) architecture with random weights, saved as a diffusers folder."""
    import torch
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = _write_tokenizer_files(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", model_max_length=77)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
        block_out_channels=(320, 640, 1280, 1280),
    )  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4, sample_size=768,
    )  # fmt: skip
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
        projection_dim=512, hidden_act="gelu", max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))  # fmt: skip
    pipe = StableDiffusionPipeline(vae, text, tokenizer, unet, _scheduler(), None, None, requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def raw_pipeline(folder: Path, device: str):
    import torch
    from diffusers import DiffusionPipeline

    dtype = torch.float16 if device == "cuda" else torch.float32
    pipe = DiffusionPipeline.from_pretrained(folder, dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def lowered(work, *args):
    """``work(*args)`` on a kept lowered job thread, where the app runs its engines' jobs; its result."""
    return run_as_job(lambda: work(*args), "bench-raw")


RAW_PNG = Path(tempfile.gettempdir()) / f"melange-bench-raw-{os.getpid()}.png"


def save_raw(image) -> None:
    """What a script does with its image: write it as a PNG (the app writes one too, with its recipe)."""
    image.save(RAW_PNG)


def raw_run(pipe, config: dict, seed: int) -> float:
    return lowered(_raw_run, pipe, config, seed)


def _raw_run(pipe, config: dict, seed: int) -> float:
    import diffusers
    import torch

    class_name, options = SAMPLERS[config["sampler"]]
    started = time.perf_counter()
    pipe.scheduler = getattr(diffusers, class_name).from_config(pipe.scheduler.config, **options)
    image = pipe(
        prompt=PROMPT, width=config["width"], height=config["height"], num_inference_steps=config["steps"],
        guidance_scale=config["guidance"], generator=torch.Generator("cpu").manual_seed(seed),
    ).images[0]  # fmt: skip
    save_raw(image)  # a PIL image in hand: any device work is done
    return time.perf_counter() - started


def controls(config: dict, seed: int) -> list:
    return [
        "", PROMPT, "", config["width"], config["height"], config["steps"], config["guidance"], config["sampler"],
        seed, "fixed", 1, 1, "None", 0.8, None, 0.75,
    ]  # fmt: skip


def app_run(client, config: dict, seed: int) -> float:
    started = time.perf_counter()
    files, _ = client.predict(*controls(config, seed), api_name="/generate")
    assert len(files) == 1
    return time.perf_counter() - started


def app_sse_run(http, fn_index: int, session: str, config: dict, seed: int) -> float:
    # The event stream takes every input (gradio_client fills the add-ons' defaults; a raw join does not).
    data = addon_controls({**config, "app": {}}, seed, {})
    started = time.perf_counter()
    sse_call(http, fn_index, data, session)
    return time.perf_counter() - started


def bench(folder: Path, configs: list[dict], device: str, runs: int, app_args: list[str]) -> list[dict]:
    import httpx
    from gradio_client import Client

    pipe = lowered(raw_pipeline, folder, device)  # see main: every raw torch call on the one job thread
    out = []
    with running_app("--device", device, *app_args) as url, httpx.Client(base_url=url, timeout=600) as http:
        client = Client(url, verbose=False, download_files=False)  # time the answer, not copying files back
        fn_index, session = find_event(url, api_name="generate")[0], uuid.uuid4().hex  # one session, like an open page
        page_index = find_event(url, elem_id="image-generate")[0]  # the page's own Generate: previews, gallery
        for config in configs:
            app_run(client, config, 0), app_sse_run(http, fn_index, session, config, 0)  # warm-up: load, allocate
            raw_run(pipe, config, 0)
            raw, app, sse, page = [], [], [], []
            for i in range(runs):
                raw.append(raw_run(pipe, config, i + 1))
                app.append(app_run(client, config, i + 1))
                sse.append(app_sse_run(http, fn_index, session, config, i + 1))
                page.append(app_sse_run(http, page_index, session, config, i + 1))
            r, a, e, g = summary(raw), summary(app), summary(sse), summary(page)
            out.append({
                **config, "raw_s": r, "app_s": a, "app_sse_s": e, "page_sse_s": g,
                "speed_page_sse_over_raw": round(r["median"] / g["median"], 3),
                "ratio_app_to_raw": round(a["median"] / r["median"], 3),  # time: lower is better
                "ratio_app_sse_to_raw": round(e["median"] / r["median"], 3),
                "speed_app_over_raw": round(r["median"] / a["median"], 3),  # speed: the "≥ 0.95× raw"
                "speed_app_sse_over_raw": round(r["median"] / e["median"], 3),
            })  # fmt: skip
    return out


# ---------------------------------------------------------------- the add-ons (issue #14), each against raw diffusers

# 256², 12 steps: each path's overhead shows against a run short enough to repeat on a shared 2-core machine.
BASE = {"width": 256, "height": 256, "steps": 12, "guidance": 7.0, "sampler": "DPM++ 2M"}
ADDON_CONFIGS = [
    {"name": "LoRA ×0.8 256² 12 steps", **BASE, "kind": "lora", "app": {"lora_1": "bench-lora.safetensors", "lora_weight_1": 0.8}},
    {"name": "inpaint 256² 12 steps", **BASE, "kind": "inpaint", "app": {"init_image": "start", "mask": "mask", "strength": 1.0}},
    {"name": "outpaint 256²+64 right", **BASE, "kind": "outpaint",
     "app": {"init_image": "start", "outpaint": ["right"], "outpaint_pixels": 64, "strength": 1.0}},
    {"name": "hi-res fix 128²→256² latent", **BASE, "width": 128, "height": 128, "kind": "hires",
     "app": {"hires_scale": 2.0, "hires_upscaler": "Latent", "hires_strength": 0.5}},
    {"name": "ControlNet canny 256² 12 steps", **BASE, "kind": "controlnet",
     "app": {"controlnet": "bench-controlnet", "control_image": "start", "control_preprocessor": "canny"}},
    {"name": "upscale ×2 Lanczos 256²→512²", **BASE, "kind": "lanczos", "app": {"upscale": 2.0}},
    {"name": "upscale ×4 SR model 64²→256²", **BASE, "width": 64, "height": 64, "kind": "sr",
     "app": {"upscale": 4.0, "upscaler": "melange-tiny-upscaler-x4"}},
]  # fmt: skip


def addon_configs(size: int) -> list[dict]:
    """The add-on configs at ``size``² (the hi-res fix from half that; the ×4 upscaler always from 64²)."""
    if size == 256:
        return ADDON_CONFIGS
    out = []
    for config in ADDON_CONFIGS:
        config = dict(config)
        if config["kind"] == "hires":
            config.update(width=size // 2, height=size // 2, name=f"hi-res fix {size // 2}²→{size}² latent")
        elif config["kind"] == "lanczos":
            config.update(width=size, height=size, name=f"upscale ×2 Lanczos {size}²→{2 * size}²")
        elif config["kind"] != "sr":
            config.update(width=size, height=size, name=config["name"].replace("256²", f"{size}²"))
        out.append(config)
    return out


def addon_assets(folder: Path, size: int = 256) -> dict:
    """What the add-on runs need, built like the tiny pipeline: a LoRA, a ControlNet, the ×4 upscaler in a
    models folder the app is pointed at, and a start image and mask at ``size``²."""
    from PIL import Image

    from engines.image.tiny_pipeline import build_tiny_controlnet, build_tiny_lora, build_tiny_pipeline

    models = folder / "models"
    models.mkdir(parents=True)
    build_tiny_lora(models / "bench-lora.safetensors")
    build_tiny_controlnet(models / "bench-controlnet")
    build_tiny_pipeline(models / "melange-tiny-upscaler-x4", "sd-upscaler")
    start = Image.radial_gradient("L").resize((size, size)).convert("RGB")
    start.save(folder / "start.png")
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (size // 4, size // 4, size * 3 // 4, size * 3 // 4))
    mask.save(folder / "mask.png")
    return {"models": models, "start": folder / "start.png", "mask": folder / "mask.png"}


def raw_addon_pipes(folder: Path, assets: dict) -> dict:
    """Raw diffusers pipelines for each add-on, set up once as a script would."""
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image, ControlNetModel, DiffusionPipeline

    pipe = raw_pipeline(folder, "cpu")
    lora = raw_pipeline(folder, "cpu")
    lora.load_lora_weights(str(assets["models"] / "bench-lora.safetensors"), adapter_name="bench")
    lora.set_adapters(["bench"], [0.8])
    lora.fuse_lora(adapter_names=["bench"])
    controlnet = ControlNetModel.from_pretrained(assets["models"] / "bench-controlnet")
    pipes = {
        "plain": pipe,
        "lora": lora,
        "inpaint": AutoPipelineForInpainting.from_pipe(pipe),
        "img2img": AutoPipelineForImage2Image.from_pipe(pipe),
        "controlnet": AutoPipelineForText2Image.from_pipe(pipe, controlnet=controlnet),
        "sr": DiffusionPipeline.from_pretrained(assets["models"] / "melange-tiny-upscaler-x4"),
    }
    for p in pipes.values():
        p.set_progress_bar_config(disable=True)
    return pipes


def raw_addon_run(pipes: dict, assets: dict, config: dict, seed: int) -> float:
    return lowered(_raw_addon_run, pipes, assets, config, seed)


def _raw_addon_run(pipes: dict, assets: dict, config: dict, seed: int) -> float:
    """The same request done with diffusers directly: the pipeline calls, the few PIL/OpenCV steps around
    them, and the PNG written."""
    import cv2
    import diffusers
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image, ImageFilter

    class_name, options = SAMPLERS[config["sampler"]]
    kind, size = config["kind"], (config["width"], config["height"])
    common = dict(prompt=PROMPT, num_inference_steps=config["steps"], guidance_scale=config["guidance"])

    def call(pipe, **kwargs):
        pipe.scheduler = getattr(diffusers, class_name).from_config(pipe.scheduler.config, **options)
        return pipe(**common, generator=torch.Generator("cpu").manual_seed(seed), **kwargs).images

    started = time.perf_counter()
    if kind in ("inpaint", "outpaint"):
        start = Image.open(assets["start"]).convert("RGB")
        mask = Image.open(assets["mask"]).convert("L")
        if kind == "outpaint":
            width, height = start.size
            start = Image.fromarray(np.pad(np.asarray(start), ((0, 0), (0, 64), (0, 0)), mode="edge"))
            mask = Image.new("L", start.size, 0)
            mask.paste(255, (width - 4, 0, width + 64, height))
        mask = mask.filter(ImageFilter.GaussianBlur(4))
        out = call(pipes["inpaint"], image=start, mask_image=mask, strength=1.0, width=start.width, height=start.height)
        image = Image.composite(out[0], start, mask)
    elif kind == "hires":
        latents = call(pipes["plain"], width=size[0], height=size[1], output_type="latent")
        bigger = F.interpolate(latents, size=(size[1] // 4, size[0] // 4), mode="bilinear", align_corners=False)
        image = call(pipes["img2img"], image=bigger, strength=0.5)[0]
    elif kind == "controlnet":
        start = Image.open(assets["start"]).convert("RGB")
        edges = cv2.Canny(np.asarray(start), 100, 200)
        image = call(pipes["controlnet"], image=Image.fromarray(np.stack([edges] * 3, -1)), width=size[0], height=size[1])[0]
    elif kind == "sr":
        small = call(pipes["plain"], width=size[0], height=size[1])
        image = pipes["sr"](
            prompt=[PROMPT], image=small, num_inference_steps=20, guidance_scale=0.0, generator=[torch.Generator("cpu").manual_seed(seed)]
        ).images[0]
    else:
        image = call(pipes["lora" if kind == "lora" else "plain"], width=size[0], height=size[1])[0]
        if kind == "lanczos":
            image = image.resize((size[0] * 2, size[1] * 2), Image.Resampling.LANCZOS)
    save_raw(image)
    return time.perf_counter() - started


def addon_controls(config: dict, seed: int, uploaded: dict) -> list:
    """The /generate event's inputs in order: the panel's defaults, the config's sizes and its add-on values."""
    import inspect

    from ui.image import read_controls

    values = {n: p.default for n, p in inspect.signature(read_controls).parameters.items() if p.default is not inspect.Parameter.empty}
    values.update(dict(zip(
        ["model", "prompt", "negative_prompt", "width", "height", "steps", "guidance", "sampler", "seed", "seed_mode",
         "batch_count", "batch_size", "refiner", "refiner_start", "init_image", "strength"],
        controls(config, seed),
    )))  # fmt: skip
    values.update({k: uploaded.get(v, v) if isinstance(v, str) else v for k, v in config["app"].items()})
    return [values[n] for n in inspect.signature(read_controls).parameters]


def bench_addons(folder: Path, runs: int, kinds: list[str] | None = None, size: int = 256) -> list[dict]:
    import httpx

    assets = lowered(addon_assets, folder.parent / "addons", size)
    pipes = lowered(raw_addon_pipes, folder, assets)
    out = []
    with running_app("--device", "cpu", "--models-dir", str(assets["models"])) as url, httpx.Client(base_url=url, timeout=600) as http:
        fn_index, session = find_event(url, api_name="generate")[0], uuid.uuid4().hex
        uploaded = {}
        for name in ("start", "mask"):  # uploaded once, as a page does before its runs
            with open(assets[name], "rb") as f:
                path = http.post("/gradio_api/upload", files={"files": (f"{name}.png", f, "image/png")}).json()[0]
            uploaded[name] = {"path": path, "orig_name": f"{name}.png", "meta": {"_type": "gradio.FileData"}}
        for config in [c for c in addon_configs(size) if not kinds or c["kind"] in kinds]:
            print(f"bench: {config['name']}", file=sys.stderr, flush=True)
            sse_call(http, fn_index, addon_controls(config, 0, uploaded), session)  # warm-up: load, allocate
            raw_addon_run(pipes, assets, config, 0)
            raw, sse = [], []
            for i in range(runs):
                raw.append(raw_addon_run(pipes, assets, config, i + 1))
                started = time.perf_counter()
                sse_call(http, fn_index, addon_controls(config, i + 1, uploaded), session)
                sse.append(time.perf_counter() - started)
            r, e = summary(raw), summary(sse)
            out.append({
                "name": config["name"], "raw_s": r, "app_sse_s": e,
                "speed_app_sse_over_raw": round(r["median"] / e["median"], 3),
            })  # fmt: skip
            print(f"bench: {json.dumps(out[-1])}", file=sys.stderr, flush=True)  # a long run's figures so far
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", choices=["base", "addons"], help="run one half only")
    parser.add_argument("--addons", help="the add-on paths to time, by kind (lora,inpaint,outpaint,hires,controlnet,lanczos,sr); all by default")
    parser.add_argument("--addon-size", type=int, default=256, help="the add-on paths' image side (the hi-res fix starts from half; 512: SD 1.5's own size)")
    args = parser.parse_args()
    # The raw side's torch waits for its threads as the app's does (a short spin, then sleep: see
    # engines.priority.load_torch_with_sleeping_waits), so the ratio is the app's own cost.
    load_torch_with_sleeping_waits()
    import torch

    results = {"machine": machine(), "prompt": PROMPT, "configs": [], "omp_spin_count": "torch and llama.cpp: engines.priority.OPENMP_SPIN_COUNT, both sides"}
    with tempfile.TemporaryDirectory(prefix="melange-image-bench-") as tmp:
        # The app builds the same tiny pipeline (same code, same seed, same bytes) in its own data folder.
        # Every raw torch call runs on the one kept job thread, as the app's jobs do: each thread that calls torch
        # keeps an OpenMP team, and with more team threads than cores libgomp cuts its spin before sleeping to
        # 100 (engines.priority), which made the raw side 25-45% slower than the app's.
        tiny = lowered(ensure_tiny_pipeline, Path(tmp))
        if args.only != "addons":
            results["configs"] += bench(tiny, CPU_CONFIGS, "cpu", args.runs, [])
            results["client_floor_s"] = client_floor(args.runs * 4)
        if args.only != "base":
            results["addons"] = bench_addons(tiny, args.runs, args.addons.split(",") if args.addons else None, args.addon_size)
        if torch.cuda.is_available() and args.only != "addons":
            results["gpu"] = torch.cuda.get_device_name()
            turbo = lowered(sd_turbo_random, Path(tmp) / "sd-turbo-random")
            results["configs"] += bench(turbo, GPU_CONFIGS, "cuda", args.runs, ["--image-model", str(turbo)])
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
