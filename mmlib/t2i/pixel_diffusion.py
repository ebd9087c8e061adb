"""Pixel-space text-to-image diffusion: the study's "Our Diffusion" (section 2.3).

A diffusers ``UNet2DConditionModel`` denoises RGB pixels directly, conditioned through
cross-attention on the token embeddings of a *frozen* BERT-family text encoder (``paper``:
bert-base-uncased as in the study; ``cpu``/``smoke``: the offline all-MiniLM-L6-v2) passed through
the study's trainable projection ``Linear -> GELU -> LayerNorm`` (report Listing 1).

- DDPM (Ho et al. 2020, https://arxiv.org/abs/2006.11239): ``x_t = sqrt(abar_t) x_0 + sqrt(1-abar_t) eps``
  (eq. 4), the network predicts ``eps`` and is trained with ``|| eps - eps_theta(x_t, t, c) ||^2`` (eq. 14),
  T = 1000.
- Beyond the study: caption dropout + classifier-free guidance (Ho & Salimans 2022,
  https://arxiv.org/abs/2207.12598): ``eps = eps(x, ∅) + s (eps(x, c) - eps(x, ∅))``; few-step DDIM
  (https://arxiv.org/abs/2010.02502) or DPM-Solver++ (https://arxiv.org/abs/2211.01095) sampling
  next to ancestral DDPM; an EMA of the weights (``TrainConfig.ema``).
- The frozen token embeddings of every training caption are computed once (``TextBank``), so a
  training step runs only the UNet and the projection.

Layout. ``paper`` keeps the study's UNet (Listing 2): blocks (64, 128, 256, 256),
``CrossAttnDownBlock2D ×2, DownBlock2D ×2 / UpBlock2D ×2, CrossAttnUpBlock2D ×2``, i.e. attention at
the two *highest* resolutions. On 2 CPU cores that attention dominates (27.7M params, 1.3 s per
batch-8 step at 32 px, 10.9 s at 64 px; ../shared/MEASURED.md), so ``cpu`` keeps the same block types
but moves cross-attention to the lower resolutions (16×16, 8×8) and the middle block, with widths
(32, 64, 64) at 32 px and the min-SNR-γ loss weight (the profile's ``pixel_diffusion`` section).
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from diffusers import UNet2DConditionModel
from torch import nn

from .. import ckpt, device, pretrained
from .. import data as mdata
from ..images import to_signed, to_uint8
from ..paths import run_dir
from ..train import TrainConfig
from . import diffusion
from .diffusion import DenoiserConfig, SampleConfig, TextBank, build_text_bank, eps_loss, training_data

# ----------------------------------------------------------------------------- config


@dataclass
class PixelDiffusionConfig(DenoiserConfig):
    """The pixel UNet (``DenoiserConfig``'s fields) + its image size and the frozen encoder's width."""
    down_block_types: tuple[str, ...] = ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D")
    layers_per_block: int = 2
    image_size: int = 32
    cross_attention_dim: int = 256      # width of the projected text tokens
    text_dim: int = 384                 # frozen encoder's hidden size (MiniLM 384, BERT-base 768)


@dataclass(frozen=True)
class PixelDiffusionSettings:
    """Profile section ``pixel_diffusion`` (06): the model, its training run and sampling."""
    model: PixelDiffusionConfig
    train: TrainConfig                  # train.fit's run (steps × batch, lr, warm-up, EMA decay, checkpoints)
    sample: SampleConfig                # the evaluation's sampler, steps, CFG scale, batch
    figure_samples: int                 # samples per colour shown in the figures
    captions_per_image: int             # training captions per image (the study: 1)
    compare_prompts: int                # held-out prompts of the sampler comparison
    colour_samples: int | None = None   # samples per colour scored (None: figure_samples)


def config_from_profile(section: PixelDiffusionSettings) -> PixelDiffusionConfig:
    """The model config of the ``pixel_diffusion`` section (a copy: callers may replace fields)."""
    return dataclasses.replace(section.model)


# ----------------------------------------------------------------------------- model


class PixelDiffusion(nn.Module):
    """``eps_theta(x_t, t, text)``: UNet over pixels in [-1, 1], text via cross-attention."""

    def __init__(self, cfg: PixelDiffusionConfig):
        super().__init__()
        self.cfg = cfg
        # Listing 1 of the study: the only trainable part on the text side
        self.text_projection = nn.Sequential(
            nn.Linear(cfg.text_dim, cfg.cross_attention_dim),
            nn.GELU(),
            nn.LayerNorm(cfg.cross_attention_dim),
        )
        self.unet = UNet2DConditionModel(
            sample_size=cfg.image_size,
            in_channels=3,
            out_channels=3,
            layers_per_block=cfg.layers_per_block,
            block_out_channels=tuple(cfg.block_out_channels),
            down_block_types=tuple(cfg.down_block_types),
            up_block_types=tuple(cfg.up_block_types),
            norm_num_groups=cfg.norm_num_groups,
            cross_attention_dim=cfg.cross_attention_dim,
            attention_head_dim=cfg.heads(),  # diffusers' legacy name: the number of heads per block
            **diffusion.pooled_text_kwargs(cfg, cfg.cross_attention_dim),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        # x (B, 3, H, W) noisy image, t (B,) timesteps, text (B, L, text_dim) frozen tokens, mask (B, L)
        ctx = self.text_projection(text.to(self.text_projection[0].weight.dtype))  # (B, L, cross_dim)
        return self.unet(x, t, encoder_hidden_states=ctx, class_labels=diffusion.pooled(ctx, mask) if self.cfg.pooled_text else None,
                         encoder_attention_mask=None if mask is None else mask.to(ctx.dtype)).sample

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def new_model(cfg: PixelDiffusionConfig, seed: int) -> PixelDiffusion:
    """A freshly initialised model: the init is drawn from ``seed``, never from the notebook's RNG state."""
    torch.manual_seed(seed)
    return PixelDiffusion(cfg)


# ----------------------------------------------------------------------------- frozen text encoder


class TextEncoder:
    """Frozen BERT-family encoder: captions -> (token embeddings (N, L, D), attention mask (N, L))."""

    def __init__(self, tokenizer, model: nn.Module, max_tokens: int = 32):
        self.tokenizer, self.max_tokens = tokenizer, max_tokens
        self.model = model.float().eval().requires_grad_(False)   # fp32 weights; autocast decides the math
        self.dim = int(model.config.hidden_size)

    @classmethod
    def for_profile(cls, profile: str, max_tokens: int = 32) -> "TextEncoder":
        tok, model = pretrained.text_encoder(profile)
        return cls(tok, model, max_tokens)

    @torch.no_grad()
    def __call__(self, captions: Sequence[str], batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        embs, masks = [], []
        dev = next(self.model.parameters()).device
        for i in range(0, len(captions), batch_size):
            enc = self.tokenizer(list(captions[i:i + batch_size]), padding="max_length", truncation=True,
                                 max_length=self.max_tokens, return_tensors="pt").to(dev)
            with device.autocast(dev):
                h = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            embs.append(h.float().cpu().to(torch.float16))   # (b, L, D), fp16 halves the cache
            masks.append(enc["attention_mask"].bool().cpu())
        return torch.cat(embs), torch.cat(masks)


# ----------------------------------------------------------------------------- training and sampling (mmlib.t2i.diffusion)


def diffusion_loss(bank: TextBank, cfg: PixelDiffusionConfig):
    """``loss_fn(model, batch)`` for ``train.fit``: ε-MSE on pixels in [-1, 1] with caption dropout."""
    return eps_loss(bank, cfg, lambda batch: to_signed(batch["x"]))


def sample(model: PixelDiffusion, text: torch.Tensor, mask: torch.Tensor, null_text: torch.Tensor,
           null_mask: torch.Tensor, sc: SampleConfig = SampleConfig(), seed: int = 0,
           noise: torch.Tensor | None = None) -> torch.Tensor:
    """Generate one image per row of ``text`` (N, L, D): uint8 (N, 3, H, W) (``diffusion.sample`` on pixels)."""
    s = model.cfg.image_size
    return to_uint8(diffusion.sample(model, (3, s, s), text, mask, null_text, null_mask, sc, seed, noise))


def generate(model: PixelDiffusion, encoder: TextEncoder, prompts: Sequence[str], sc: SampleConfig = SampleConfig(),
             seed: int = 0, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Prompts -> uint8 images (N, 3, H, W), encoding the prompts (and ∅) with the frozen encoder."""
    emb, mask = encoder(list(prompts) + [""])
    return sample(model, emb[:-1], mask[:-1], emb[-1], mask[-1], sc, seed=seed, noise=noise)


# ----------------------------------------------------------------------------- notebook helpers


def prepare(profile: str, encoder: TextEncoder, cfg: PixelDiffusionConfig, captions_per_image: int = 5
            ) -> tuple[dict[str, torch.Tensor], TextBank]:
    """Training tensors for ``train.fit`` and the frozen text bank, both cached under ``runs/<profile>/06/``.

    Images: the train split at ``cfg.image_size`` (uint8). Text: the first ``captions_per_image``
    captions of each image (the study used the first one only), encoded once by the frozen encoder.
    """
    if encoder.dim != cfg.text_dim:
        raise ValueError(f"text encoder width {encoder.dim} != model text_dim {cfg.text_dim}; fix the profile")
    split = mdata.load(profile)
    images = mdata.images(split.folder, [n for n, _ in split.train], cfg.image_size)  # (N, 3, r, r)
    caps = [list(c)[:captions_per_image] for _, c in split.train]
    bank = build_text_bank(encoder, [c for cs in caps for c in cs], run_dir(profile, "06") / "text")
    return training_data(images, caps, bank), bank


# ----------------------------------------------------------------------------- export (09's speed comparison)


def export_path(profile: str) -> Path:
    return run_dir(profile, "06") / "export" / "pixel_diffusion.safetensors"


def export_trained(profile: str, model: PixelDiffusion) -> Path:
    """Write the trained (EMA) weights with their config, for ``load_trained`` (safetensors, atomic)."""
    return ckpt.save_weights(export_path(profile), model.state_dict(), asdict(model.cfg))


def load_trained(profile: str) -> PixelDiffusion:
    """The model notebook 06 trained and exported in ``profile``; FileNotFoundError before it has run."""
    path = export_path(profile)
    if not path.exists():
        raise FileNotFoundError(f"{path}: run notebook 06 in profile {profile!r} first")
    cfg = ckpt.read_dataclass(PixelDiffusionConfig, path)
    model = PixelDiffusion(cfg)
    model.load_state_dict(ckpt.load_weights(path, asdict(cfg)))
    return model.eval().requires_grad_(False)
