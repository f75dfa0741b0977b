"""The chat models on offer: the embedded SmolLM2, every GGUF in the models folder, and hub downloads.

Downloads go through huggingface_hub into its standard cache, so other tools find them too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engines import embedded
from engines.base import InputError
from engines.hub import check_repo_id, hub_errors


@dataclass(frozen=True)
class ModelChoice:
    name: str
    path: Path


def find_models(models_dir: Path) -> list[ModelChoice]:
    choices = []
    if (path := embedded.smollm2_gguf()) is not None:
        choices.append(ModelChoice(embedded.SMOLLM2_NAME, path))
    if models_dir.is_dir():
        for path in sorted(models_dir.rglob("*.gguf")):
            choices.append(ModelChoice(str(path.relative_to(models_dir)), path))
    return choices


def download(repo_id: str, filename: str) -> Path:
    """Fetch one GGUF file from the Hugging Face hub (or its cache). Progress shows through tqdm."""
    from huggingface_hub import hf_hub_download

    repo_id, filename = check_repo_id(repo_id), filename.strip()
    if not filename.endswith(".gguf"):
        raise InputError(f"Choose a .gguf file from the repo, got {filename!r}.")
    with hub_errors(repo_id, filename, "Check the network, or put the .gguf file in the models folder."):
        return Path(hf_hub_download(repo_id, filename))
