"""Image panel: a prompt, steps and seed make an image; its PNG keeps the recipe."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from engines.base import ImageEngine, ImageParams
from engines.recipe import save_png
from ui.common import ensure_loaded, model_line, user_errors
from ui.presets import ImagePreset

DEMO_NOTICE = (
    "**Demo pipeline.** The active image model is Melange's tiny built-in pipeline with random weights: "
    "it exercises the whole path offline but draws abstract noise, not your prompt. "
    "Start with `--image-model` pointing at a diffusers folder, a `.safetensors` checkpoint or a "
    "Hugging Face repo id for real images."
)


def generate(
    engine: ImageEngine,
    images_dir: Path,
    prompt: str,
    negative_prompt: str,
    steps: float,
    guidance: float,
    seed: float | None,
    width: float,
    height: float,
    sampler: str,
    progress: gr.Progress = gr.Progress(),
) -> tuple[str, str]:
    if seed is None or float(seed) != int(seed):
        raise gr.Error("The seed must be a whole number (-1 for a random one).", title="Check your input")
    params = ImageParams(
        prompt=(prompt or "").strip(),
        negative_prompt=(negative_prompt or "").strip(),
        width=int(width),
        height=int(height),
        steps=int(steps),
        guidance=float(guidance),
        seed=int(seed),
        sampler=sampler,
    )
    with user_errors():
        params.check()
    ensure_loaded(engine, progress)

    def on_step(step: int, total: int) -> None:
        progress(step / total, desc=f"Step {step}/{total}")

    with user_errors():
        result = engine.generate(params, on_step=on_step)
    path = save_png(result, images_dir)
    used = result.params
    info = (
        f"Seed {used.seed} · {used.steps} steps · {used.sampler} · CFG {used.guidance} · "
        f"{used.width}×{used.height} · {result.seconds:.2f} s · saved as `{path.name}`"
    )
    return str(path), info


def build(engine: ImageEngine, presets: list[ImagePreset], images_dir: Path) -> None:
    preset = presets[0]
    if engine.status().demo:
        gr.Markdown(DEMO_NOTICE, elem_id="image-demo-notice")
    model_info = gr.Markdown(lambda: model_line(engine))
    with gr.Row():
        with gr.Column(scale=2):
            prompt = gr.Textbox(label="Prompt", lines=3, elem_id="image-prompt")
            negative = gr.Textbox(label="Negative prompt", lines=1)
            with gr.Row():
                steps = gr.Slider(1, 150, value=preset.steps, step=1, label="Steps", elem_id="image-steps")
                guidance = gr.Slider(0.0, 30.0, value=preset.guidance, step=0.5, label="Guidance (CFG)")
            with gr.Row():
                width = gr.Slider(64, 2048, value=preset.width, step=8, label="Width")
                height = gr.Slider(64, 2048, value=preset.height, step=8, label="Height")
            with gr.Row():
                seed = gr.Number(value=-1, precision=None, label="Seed (-1: random)", elem_id="image-seed")
                sampler = gr.Dropdown(list(engine.samplers), value=preset.sampler, label="Sampler")
            run = gr.Button("Generate", variant="primary", elem_id="image-generate")
        with gr.Column(scale=3):
            image = gr.Image(label="Result", type="filepath", format="png", elem_id="image-result", interactive=False)
            info = gr.Markdown(elem_id="image-info")

    def handler(*args, progress=gr.Progress()):
        return generate(engine, images_dir, *args, progress=progress)

    inputs = [prompt, negative, steps, guidance, seed, width, height, sampler]
    for trigger in (run.click, prompt.submit):
        trigger(handler, inputs, [image, info], concurrency_id="image").then(
            lambda: model_line(engine), None, model_info
        )
