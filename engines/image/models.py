"""Where image models come from: the models folder, the Hugging Face cache, a download; what family they are.

No torch here: finding, naming, hashing and downloading models is file work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

from engines.base import EngineError, InputError, ProgressCallback
from engines.hub import check_repo_id, hub_errors

log = logging.getLogger(__name__)

# Pickled checkpoints can run arbitrary code when loaded; we only read safetensors.
PICKLE_SUFFIXES = {".ckpt", ".pt", ".pth", ".bin"}
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# Largest side each family draws well and fits in memory; beyond it is refused, not silently cropped.
MAX_SIDE = {"sd1": 1024, "sd2": 1536, "sd-turbo": 1024, "sdxl": 2048, "sdxl-turbo": 1536, "sdxl-refiner": 2048}


def is_xl(family: str) -> bool:
    return family.startswith("sdxl")


def refuse_pickle(path: str | Path) -> None:
    if Path(str(path)).suffix.lower() in PICKLE_SUFFIXES:
        raise InputError(
            f"{Path(str(path)).name} is a pickled checkpoint, which can run code when loaded. "
            "Use a .safetensors file or a diffusers folder instead."
        )


def safetensors_keys(path: Path) -> list[str]:
    """The tensor names in a .safetensors header; a truncated or foreign file is an EngineError."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except Exception as e:
        raise EngineError(f"{path.name} is not a readable .safetensors file: {e}") from e


def detect_family(source: Path, keys: list[str] | None = None) -> str:
    """sd1, sd2, sd-turbo, sdxl, sdxl-turbo or sdxl-refiner, read from the files (turbo from the name)."""
    turbo = "turbo" in source.name.lower()
    if source.is_file():
        keys = keys if keys is not None else safetensors_keys(source)
        if any(k.startswith("conditioner.embedders.1.") for k in keys):
            xl = "sdxl-refiner" if not any(k.startswith("conditioner.embedders.0.transformer.") for k in keys) and any(
                k.startswith("conditioner.embedders.0.model.") for k in keys
            ) else "sdxl"
            return "sdxl-turbo" if turbo and xl == "sdxl" else xl
        sd2 = any(k.startswith("cond_stage_model.model.") for k in keys)  # OpenCLIP text encoder
        return "sd-turbo" if turbo else ("sd2" if sd2 else "sd1")
    index = json.loads((source / "model_index.json").read_text(encoding="utf-8"))
    cls = index.get("_class_name", "")
    if "XL" in cls:
        if (index.get("text_encoder") or [None])[0] is None and "Img2Img" in cls:
            return "sdxl-refiner"
        return "sdxl-turbo" if turbo else "sdxl"
    config = source / "text_encoder" / "config.json"
    hidden = json.loads(config.read_text(encoding="utf-8")).get("hidden_size") if config.is_file() else None
    if turbo:
        return "sd-turbo"
    return "sd2" if hidden == 1024 else "sd1"


def weights_file(source: Path) -> Path | None:
    """The file whose hash names the model: the checkpoint itself, or a diffusers folder's UNet weights
    (a ControlNet folder's own weights)."""
    if source.is_file():
        return source
    for folder in (source / "unet", source):
        candidates = sorted(folder.glob("diffusion_pytorch_model*.safetensors")) + sorted(folder.glob("*.safetensors.index.json"))
        if candidates:
            return candidates[0]
    return None


class HashCache:
    """A1111's short model hash (first 10 hex digits of the weights' sha256), remembered across runs.

    Files in the Hugging Face cache are stored under their sha256, so those cost nothing to hash.
    """

    def __init__(self, file: Path | None = None) -> None:
        self.file = file
        self._known: dict[str, str] = {}
        if file is not None and file.is_file():
            try:
                self._known = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                self._known = {}

    def short_hash(self, source: Path, progress: ProgressCallback | None = None) -> str:
        weights = weights_file(source)
        if weights is None:
            return ""
        real = weights.resolve()
        if re.fullmatch(r"[0-9a-f]{64}", real.name):
            return real.name[:10]
        stat = real.stat()
        key = f"{real}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in self._known:
            if progress:
                progress(None, f"Hashing {source.name} (once)…")
            digest = hashlib.sha256()
            with real.open("rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    digest.update(block)
            self._known[key] = digest.hexdigest()[:10]
            if self.file is not None:
                try:
                    self.file.parent.mkdir(parents=True, exist_ok=True)
                    self.file.write_text(json.dumps(self._known, indent=1), encoding="utf-8")
                except OSError as e:
                    log.warning("could not save model hashes to %s: %s", self.file, e)
        return self._known[key]


# What a models folder holds, told apart by the files' own contents (one folder, as in Draw Things).
KINDS = ("checkpoint", "lora", "controlnet", "upscaler")
_kind_cache: dict[tuple[str, int, int], str] = {}


def safetensors_kind(path: Path) -> str | None:
    """checkpoint, lora or controlnet, from the tensor names in the header (cached by size and time); None
    for a file that is not readable safetensors."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _kind_cache:
        try:
            keys = safetensors_keys(path)
        except EngineError:
            return None
        if any("lora_" in k or ".lora." in k or "lora.down" in k for k in keys):
            kind = "lora"
        elif any(k.startswith("control_model.") or "controlnet_cond_embedding" in k for k in keys):
            kind = "controlnet"
        else:
            kind = "checkpoint"
        _kind_cache[key] = kind
    return _kind_cache[key]


def folder_kind(path: Path) -> str | None:
    """checkpoint or upscaler for a diffusers pipeline folder, controlnet for a ControlNet model folder."""
    if (path / "model_index.json").is_file():
        try:
            cls = json.loads((path / "model_index.json").read_text(encoding="utf-8")).get("_class_name", "")
        except (OSError, json.JSONDecodeError):
            return None
        return "upscaler" if cls == "StableDiffusionUpscalePipeline" else "checkpoint"
    config = path / "config.json"
    if config.is_file():
        try:
            cls = json.loads(config.read_text(encoding="utf-8")).get("_class_name", "")
        except (OSError, json.JSONDecodeError):
            return None
        return "controlnet" if cls == "ControlNetModel" else None
    return None


def local_assets(models_dir: Path | None, kind: str) -> dict[str, Path]:
    """Entries of one kind directly in the models folder, by name (sorted, hidden ones left out)."""
    found: dict[str, Path] = {}
    if models_dir is None or not models_dir.is_dir():
        return found
    for child in sorted(models_dir.iterdir(), key=lambda p: p.name.lower()):
        if child.name.startswith("."):
            continue
        if child.is_dir():
            child_kind = folder_kind(child)
        elif child.is_file() and child.suffix.lower() == ".safetensors":
            child_kind = safetensors_kind(child)
        else:
            continue
        if child_kind == kind:
            found[child.name] = child
    return found


def local_models(models_dir: Path | None) -> dict[str, Path]:
    """Checkpoints (diffusers folders and .safetensors files) directly in the models folder, by name."""
    return local_assets(models_dir, "checkpoint")


def cached_hub_models() -> list[str]:
    """Repo ids of diffusers pipelines already in the Hugging Face cache (usable offline)."""
    try:
        from huggingface_hub import scan_cache_dir

        info = scan_cache_dir()
    except Exception:  # no cache yet, or one we cannot read: nothing to offer
        return []
    repos = []
    for repo in info.repos:
        if repo.repo_type == "model" and any(
            f.file_name == "model_index.json" for rev in repo.revisions for f in rev.files
        ):
            repos.append(repo.repo_id)
    return sorted(repos)


def _patterns(files: list[str], prefer_fp16: bool) -> tuple[list[str], str | None]:
    """Which files of a diffusers repo to fetch: every component's config and one set of safetensors weights."""
    if "model_index.json" not in files:
        raise InputError("it is not a diffusers pipeline (it has no model_index.json)")
    weights = [f for f in files if "/" in f and f.endswith(".safetensors")]
    fp16 = [f for f in weights if ".fp16." in f]
    variant = "fp16" if prefer_fp16 and fp16 else None
    chosen = fp16 if variant else [f for f in weights if not re.search(r"\.(fp16|non_ema|ema)\.", f)]
    configs = [f for f in files if "/" in f and f.endswith((".json", ".txt", ".model"))]
    if not chosen:
        raise InputError("it has no .safetensors weights (pickled weights are not loaded)")
    return ["model_index.json", *configs, *chosen], variant


def download(repo_id: str, progress: ProgressCallback | None, prefer_fp16: bool = False) -> tuple[Path, str | None]:
    """Fetch a diffusers pipeline into the standard Hugging Face cache with byte progress.

    Returns the snapshot folder and the weights variant to load ("fp16" or None). Offline with the
    model in the cache, the cached copy is used.
    """
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    from tqdm.auto import tqdm

    repo_id = check_repo_id(repo_id)

    class Report(tqdm):  # snapshot_download's byte counters, turned into our progress callback
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            kwargs["disable"] = False
            kwargs["file"] = _Null()
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            done = super().update(n)
            if progress and self.unit == "B" and self.total:
                progress(min(self.n / self.total, 1.0), f"Downloading {repo_id}: {self.n / 1e9:.2f} of {self.total / 1e9:.2f} GB")
            return done

    with hub_errors(repo_id, offline_hint="Connect and try again, or pick a model from the models folder."):
        try:
            files = HfApi().list_repo_files(repo_id)
        except (RepositoryNotFoundError, GatedRepoError):
            raise
        except Exception:
            files = None  # offline: fall back to whatever the cache holds
        if files is None:
            folder = snapshot_download(repo_id, local_files_only=True)
            variant = "fp16" if prefer_fp16 and any(Path(folder).glob("unet/*.fp16.safetensors")) else None
            return Path(folder), variant
        try:
            allow, variant = _patterns(files, prefer_fp16)
        except InputError as e:
            raise InputError(f"{repo_id} cannot be used: {e}.") from e
        if progress:
            progress(0.0, f"Downloading {repo_id}…")
        folder = snapshot_download(repo_id, allow_patterns=allow, tqdm_class=Report)
        return Path(folder), variant


class _Null:
    def write(self, *_: object) -> None:
        pass

    def flush(self) -> None:
        pass



def download_file_model(name: str, progress: ProgressCallback | None, kind: str) -> Path:
    """A LoRA or ControlNet by Hugging Face id, into the standard cache: ``owner/repo/file.safetensors`` names
    one file; ``owner/repo`` takes the repo's only .safetensors (a LoRA), or its diffusers ControlNet folder."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    parts = name.strip().split("/")
    if len(parts) < 2 or not all(parts):
        raise InputError(f"A {kind} from the hub is named owner/repo or owner/repo/file.safetensors, got {name!r}.")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:]) or None
    check_repo_id(repo_id)
    if filename is not None:
        refuse_pickle(filename)
        if not filename.endswith(".safetensors"):
            raise InputError(f"{filename}: a {kind} must be a .safetensors file.")
    with hub_errors(repo_id, filename, offline_hint=f"Put the {kind} in the models folder instead."):
        if progress:
            progress(None, f"Downloading {name}…")
        if filename is not None:
            return Path(hf_hub_download(repo_id, filename))
        try:
            files = HfApi().list_repo_files(repo_id)
        except Exception:
            files = None  # offline: what the cache holds
        if kind == "ControlNet" and (files is None or "config.json" in files):
            weights = [f for f in (files or []) if "/" not in f and f.startswith("diffusion_pytorch_model") and f.endswith(".safetensors")]
            if files is not None and not weights:
                raise InputError(f"{repo_id} has no .safetensors ControlNet weights (pickled weights are not loaded).")
            plain = [f for f in weights if ".fp16." not in f] or weights
            allow = ["config.json", *plain] if files is not None else None
            return Path(snapshot_download(repo_id, allow_patterns=allow, local_files_only=files is None))
        tensors = [f for f in (files or []) if f.endswith(".safetensors")]
        if files is None:
            tensors = ["pytorch_lora_weights.safetensors"]
        if len(tensors) > 1 and "pytorch_lora_weights.safetensors" in tensors:
            tensors = ["pytorch_lora_weights.safetensors"]
        if len(tensors) != 1:
            listed = ", ".join(tensors[:6]) or "none"
            raise InputError(f"{repo_id} holds {len(tensors)} .safetensors files ({listed}): name one as {repo_id}/<file>.")
        return Path(hf_hub_download(repo_id, tensors[0], local_files_only=files is None))
