"""Tiny Stable-Diffusion-shaped pipelines with random weights, built locally in seconds.

They let the image panel (and its tests) run the real diffusers code path with no download: the
images are coloured noise, not pictures. Same code, same seed, same bytes on disk. Two families:
"sd" (SD 1.x shape: one CLIP text encoder) and "sdxl" (two text encoders, size and crop conditioning),
so both refiner paths (img2img second pass and SDXL latent hand-off) can run on CPU.

Beside the pipelines, the add-ons the image panel uses, shaped to fit them: an inpainting pipeline (UNet
with 9 input channels: latents, mask, masked image), a LoRA (peft, saved as .safetensors), a ControlNet
and a ×4 super-resolution upscaler.

    python -m engines.image.tiny_pipeline DIR [sd|sdxl|sd-inpaint|sd-upscaler|lora|lora-sdxl|controlnet]
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

TINY_PIPELINE_DIRNAME = "melange-tiny-sd"
TINY_DIRNAMES = {"sd": TINY_PIPELINE_DIRNAME, "sdxl": "melange-tiny-sdxl", "sd-inpaint": "melange-tiny-sd-inpaint", "sd-upscaler": "melange-tiny-upscaler-x4"}
ADDONS = ("lora", "lora-sdxl", "controlnet")  # written as files or folders of their own, not pipelines
MARKER_FILE = "melange_demo.json"
SEED = 0

_BOS, _EOS = "<|startoftext|>", "<|endoftext|>"


def is_demo_pipeline(path: Path) -> bool:
    """True for a folder written by :func:`build_tiny_pipeline`."""
    return (Path(path) / MARKER_FILE).is_file()


def _bytes_to_unicode() -> list[str]:
    """The 256 printable characters byte-level BPE uses for the bytes 0..255 (as in GPT-2 and CLIP)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def _write_tokenizer_files(folder: Path) -> int:
    """A byte-level CLIP vocabulary with no merges: every byte is a token. Returns the vocab size."""
    chars = _bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + [_BOS, _EOS]
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return len(tokens)


def _vae(seed: int):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    # Four blocks, like SD, so latents are 1/8 of the image side: a 512 px image stays cheap.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 16, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=256,
        scaling_factor=0.18215,
    )


def _text_config(tokenizer, vocab_size: int, **extra):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def _scheduler():
    from diffusers import EulerDiscreteScheduler

    # The SD 1.x / SDXL noise schedule.
    return EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
        steps_offset=1,
    )


# The UNet both tiny families share; each adds its own conditioning.
TINY_UNET = dict(
    sample_size=32,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(32, 64),
    layers_per_block=1,
    attention_head_dim=8,
    norm_num_groups=32,
)


def _build_sd(folder: Path):
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    vocab_size = _write_tokenizer_files(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", model_max_length=77)

    # Each model gets its own seed so that changing one never changes the others' weights.
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(
        **TINY_UNET,
        cross_attention_dim=32,
    )
    vae = _vae(SEED + 1)
    torch.manual_seed(SEED + 2)
    text_encoder = CLIPTextModel(_text_config(tokenizer, vocab_size))
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _build_sdxl(folder: Path):
    import torch
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    vocab_size = _write_tokenizer_files(folder / "tokenizer")
    _write_tokenizer_files(folder / "tokenizer_2")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", model_max_length=77)
    tokenizer_2 = CLIPTokenizer.from_pretrained(folder / "tokenizer_2", model_max_length=77)

    torch.manual_seed(SEED + 10)
    # SDXL's conditioning: both encoders' hidden states side by side (32 + 32), plus the pooled
    # projection (32) and six size/crop numbers embedded in 8 channels each: 6 * 8 + 32 = 80.
    unet = UNet2DConditionModel(
        **TINY_UNET,
        cross_attention_dim=64,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=80,
    )
    vae = _vae(SEED + 11)
    torch.manual_seed(SEED + 12)
    text_encoder = CLIPTextModel(_text_config(tokenizer, vocab_size))
    torch.manual_seed(SEED + 13)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(tokenizer_2, vocab_size, projection_dim=32))
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=_scheduler(),
        force_zeros_for_empty_prompt=True,
    )


def _build_sd_inpaint(folder: Path):
    """SD 1.x's inpainting shape: the UNet reads 9 channels (4 latent, 1 mask, 4 masked-image latent)."""
    import torch
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    vocab_size = _write_tokenizer_files(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", model_max_length=77)
    torch.manual_seed(SEED + 20)
    unet = UNet2DConditionModel(**{**TINY_UNET, "in_channels": 9}, cross_attention_dim=32)
    vae = _vae(SEED + 21)
    torch.manual_seed(SEED + 22)
    text_encoder = CLIPTextModel(_text_config(tokenizer, vocab_size))
    return StableDiffusionInpaintPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip


def _build_sd_upscaler(folder: Path):
    """stabilityai/stable-diffusion-x4-upscaler's shape: a VAE with three blocks (latents at 1/4 of the side,
    so the output is 4× the input), a UNet reading the latents beside the low-resolution image (4 + 3
    channels) and told the noise level added to it as a class label."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, DDIMScheduler, StableDiffusionUpscalePipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    vocab_size = _write_tokenizer_files(folder / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer", model_max_length=77)
    torch.manual_seed(SEED + 30)
    unet = UNet2DConditionModel(**{**TINY_UNET, "in_channels": 7}, cross_attention_dim=32, num_class_embeds=351)
    torch.manual_seed(SEED + 31)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(16, 16, 32), layers_per_block=1, latent_channels=4, norm_num_groups=16, scaling_factor=0.08333,
    )  # fmt: skip
    torch.manual_seed(SEED + 32)
    text_encoder = CLIPTextModel(_text_config(tokenizer, vocab_size))
    return StableDiffusionUpscalePipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        low_res_scheduler=DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.0001, beta_end=0.02),
        scheduler=DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.0001, beta_end=0.02),
        max_noise_level=350,
    )  # fmt: skip


def _tiny_unet(family: str):
    """A fresh UNet of the family's shape (the pipeline's own weights do not matter to an add-on's shapes)."""
    from diffusers import UNet2DConditionModel

    if family == "sdxl":
        return UNet2DConditionModel(
            **TINY_UNET, cross_attention_dim=64, use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=8, projection_class_embeddings_input_dim=80,
        )  # fmt: skip
    return UNet2DConditionModel(**TINY_UNET, cross_attention_dim=32)


def build_tiny_lora(out_file: Path, family: str = "sd", seed: int = SEED + 40) -> Path:
    """A LoRA on the tiny UNet's attention (rank 4, random A and B so it visibly changes the image), saved as
    diffusers saves trained LoRAs: one .safetensors of ``unet.…lora_A/lora_B`` tensors."""
    import torch
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    out_file = Path(out_file)
    torch.manual_seed(seed)
    unet = _tiny_unet(family)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False))
    layers = {k: v * 0.2 for k, v in get_peft_model_state_dict(unet).items()}  # strong enough to see, not enough to blow up
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_file.name}.tmp-", dir=out_file.parent))
    try:
        StableDiffusionPipeline.save_lora_weights(tmp, unet_lora_layers=layers, safe_serialization=True)
        (tmp / "pytorch_lora_weights.safetensors").rename(out_file)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_file


def build_tiny_controlnet(out_dir: Path, family: str = "sd") -> Path:
    """A ControlNet cut from a tiny UNet of the family (ControlNetModel.from_unet), random weights; its zero
    convolutions get small random weights too, or it would leave every image unchanged."""
    import torch
    from diffusers import ControlNetModel

    out_dir = Path(out_dir)
    torch.manual_seed(SEED + 50)
    controlnet = ControlNetModel.from_unet(_tiny_unet(family), conditioning_embedding_out_channels=(8, 8, 16, 16))  # 8× down, like the latents
    with torch.no_grad():
        for block in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block, controlnet.controlnet_cond_embedding.conv_out]:
            for param in block.parameters():
                param.normal_(0, 0.05)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        controlnet.save_pretrained(tmp / "c", safe_serialization=True)
        (tmp / "c").rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


_BUILDERS = {"sd": _build_sd, "sdxl": _build_sdxl, "sd-inpaint": _build_sd_inpaint, "sd-upscaler": _build_sd_upscaler}


def _build_into(folder: Path, family: str = "sd") -> None:
    pipe = _BUILDERS[family](folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    marker = {"demo": True, "name": "Melange tiny demo pipeline", "family": family, "weights": "random", "seed": SEED}
    (folder / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def build_tiny_pipeline(out_dir: Path, family: str = "sd") -> Path:
    """Build the tiny pipeline into ``out_dir``, which must not exist yet; returns ``out_dir``.

    Built in a sibling temp folder and renamed into place, so a crash never leaves half a pipeline.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; remove it to rebuild the tiny pipeline.")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        _build_into(tmp / "p", family)
        (tmp / "p").rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def ensure_tiny_pipeline(data_dir: Path, family: str = "sd") -> Path:
    """``data_dir/models/melange-tiny-sd`` (or ``-sdxl``), built on first use."""
    if family not in TINY_DIRNAMES:
        raise ValueError(f"family must be one of {sorted(TINY_DIRNAMES)}, got {family!r}")
    out_dir = Path(data_dir) / "models" / TINY_DIRNAMES[family]
    if is_demo_pipeline(out_dir):
        return out_dir
    try:
        return build_tiny_pipeline(out_dir, family)
    except OSError:
        # Another process may have renamed its build into place first; theirs is as good as ours.
        if is_demo_pipeline(out_dir):
            return out_dir
        raise


if __name__ == "__main__":
    kinds = (*TINY_DIRNAMES, *ADDONS)
    if len(sys.argv) not in (2, 3) or (sys.argv[2:] and sys.argv[2] not in kinds):
        sys.exit(f"usage: python -m engines.image.tiny_pipeline DIR [{'|'.join(kinds)}]")
    kind = sys.argv[2] if len(sys.argv) == 3 else "sd"
    target = Path(sys.argv[1])
    if kind.startswith("lora"):
        print(build_tiny_lora(target, "sdxl" if kind == "lora-sdxl" else "sd"))
    elif kind == "controlnet":
        print(build_tiny_controlnet(target))
    else:
        print(build_tiny_pipeline(target, kind))
