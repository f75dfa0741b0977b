"""The chat models on offer: the embedded SmolLM2, every GGUF in the models folder, and hub downloads.

Downloads go through huggingface_hub into its standard cache, so other tools find them too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engines import embedded
from engines.base import EngineError, InputError


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
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    repo_id, filename = repo_id.strip(), filename.strip()
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise InputError(f"A Hugging Face repo looks like owner/name, got {repo_id!r}.")
    if not filename.endswith(".gguf"):
        raise InputError(f"Choose a .gguf file from the repo, got {filename!r}.")
    try:
        return Path(hf_hub_download(repo_id, filename))
    except RepositoryNotFoundError as e:
        raise InputError(f"No model repo {repo_id!r} on the Hugging Face hub (or it is private).") from e
    # LocalEntryNotFoundError is an EntryNotFoundError: it goes first.
    except LocalEntryNotFoundError as e:
        raise EngineError(
            f"Cannot reach the Hugging Face hub and {filename} is not in the local cache. "
            "Check the network, or put the .gguf file in the models folder."
        ) from e
    except EntryNotFoundError as e:
        raise InputError(f"The repo {repo_id!r} has no file {filename!r}.") from e
    except (HfHubHTTPError, OSError) as e:
        raise EngineError(f"The download of {repo_id}/{filename} failed: {e}") from e
