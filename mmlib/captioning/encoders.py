"""Frozen image encoders as token sources, and their features cached to disk.

- CNN grid (row 1): the last conv feature map of an ImageNet CNN (``mmlib.pretrained.cnn``),
  (B, C, h, w) flattened to h·w tokens of width C. ResNet-18 at 224 px: 7×7 = 49 tokens × 512
  (paper); EfficientNet-Lite0 at the world's 128 px: 4×4 = 16 tokens × 1280 (cpu).
- CLIP ViT (row 2): the *whole* output token sequence of the vision transformer after its final
  LayerNorm, CLS + patches: ViT-B/32 at 224 px gives 1 + 7×7 = 50 tokens × 768 (paper); the world
  CLIP's image Transformer over the CNN grid gives 1 + 4×4 = 17 tokens × 256 (cpu). The
  study's code fed the decoder only the pooled, projected vector of a ViT-L/14 (one token), which
  leaves the cross-attention nothing to attend over; we follow its text (eq. 1, "the model's
  output is directly a sequence").

Encoders never train, so their outputs are computed once per (encoder, image set, size) and kept
as half-precision safetensors in ``runs/<profile>/<notebook>/features/``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import ckpt, device, profiles
from .. import pretrained as pt
from ..images import clip_normalize
from .clip_pretrain import load_world_clip


class GridTokens(nn.Module):
    """A ``FeatureGrid`` CNN -> token sequence: images [0, 1] (B, 3, H, W) -> (B, h·w, C)."""

    def __init__(self, grid: nn.Module):
        super().__init__()
        self.grid = grid.to(memory_format=torch.channels_last)
        self.channels, self.name = grid.channels, grid.name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # channels_last: 30 % less CPU time for EfficientNet-Lite0 at 128 px (0.63 vs 0.92 s per 32, 1 thread)
        images = images.contiguous(memory_format=torch.channels_last)
        return self.grid(images).flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, h*w, C)


class ViTTokens(nn.Module):
    """open_clip vision tower -> its full token sequence: images [0, 1] (B, 3, H, W) -> (B, 1+g², width).

    The sequence is ``ln_post`` of every position (CLS first), before the pooled projection; it is
    what ``visual.forward`` computes on the way to the pooled embedding.
    """

    def __init__(self, visual: nn.Module, name: str):
        super().__init__()
        self.visual, self.name = visual, name
        self.channels = visual.ln_post.normalized_shape[0]
        size = visual.image_size
        self.image_size = size[0] if isinstance(size, (tuple, list)) else size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.image_size:
            images = F.interpolate(images, size=self.image_size, mode="bicubic", align_corners=False,
                                   antialias=True).clamp(0, 1)
        x = self.visual._embeds(clip_normalize(images))  # (B, 1+g², width)
        x = self.visual.transformer(x)
        return self.visual.ln_post(x)                               # (B, 1+g², width)


def cnn_encoder(profile: str, pretrained: bool = True) -> GridTokens:
    """Row 1's frozen encoder: EfficientNet-Lite0 (smoke/cpu, offline) or ResNet-18 (paper)."""
    return GridTokens(pt.cnn(profile, pretrained=pretrained)).eval().requires_grad_(False)


class GridViTTokens(nn.Module):
    """The world CLIP's image tower -> its full output sequence: images [0, 1] (B, 3, H, W) -> (B, 1+h·w, width)."""

    def __init__(self, visual: nn.Module, name: str):
        super().__init__()
        self.visual, self.name = visual, name
        self.channels = visual.ln_post.normalized_shape[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual.tokens(images)


def clip_encoder(profile: str, pretrained: str | None = "openai", model_name: str = "ViT-B-32") -> nn.Module:
    """Row 2's frozen encoder: open_clip ``ViT-B-32`` with OpenAI weights (paper; downloads once), or
    the small CLIP pretrained on world8k by notebook 03 (smoke/cpu, see ``clip_pretrain``).
    ``pretrained=None`` builds the paper architecture with random weights (tests, meta device)."""
    if profiles.get(profile).weights == "hub":
        model = (pt.clip_model(model_name, pretrained) if pretrained else
                 open_clip.create_model(model_name, pretrained=None))
        name = f"open_clip {model_name} ({pretrained or 'random'})"
        return ViTTokens(model.visual, name).eval().requires_grad_(False)
    model = load_world_clip(profile)
    return GridViTTokens(model.visual, "world8k CLIP (pretrained in 03)").eval().requires_grad_(False)


@torch.no_grad()
def encode(encoder: nn.Module, images: torch.Tensor, batch_size: int = 64, size: int | None = None,
           progress: bool = False) -> torch.Tensor:
    """uint8 images (N, 3, H, W) -> float16 tokens (N, T, C), in batches, bf16 autocast where fast.
    ``size`` resizes the images first (e.g. 128 -> 224 for a 7×7 CNN grid)."""
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].float().div_(255)
        if size and x.shape[-1] != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        with device.autocast(x.device):
            out.append(encoder(x).float().half())   # stored in fp16; device.as_compute brings it back
        if progress and i // batch_size % 20 == 0:
            print(f"  encoded {i + len(x)}/{len(images)}", flush=True)
    return torch.cat(out)


def cached_features(encoder: nn.Module, images_fn, cache_dir: Path, key: dict[str, Any],
                    batch_size: int = 64, size: int | None = None) -> tuple[torch.Tensor, float]:
    """Features of a frozen encoder, computed once and then read from disk.

    ``images_fn()`` returns the uint8 images (called only on a cache miss); ``key`` names everything
    that determines the features (encoder, its weights, image names, size). Returns the tokens
    (N, T, C) float16 and the seconds spent computing them (0.0 when read from the cache).
    """
    return cached_tokens(cache_dir, key, lambda: encode(encoder, images_fn(), batch_size, size))


def cached_tokens(cache_dir: Path, key: dict[str, Any], compute) -> tuple[torch.Tensor, float]:
    """``compute()`` (a float16 token tensor) cached as ``features-<key>.safetensors`` in ``cache_dir``,
    keyed by ``key`` and the precision; returns the tokens and the seconds spent (0.0 on a cache hit)."""
    key = {**key, "precision": device.precision()}     # computed under autocast: never reused across precisions
    t0 = time.perf_counter()
    found, hit = ckpt.cached(Path(cache_dir) / f"features-{ckpt.config_key(key)}.safetensors",
                             lambda: {"tokens": compute()}, key)
    return found["tokens"], 0.0 if hit else time.perf_counter() - t0


def pooled(tokens: torch.Tensor) -> torch.Tensor:
    """(N, T, C) tokens -> (N, C) L2-normalised mean (the retrieval baseline's image vector)."""
    return F.normalize(tokens.float().mean(1), dim=-1)
