"""ControlNet: the control image and its preprocessor, and the model, checked against the base's family.

Preprocessors come from kept libraries: Canny edges with OpenCV; otherwise the control image is used
as given (a depth map, a pose skeleton, edges made elsewhere…).
"""

from __future__ import annotations

import json
from pathlib import Path

from engines.base import EngineError, ImageParams, InputError
from engines.image.inpaint import read_image
from engines.image.lora import family_name


def control_image(params: ImageParams, size: tuple[int, int]):
    """The control image, preprocessed, at ``size`` (the size the pipeline draws at)."""
    from PIL import Image

    image = read_image(params.control_image, "control image").convert("RGB")
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    if params.control_preprocessor == "canny":
        return canny(image, params.canny_low, params.canny_high)
    return image


def canny(image, low: int, high: int):
    """White edges on black, three channels, as the Canny ControlNets were trained on."""
    import cv2
    import numpy as np
    from PIL import Image

    edges = cv2.Canny(np.asarray(image.convert("RGB")), low, high)
    return Image.fromarray(np.stack([edges] * 3, axis=-1))


def config_cross_dim(path: Path) -> int | None:
    """A ControlNet folder's cross-attention width, from its config (before any weight is read)."""
    config = path / "config.json"
    if not config.is_file():
        return None
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("cross_attention_dim")
    except (OSError, json.JSONDecodeError):
        return None
    return int(value) if isinstance(value, int) else None


def check_family(name: str, cross_dim: int | None, model_name: str, model_cross_dim: int) -> None:
    if cross_dim is not None and cross_dim != model_cross_dim:
        raise InputError(
            f"ControlNet {name} was made for {family_name(cross_dim)}, but {model_name} is "
            f"{family_name(model_cross_dim)}: pick a ControlNet made for this model's family."
        )


def load_controlnet(name: str, path: Path, dtype, device: str, model_name: str, model_cross_dim: int):
    """A ControlNetModel from a diffusers folder or one .safetensors file, on ``device``."""
    from diffusers import ControlNetModel

    check_family(name, config_cross_dim(path) if path.is_dir() else None, model_name, model_cross_dim)
    try:
        if path.is_dir():
            model = ControlNetModel.from_pretrained(path, torch_dtype=dtype)
        else:
            model = ControlNetModel.from_single_file(str(path), torch_dtype=dtype)
    except Exception as e:
        raise EngineError(f"Could not load ControlNet {name}: {e}") from e
    check_family(name, model.config.cross_attention_dim, model_name, model_cross_dim)
    return model.to(device)
