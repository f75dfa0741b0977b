"""Image benchmark: the app's end-to-end latency through its API vs raw diffusers, same pipeline and settings.

    python bench/image.py [--runs 5]

Prints JSON: per configuration, the median seconds per image through the running app's ``/generate`` API
(request, queue, generation, PNG with recipe, answer) and for the same pipeline called directly, and their
ratio. The app is timed through gradio_client ("app") and through the queue's event stream read directly
("app_sse", what a browser does); the page's own Generate, with step previews and the gallery, is timed on
the event stream too ("page_sse"). gradio_client's own floor, the time it takes to see the answer of an
endpoint that does nothing, is measured too ("client_floor"). Runs alternate raw/app so drift on a shared
machine hits both alike. On CPU it uses the tiny demo pipeline; with CUDA it adds SD-Turbo's architecture
with random weights (same layer shapes as stabilityai/sd-turbo, so the same cost, no download).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import client_floor, find_event, machine, running_app, sse_call, summary  # noqa: E402
from engines.image_diffusers import SAMPLERS  # noqa: E402
from engines.tiny_pipeline import _scheduler, _write_tokenizer_files, ensure_tiny_pipeline  # noqa: E402

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


def raw_run(pipe, config: dict, seed: int) -> float:
    import diffusers
    import torch

    class_name, options = SAMPLERS[config["sampler"]]
    started = time.perf_counter()
    pipe.scheduler = getattr(diffusers, class_name).from_config(pipe.scheduler.config, **options)
    pipe(
        prompt=PROMPT, width=config["width"], height=config["height"], num_inference_steps=config["steps"],
        guidance_scale=config["guidance"], generator=torch.Generator("cpu").manual_seed(seed),
    ).images[0]  # fmt: skip
    if pipe.device.type == "cuda":
        torch.cuda.synchronize()
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
    started = time.perf_counter()
    sse_call(http, fn_index, controls(config, seed), session)
    return time.perf_counter() - started


def bench(folder: Path, configs: list[dict], device: str, runs: int, app_args: list[str]) -> list[dict]:
    import httpx
    from gradio_client import Client

    pipe = raw_pipeline(folder, device)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    import torch

    results = {"machine": machine(), "prompt": PROMPT, "configs": []}
    with tempfile.TemporaryDirectory(prefix="melange-image-bench-") as tmp:
        # The app builds the same tiny pipeline (same code, same seed, same bytes) in its own data folder.
        tiny = ensure_tiny_pipeline(Path(tmp))
        results["configs"] += bench(tiny, CPU_CONFIGS, "cpu", args.runs, [])
        results["client_floor_s"] = client_floor(args.runs * 4)
        if torch.cuda.is_available():
            results["gpu"] = torch.cuda.get_device_name()
            turbo = sd_turbo_random(Path(tmp) / "sd-turbo-random")
            results["configs"] += bench(turbo, GPU_CONFIGS, "cuda", args.runs, ["--image-model", str(turbo)])
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
