"""LoRAs on a diffusers pipeline: checked against the model's family, fused while they stay the same.

Fusing folds each LoRA into the weights it adapts, so steps cost what they cost without one. peft's
unfuse subtracts what it added, which floating point does not undo exactly (a pixel here and there
changes), so the weights a LoRA touches are kept beforehand and put back bit for bit: the same recipe
makes the same image whatever ran before it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from engines.base import InputError

# Cross-attention width -> the family a LoRA or ControlNet was made for (the key axis of attn2.to_k).
FAMILY_BY_CROSS_DIM = {768: "SD 1.x", 1024: "SD 2.x / SD-Turbo", 2048: "SDXL", 1280: "the SDXL refiner"}
_CROSS_KEY = re.compile(r"attn2[._]to_k.*(lora_A|lora_down|lora\.down)|attn2\.processor\.to_k_lora\.down")


def family_name(cross_dim: int) -> str:
    return FAMILY_BY_CROSS_DIM.get(cross_dim, f"a model with {cross_dim}-wide cross-attention")


def lora_cross_dim(path: Path) -> int | None:
    """The cross-attention width the LoRA's UNet layers expect, read from the header's shapes (no tensor is
    loaded); None when it adapts no cross-attention (a text-encoder-only LoRA)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            if _CROSS_KEY.search(key) and "unet" in key.lower().replace("lora_unet", "unet"):
                shape = f.get_slice(key).get_shape()
                if len(shape) == 2:
                    return int(shape[1])
    return None


def check_lora_family(name: str, path: Path, model_name: str, model_cross_dim: int) -> None:
    try:
        dim = lora_cross_dim(path)
    except Exception as e:  # safetensors raises its own errors for a truncated or foreign file
        raise InputError(f"LoRA {name} is not a readable .safetensors file: {e}") from e
    if dim is not None and dim != model_cross_dim:
        raise InputError(
            f"LoRA {name} was made for {family_name(dim)}, but {model_name} is {family_name(model_cross_dim)}: "
            "pick a LoRA made for this model's family."
        )


@dataclass(frozen=True)
class ResolvedLora:
    name: str
    path: Path
    hash: str
    weight: float


@dataclass
class LoraState:
    """What is fused into one pipeline now, and the untouched weights to put back."""

    key: tuple = ()
    originals: list = field(default_factory=list)  # (parameter, copy on the CPU)

    def apply(self, pipe, loras: list[ResolvedLora]) -> None:
        """Make ``pipe`` carry exactly ``loras`` (none: the plain model), fused."""
        key = tuple((lora.hash, lora.weight) for lora in loras)
        if key == self.key:
            return
        self.clear(pipe)
        if not loras:
            return
        names = [f"melange_{i}" for i in range(len(loras))]
        try:
            for adapter, lora in zip(names, loras):
                pipe.load_lora_weights(str(lora.path), adapter_name=adapter)
            pipe.set_adapters(names, [lora.weight for lora in loras])
            self.originals = [(p, p.detach().to("cpu", copy=True)) for p in _adapted_weights(pipe)]
            pipe.fuse_lora(adapter_names=names, lora_scale=1.0)
        except Exception as e:
            self.clear(pipe)
            which = ", ".join(lora.name for lora in loras)
            raise InputError(f"Could not apply the LoRA {which}: {_first_line(e)}") from e
        self.key = key

    def clear(self, pipe) -> None:
        """Back to the plain model, bit for bit."""
        import torch

        if self.originals:
            pipe.unfuse_lora()
        pipe.unload_lora_weights()
        with torch.no_grad():
            for param, original in self.originals:
                param.copy_(original)
        self.originals, self.key = [], ()


def _adapted_weights(pipe) -> list:
    """The base-layer parameters the loaded adapters will fuse into."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    params = []
    for component in ("unet", "transformer", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, component, None)
        if module is None:
            continue
        for layer in module.modules():
            if isinstance(layer, BaseTunerLayer):
                base = layer.get_base_layer()
                params += [base.weight] + ([base.bias] if getattr(base, "bias", None) is not None else [])
    return params


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
