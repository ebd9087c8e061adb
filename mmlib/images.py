"""Image conversions, CLIP normalisation, PSNR and grids shared by every notebook.

Images travel as uint8 tensors (N, 3, H, W) in [0, 255]; generators work in [-1, 1].
"""
from __future__ import annotations

import math
from typing import Sequence

import matplotlib.pyplot as plt
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD


def to_signed(x: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) in [0, 255] -> float in [-1, 1]."""
    return x.float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8 in [0, 255] (clamped, rounded)."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def unit_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in [0, 1] (diffusers' ``output_type="pt"``) -> uint8 in [0, 255]."""
    return (x.float().clamp(0, 1) * 255).round().to(torch.uint8)


def clip_normalize(x: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] (B, 3, H, W) -> CLIP's input normalisation (OpenAI's mean and std, as
    open_clip and BLIP-2 use them)."""
    mean = torch.tensor(OPENAI_DATASET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def psnr(x: torch.Tensor, y: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB, ``10 log10(peak² / MSE)``: ``peak`` 1 for images in [0, 1], 2 for [-1, 1].

    x, y (N, ...) -> (N,)."""
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(peak ** 2 / mse)


def image_grid(images: torch.Tensor, titles: Sequence[str] | None = None, ncol: int = 8, scale: float = 1.1):
    """uint8 images (N, 3, H, W) -> a matplotlib figure, ``ncol`` per row, optional titles."""

    n = len(images)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(ncol * scale, nrow * scale * (1.25 if titles else 1)), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i].permute(1, 2, 0).numpy(), interpolation="nearest")
            if titles:
                ax.set_title(titles[i], fontsize=6, wrap=True)
    fig.tight_layout()
    return fig
