"""all-MiniLM-L6-v2 through ONNX Runtime with int8 weights: built from the PyTorch weights on first use, cached.

The build runs once per source (the weights, the recipe below, the onnxruntime version), about 6 CPU-seconds:
torch.onnx exports the model with its mean pooling and L2 normalisation (eager attention, so ONNX Runtime's
BERT optimizer can fuse attention, skip-layer-norm and GELU), then ``quantize_dynamic`` stores every matrix
multiply's weights as int8 with one scale per output channel (one scale per tensor loses too much: cosine
0.955 to fp32 on the benchmark's passages, against 0.993). The result is checked against PyTorch on probe
texts of several lengths before it is used, and written atomically under the cache folder, named by the
source's digest: a changed source gets a new file. Nothing here imports gradio; torch, transformers and onnx
are needed only to build, onnxruntime to run.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

log = logging.getLogger("melange.documents")

RECIPE = "minilm-int8-per-channel-1"  # change when the build steps change: older cached files are not used
# The build is refused below this against PyTorch on the probes: a broken export (a mask traced away, a shape
# baked in) lands far lower; a good one measures 0.975-0.996 (lowest: a 4-token text padded beside long ones).
MIN_COSINE = 0.95
PROBES = [
    "Hi.",
    "The ferry to Inishmore leaves at 10:30 every day.",
    "The committee noted that the budget process would follow last year's calendar, and several departments "
    "asked for clearer guidance on travel and expenses. " * 3,
    "Quarterly revenue rose by eight percent; invoices above the usual threshold need a second signature.",
]
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def version() -> str:
    """The recipe and the runtime that fuses and runs it: part of the cached file's name and of the vectors' identity."""
    import onnxruntime

    return f"{RECIPE} ort-{onnxruntime.__version__}"


def cached_path(cache_dir: Path, weights: str) -> Path:
    """``weights``: the source weights' digest. A new source, recipe or runtime gets a new file."""
    name = hashlib.sha256(f"{version()} {weights}".encode()).hexdigest()[:16]
    return cache_dir / f"all-MiniLM-L6-v2-int8-{name}.onnx"


class _FromOnnxRuntime(logging.Filter):
    """ONNX Runtime's optimizer and quantiser log a line per node and tensor (some on the root logger), and
    advise pre-processing we do not need: below ERROR, none of it reaches the app's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or f"{os.sep}onnxruntime{os.sep}" not in record.pathname


@contextlib.contextmanager
def _quiet_onnxruntime() -> Iterator[None]:
    quiet = _FromOnnxRuntime()
    root = logging.getLogger()
    handlers = [root, *root.handlers]  # the root logger's own records, and what its handlers get from the rest
    for handler in handlers:
        handler.addFilter(quiet)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(quiet)


def build(model_dir: Path, out: Path, tokenizer, threads: int = 1) -> None:
    """Export, fuse, quantise and check; then put the file at ``out`` in one rename. Raises on any failure."""
    with _quiet_onnxruntime():
        _build(model_dir, out, tokenizer, threads)


def _build(model_dir: Path, out: Path, tokenizer, threads: int) -> None:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_dir, local_files_only=True, attn_implementation="eager").eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=out.parent) as work:
        exported, fused, quantised = (Path(work) / n for n in ("fp32.onnx", "fused.onnx", "int8.onnx"))
        # Before the export: taken after it (torch 2.13, transformers 5.23), they came out different (cosine 0.86
        # to the same model's vectors taken before, on "Hi.").
        references = reference_vectors(model, tokenizer)
        sample = tokenizer(PROBES[:2], padding=True, return_tensors="pt")  # padded, so the mask is traced
        with torch.no_grad():
            torch.onnx.export(
                pooled(model), tuple(sample[n] for n in INPUTS), str(exported), input_names=list(INPUTS),
                output_names=["embedding"], opset_version=17, dynamo=False,
                dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in INPUTS}, "embedding": {0: "batch"}},
            )  # fmt: skip
        config = model.config
        fusion = optimizer.optimize_model(
            str(exported), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size, opt_level=0
        )
        fusion.save_model_to_file(str(fused))
        quantize_dynamic(
            fused, quantised, per_channel=True, weight_type=QuantType.QInt8, extra_options={"DefaultTensorType": 1}
        )
        check(OnnxMiniLM(quantised, threads), references, tokenizer)
        os.replace(quantised, out)


def _probe_batches() -> list[list[str]]:
    return [PROBES] + [[text] for text in PROBES]  # one padded batch, then each alone as the embedder runs them


def reference_vectors(model, tokenizer) -> list[np.ndarray]:
    import torch

    out = []
    for texts in _probe_batches():
        encoded = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.no_grad():
            out.append(pooled(model)(*(encoded[n] for n in INPUTS)).numpy())
    return out


def check(onnx_model: OnnxMiniLM, references: list[np.ndarray], tokenizer) -> None:
    """The built model against PyTorch's vectors for the probes."""
    for texts, reference in zip(_probe_batches(), references):
        encoded = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="np")
        ours = onnx_model(*(encoded[n] for n in INPUTS))
        cosine = (ours * reference).sum(axis=1)
        if ours.shape != reference.shape or not np.all(cosine >= MIN_COSINE):
            raise RuntimeError(f"the int8 model is too far from PyTorch on the probes (cosine {np.round(cosine, 4).tolist()})")


def load_or_build(model_dir: Path, cache_dir: Path | None, tokenizer, threads: int, weights: str) -> OnnxMiniLM:
    """The int8 model: from the cache, else built there first (``cache_dir`` None: built in a temporary folder)."""
    if cache_dir is None:
        with tempfile.TemporaryDirectory(prefix="melange-minilm-") as work:
            path = Path(work) / "model.onnx"
            build(model_dir, path, tokenizer, threads)
            return OnnxMiniLM(path.read_bytes(), threads)
    path = cached_path(cache_dir, weights)
    if not path.exists():
        log.info("embeddings: building the int8 ONNX model in %s (once)", cache_dir)
        started = time.monotonic()
        build(model_dir, path, tokenizer, threads)
        log.info("embeddings: built %s in %.1f s", path.name, time.monotonic() - started)
        for old in cache_dir.glob("all-MiniLM-L6-v2-int8-*.onnx"):  # an earlier source's, recipe's or runtime's
            if old != path:
                old.unlink(missing_ok=True)
    return OnnxMiniLM(path, threads)


class OnnxMiniLM:
    """One ONNX Runtime session; ``__call__`` may run on several threads at once (each on its own thread when
    ``threads`` is 1, with no thread pool of its own: the caller's priority is the run's)."""

    def __init__(self, model: Path | bytes, threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle threads sleep instead of spinning: on a busy 2-core machine spinning steals chat's core.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), options, providers=["CPUExecutionProvider"])

    def one(self, ids: list[int]) -> np.ndarray:
        """One tokenized text (no padding) -> a (1, 384) unit vector."""
        row = np.asarray([ids], dtype=np.int64)
        return self(row, np.ones_like(row), np.zeros_like(row))

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return self.session.run(None, {k: np.asarray(v, dtype=np.int64) for k, v in feed.items()})[0]


def pooled(model):
    """The model with sentence-transformers' mean pooling and L2 normalisation, as one torch module."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            tokens = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            summed = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(summed, p=2, dim=1)

    return Pooled()
