"""The status strip: device, memory the models use, what is resident, and an Unload button per engine."""

from __future__ import annotations

import gradio as gr

from engines.base import Engine
from engines.residency import ResidencyManager
from ui.access import principal_of, require_host
from ui.presets import Profile

REFRESH_SECONDS = 5


def human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def memory_line(managers: dict[str, ResidencyManager]) -> str:
    parts = []
    for device, manager in managers.items():
        status = manager.status()
        resident = ", ".join(f"{r.model} ({human(r.size)})" for r in status.residents) or "no model loaded"
        parts.append(f"**{device.upper()}** · models use {human(status.used)} of a {human(status.budget)} budget · {resident}")
    return "  \n".join(parts)


def profile_text(profile: Profile, gpu_bytes: int | None) -> str:
    found = f"a GPU with {gpu_bytes / 2**30:.0f} GB" if gpu_bytes else "no CUDA GPU"
    return (
        f"Melange found {found}. **{profile.name}** fits resident at once:\n\n"
        f"- Chat: {profile.chat}\n- Image: {profile.image}\n- Transcribe: {profile.speech}\n\n"
        "Pick or download them in each panel's model picker; the memory manager unloads what does not fit."
    )


def build(
    engines: tuple[Engine, ...],
    managers: dict[str, ResidencyManager],
    profile: Profile,
    gpu_bytes: int | None,
    first_start: bool,
    blocks: gr.Blocks | None = None,
) -> None:
    """The strip above the tabs; the Unload buttons are the host's (``blocks``: to hide them from guests)."""
    with gr.Accordion("Suggested setup for this machine", open=first_start, elem_id="profile") as suggested:
        gr.Markdown(profile_text(profile, gpu_bytes))
    buttons = []
    with gr.Row(elem_id="status-strip"):
        line = gr.Markdown(lambda: memory_line(managers), elem_id="memory-status")
        for engine in engines:

            def unload(request: gr.Request, engine=engine):
                require_host(principal_of(request), "unload models")
                engine.unload()
                gr.Info(f"Unloaded {engine.status().model}.")
                return memory_line(managers)

            button = gr.Button(f"Unload {engine.kind}", size="sm", scale=0, min_width=110, elem_id=f"unload-{engine.kind}")
            button.click(unload, None, line, concurrency_id=engine.kind, api_visibility="private")
            buttons.append(button)
    gr.Timer(REFRESH_SECONDS).tick(lambda: memory_line(managers), None, line, show_progress="hidden", api_visibility="private")
    if blocks is not None:

        def on_load(request: gr.Request):
            host_only = gr.update(visible=principal_of(request).is_host)
            return [host_only] * (len(buttons) + 1)

        blocks.load(on_load, None, [*buttons, suggested], api_visibility="private")
