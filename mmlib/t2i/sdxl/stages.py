"""The training stages of notebook 08's pipeline, each one ``train.fit`` run: the VAE (smoke/cpu only), the
base diffusion model (smoke/cpu only) and the LoRA fine-tune (every profile).

Training objective of both diffusion stages: ``|| eps - eps_theta(z_t, t, c, time_ids) ||^2`` with
``z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps`` (DDPM, https://arxiv.org/abs/2006.11239, eq. 4 and 14),
SDXL's scaled-linear betas, ``z_0 = scaling_factor * E(x)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch import nn

from ... import train
from ...images import to_signed
from ..diffusion import snr_weight
from .pipeline import SCHEDULER, Denoiser, encode_latents, tokenize


@dataclass
class StageConfig:
    """One training stage (VAE, base diffusion or LoRA) run through ``train.fit``."""
    steps: int
    batch_size: int
    lr: float
    warmup: int = 0
    schedule: str = "cosine"
    grad_clip: float | None = 1.0
    ckpt_every: int = 0
    seed: int = 0
    mixed_precision: str = "auto"
    caption_dropout: float = 0.0       # share of captions replaced by SDXL's zero embedding (for CFG)
    flip: float = 0.5                  # random horizontal flip probability (the script's --random_flip)
    kl_weight: float = 1e-6            # VAE stage only (LDM's KL-reg weight)
    snr_gamma: float = 0.0             # diffusion stages: min-SNR-γ loss weight (Hang et al. 2023); 0: plain ε-MSE

    def train_config(self, log_every: int = 10) -> train.TrainConfig:
        return train.TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, warmup=self.warmup,
                                 schedule=self.schedule, grad_clip=self.grad_clip, ckpt_every=self.ckpt_every,
                                 seed=self.seed, mixed_precision=self.mixed_precision, weight_decay=0.01,
                                 log_every=max(1, min(log_every, self.steps // 20)))


# ----------------------------------------------------------------------------- data


def training_data(pipe, images: torch.Tensor, captions: Sequence[Sequence[str]], tids: torch.Tensor,
                  batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Everything ``diffusion_loss`` needs, precomputed once (the VAE is frozen in both diffusion stages):
    latents of the image and of its mirror image (the random flip), token ids of ``k`` captions per image.

    images uint8 (N, 3, H, W); captions N lists (k = the shortest length is kept); tids (N, 6) or (6,).
    """
    k = min(len(c) for c in captions)
    flat = [c for caps in captions for c in list(caps)[:k]]
    ids, ids_2 = tokenize(pipe, flat)
    mu, sd = encode_latents(pipe.vae, images, batch_size)
    mu_f, sd_f = encode_latents(pipe.vae, images.flip(-1), batch_size)
    n = len(images)
    tids = tids.expand(n, 6) if tids.dim() == 1 else tids
    return {"mu": mu, "sd": sd, "mu_flip": mu_f, "sd_flip": sd_f, "tids": tids.float().contiguous(),
            "ids": ids.view(n, k, -1), "ids_2": ids_2.view(n, k, -1)}


def noise_scheduler():
    return DDPMScheduler(**{k: v for k, v in SCHEDULER.items() if k != "timestep_spacing"})


def diffusion_loss(stage: StageConfig):
    """``loss_fn(model: Denoiser, batch)`` for ``train.fit``: eps-MSE (DDPM eq. 14) on SDXL latents.

    Per sample: one of its captions, a random flip (latents of the mirrored image), a posterior sample
    ``z_0 = mu + sd * n``, caption dropout to zero embeddings. All draws use the global torch RNG,
    which ``train.fit`` checkpoints, so a resumed run is exact.
    """
    sched = noise_scheduler()

    def loss_fn(model: Denoiser, batch: dict) -> torch.Tensor:
        dev = next(model.parameters()).device
        b = batch["mu"].shape[0]
        flip = (torch.rand(b) < stage.flip)[:, None, None, None]
        mu = torch.where(flip, batch["mu_flip"], batch["mu"])
        sd = torch.where(flip, batch["sd_flip"], batch["sd"])
        z0 = mu + sd * torch.randn_like(mu)                                   # (B, 4, h, w)
        pick = torch.randint(0, batch["ids"].shape[1], (b,))
        ids, ids_2 = batch["ids"][torch.arange(b), pick], batch["ids_2"][torch.arange(b), pick]
        keep = torch.rand(b) >= stage.caption_dropout
        noise = torch.randn_like(z0)
        t = torch.randint(0, sched.config.num_train_timesteps, (b,))
        zt = sched.add_noise(z0, noise, t)                                    # eq. 4
        pred = model(zt.to(dev), t.to(dev), ids.to(dev), ids_2.to(dev), batch["tids"].to(dev), keep.to(dev))
        if not stage.snr_gamma:
            return F.mse_loss(pred.float(), noise.to(dev))                    # eq. 14
        per_sample = (pred.float() - noise.to(dev)).pow(2).flatten(1).mean(1)
        return (snr_weight(sched, t, stage.snr_gamma, "epsilon").to(dev) * per_sample).mean()
    return loss_fn


# ----------------------------------------------------------------------------- stages


class _VAE(nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae


def vae_loss(stage: StageConfig):
    """Reconstruction (L1 + L2) + ``kl_weight`` · KL(q(z|x) || N(0, I)) (LDM's KL-regularised autoencoder,
    without the perceptual and adversarial terms), on randomly flipped images."""
    def loss_fn(model: _VAE, batch: dict) -> tuple[torch.Tensor, dict]:
        x = to_signed(batch["x"])
        x = torch.where((torch.rand(len(x)) < stage.flip)[:, None, None, None], x.flip(-1), x)
        x = x.to(next(model.parameters()).device)
        dist = model.vae.encode(x).latent_dist
        rec = model.vae.decode(dist.sample()).sample.float()
        l_rec = F.l1_loss(rec, x) + F.mse_loss(rec, x)
        kl = dist.kl().mean() / x[0].numel()
        return l_rec + stage.kl_weight * kl, {"rec": float(l_rec), "kl": float(kl)}
    return loss_fn


def fit_vae(pipe, images: torch.Tensor, stage: StageConfig, out_dir: Path, key: dict, progress: bool = False
            ) -> train.FitResult:
    """Train the pipeline's ``AutoencoderKL`` on uint8 ``images``, then set ``scaling_factor`` = 1 / std
    of the latents (SD's 0.18215 and SDXL's 0.13025 were chosen the same way)."""
    pipe.vae.requires_grad_(True)
    fit = train.fit(_VAE(pipe.vae), vae_loss(stage), {"x": images}, stage.train_config(), out_dir,
                    {"stage": "vae", **key}, progress=progress)
    pipe.vae.requires_grad_(False).eval()
    pipe.vae.register_to_config(scaling_factor=1.0)
    mu, _ = encode_latents(pipe.vae, images[:512])
    pipe.vae.register_to_config(scaling_factor=float(1 / mu.std()))
    return fit


def fit_diffusion(pipe, data: dict, stage: StageConfig, out_dir: Path, key: dict, progress: bool = False
                  ) -> train.FitResult:
    """Train the parts of UNet + text encoders that require grad (set by the caller) on ``data``."""
    return train.fit(Denoiser(pipe), diffusion_loss(stage), data, stage.train_config(), out_dir, key,
                     progress=progress)
