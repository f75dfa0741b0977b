"""Which device each backend can really use. Each backend has its own CUDA build to ask."""

from __future__ import annotations

from typing import Literal

DeviceChoice = Literal["auto", "cpu", "cuda"]


def torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def llama_cuda() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def ctranslate2_cuda() -> bool:
    import ctranslate2

    return ctranslate2.get_cuda_device_count() > 0


def resolve(choice: DeviceChoice, backend_has_cuda) -> str:
    """'cpu' or 'cuda' for one backend. Asking for CUDA where it is missing is an error, not a fallback."""
    if choice == "cpu":
        return "cpu"
    available = backend_has_cuda()
    if choice == "cuda" and not available:
        raise RuntimeError(
            f"--device cuda was asked for but {backend_has_cuda.__name__.replace('_', ' ')} is not available "
            "(see the README's CUDA section, or use --device auto)."
        )
    return "cuda" if available else "cpu"


def gpu_memory() -> int | None:
    """Total memory of the first CUDA device in bytes, or None without one."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None
