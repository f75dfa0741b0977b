"""First run, as in DiffusionBee and Draw Things: one-click downloads of the image models suggested for this
machine, with their size and licence, instead of asking for a repo id.

Which models: the repo ids the machine's profile names (``presets/profiles/``); what each is: the data
files in ``presets/image/downloads/``. The demo pipeline stays the offline fallback.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import gradio as gr
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engines.image.models import download
from ui.access import principal_of, require_host
from ui.common import progress_callback, user_errors
from ui.presets import PRESETS_DIR, PresetError, Profile

CATALOG_DIR = PRESETS_DIR / "image" / "downloads"
_REPO = re.compile(r"\b[A-Za-z0-9][\w.-]*/[\w.-]*[\w]")


class Downloadable(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    repo: str = Field(pattern=r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
    title: str
    gb_fp16: float = Field(gt=0)
    gb_fp32: float = Field(gt=0)
    licence: str
    note: str = ""


def load_catalog(folder: Path = CATALOG_DIR) -> dict[str, Downloadable]:
    catalog = {}
    for file in sorted(folder.glob("*.toml")):
        try:
            item = Downloadable.model_validate(tomllib.loads(file.read_text(encoding="utf-8")))
        except (tomllib.TOMLDecodeError, ValidationError) as e:
            raise PresetError(f"Invalid download entry {file}: {e}") from e
        catalog[item.repo] = item
    return catalog


def suggested(profile: Profile | None, catalog: dict[str, Downloadable]) -> list[Downloadable]:
    """The catalogue's models that the profile names, in its order."""
    if profile is None:
        return []
    return [catalog[repo] for repo in dict.fromkeys(_REPO.findall(profile.image)) if repo in catalog]


def size_text(item: Downloadable, device: str) -> str:
    return f"{item.gb_fp16 if device == 'cuda' else item.gb_fp32:.1f} GB"


def table(items: list[Downloadable], device: str, have: set[str]) -> str:
    """One line per model: what it is, its download size on this machine, its licence (a list: the column is narrow)."""
    return "\n".join(
        f"- **{item.title}** (`{item.repo}`) · {size_text(item, device)}{' · ✓ downloaded' if item.repo in have else ''}  \n"
        f"  {item.note} *Licence:* {item.licence}"
        for item in items
    )


def fetch(repo: str, device: str, progress=None) -> str:
    """Download one suggested model into the Hugging Face cache (fp16 weights for a GPU), with byte progress."""
    with user_errors():
        download(repo, progress_callback(progress), prefer_fp16=device == "cuda")
    return repo


def build(engine, profile: Profile | None, model_picker, refiner_picker=None) -> None:
    """The "Get models" accordion: a button per suggested model; a finished download is picked at once."""
    items = suggested(profile, load_catalog())
    if not items:
        return
    device = engine.status().device
    have = set(engine.models())
    first_run = not any(item.repo in have for item in items)
    with gr.Accordion("Get models suggested for this machine", open=first_run and engine.status().demo, elem_id="image-downloads"):
        gr.Markdown(
            f"For **{profile.name}**. Downloads go to the Hugging Face cache once and work offline after; "
            "the demo pipeline stays available without them.\n\n" + table(items, device, have)
        )
        with gr.Row():
            for item in items:
                button = gr.Button(
                    f"Download {item.title} ({size_text(item, device)})", size="sm", elem_id=f"image-download-{item.repo.split('/')[1]}"
                )

                def get(request: gr.Request, repo=item.repo, progress=gr.Progress()):
                    require_host(principal_of(request), "download models")
                    fetch(repo, device, progress)
                    gr.Info(f"{repo} is downloaded and picked as the model.")
                    choices = list(dict.fromkeys([*engine.models(), repo]))
                    return gr.update(choices=choices, value=repo)

                button.click(get, None, model_picker, concurrency_id="image-download", api_visibility="private")
