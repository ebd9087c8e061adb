"""LoRA on an SDXL pipeline's UNet through peft, saved in diffusers' format.

LoRA (Hu et al. 2021, https://arxiv.org/abs/2106.09685): a frozen weight ``W`` becomes
``W + (alpha / r) B A`` with ``A`` (r × d_in), ``B`` (d_out × r), ``B = 0`` at the start (so the adapted
model starts exactly at the base); only ``A, B`` of ``to_q, to_k, to_v, to_out.0`` train (as diffusers'
``train_text_to_image_lora_sdxl.py``). Adapters are saved and loaded as ``pytorch_lora_weights.safetensors``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import StableDiffusionXLPipeline
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

LORA_FILE = "pytorch_lora_weights.safetensors"   # diffusers' save_lora_weights name
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass
class LoraSettings:
    rank: int = 8
    alpha: int | None = None           # None: = rank (the script's lora_alpha=rank)
    targets: tuple[str, ...] = LORA_TARGETS

    def peft_config(self):
        return LoraConfig(r=self.rank, lora_alpha=self.alpha or self.rank, init_lora_weights="gaussian",
                          target_modules=list(self.targets))



def add_lora(unet, lora: LoraSettings) -> list[str]:
    """Freeze the UNet and attach a peft LoRA adapter on its attention projections (as the script does);
    returns the names of the trainable (LoRA) parameters."""
    unet.requires_grad_(False)
    unet.add_adapter(lora.peft_config())
    for n, p in unet.named_parameters():
        p.requires_grad_("lora_" in n)
    return [n for n, p in unet.named_parameters() if p.requires_grad]


def lora_state(unet) -> dict[str, torch.Tensor]:
    """The adapter's weights only, in diffusers' key format (``get_peft_model_state_dict``)."""
    return convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))


def save_lora(unet, folder: Path) -> Path:
    """``folder/pytorch_lora_weights.safetensors`` with only the LoRA matrices (``save_lora_weights``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    StableDiffusionXLPipeline.save_lora_weights(str(folder), unet_lora_layers=lora_state(unet),
                                                safe_serialization=True)
    return folder / LORA_FILE


def load_lora(pipe, path: Path, name: str = "photo") -> None:
    """Load a saved adapter into ``pipe`` (peft backend) under ``name``; scale it with ``set_lora_scale``,
    remove it with ``pipe.unload_lora_weights()``."""
    path = Path(path)
    pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)


def set_lora_scale(pipe, scale: float, name: str = "photo") -> None:
    """Weight of adapter ``name`` (0 = the base model, 1 = as trained)."""
    pipe.set_adapters([name], adapter_weights=[scale])


def disk_size(path: Path) -> int:
    """Bytes of a file or of all files under a folder."""
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
