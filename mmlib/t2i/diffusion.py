"""The diffusion core of notebooks 06 (pixels) and 07 (VQ latents): one copy of each piece.

- ``TextBank`` / ``build_text_bank``: the frozen token features of every unique caption, computed
  once and cached; row 0 is the empty caption ∅ (what caption dropout and CFG condition on).
- ``noise_scheduler`` / ``sampling_scheduler``: DDPM's forward process (Ho et al. 2020, eq. 4,
  T = 1000) and the samplers: ancestral DDPM (strided when fewer than T steps), DDIM (η = 0,
  https://arxiv.org/abs/2010.02502) and DPM-Solver++ (2nd order, https://arxiv.org/abs/2211.01095).
- ``eps_loss``: ``|| ε - ε_θ(x_t, t, c) ||²`` (DDPM eq. 14; LDM eq. 3 on latents) with caption
  dropout to ∅ for classifier-free guidance.
- ``guided_eps`` / ``sample``: classifier-free guidance (Ho & Salimans 2022,
  https://arxiv.org/abs/2207.12598) ``ε = ε(x, ∅) + s (ε(x, c) - ε(x, ∅))`` inside one sampler loop.

A model is any ``nn.Module`` called as ``model(x_t, t, text (B, L, D), mask (B, L)) -> ε`` with a
``cfg`` that has ``image_size`` (its spatial size), ``num_train_timesteps``, ``beta_schedule`` and
``caption_dropout``. Every random draw of the loss uses the global torch RNG, which ``train.fit``
checkpoints, so a resumed run is exact; sampling noise comes from private generators.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler
from torch import nn

from .. import ckpt, device


class TextEncoder(Protocol):
    """What ``build_text_bank`` needs of a frozen text encoder (06's BERT-family, 07's CLIP tower)."""
    dim: int
    max_tokens: int

    def __call__(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]: ...  # (N, L, D), (N, L)


# ----------------------------------------------------------------------------- the denoiser's config
@dataclass
class DenoiserConfig:
    """What 06's and 07's text-conditioned UNets share: widths, depth, attention, text length and the
    DDPM process they are trained in. Subclasses add their input (pixels or latents) and text width."""
    block_out_channels: tuple[int, ...] = (64, 128, 128)
    down_block_types: tuple[str, ...] = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
    layers_per_block: int = 1
    norm_num_groups: int = 32
    attention_head_dim: int = 32        # channels per head
    max_tokens: int = 32                # captions are cut to this many text tokens
    num_train_timesteps: int = 1000     # T
    beta_schedule: str = "linear"       # DDPMScheduler's default, as in the study
    caption_dropout: float = 0.1        # share of training captions replaced by ∅ (for CFG)
    prediction: str = "epsilon"         # the network's target: "epsilon" (DDPM) or "v_prediction" (v = √ᾱ ε - √(1-ᾱ) x_0)
    snr_gamma: float = 0.0              # min-SNR-γ loss weight (Hang et al. 2023); 0: unweighted (DDPM eq. 14)
    offset_noise: float = 0.0           # std of a per-channel constant added to ε (offset noise; 0: off)
    pooled_text: bool = False           # add the masked mean of the projected text to the timestep embedding

    def key(self) -> dict:
        return asdict(self)

    def heads(self) -> tuple[int, ...]:
        """Attention heads per block (diffusers' legacy ``attention_head_dim`` argument takes this)."""
        return tuple(max(1, c // self.attention_head_dim) for c in self.block_out_channels)


# ----------------------------------------------------------------------------- frozen text bank
@dataclass
class TextBank:
    """Frozen token features of a list of unique captions; row 0 is the empty caption ``""`` (CFG's ∅)."""
    captions: list[str]
    emb: torch.Tensor                   # (N, L, D) float16 (halves the cache; ``device.as_compute`` restores fp32)
    mask: torch.Tensor                  # (N, L) bool
    index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.index = {c: i for i, c in enumerate(self.captions)}

    def ids(self, captions: Sequence[str]) -> torch.Tensor:
        return torch.tensor([self.index[c] for c in captions], dtype=torch.long)

    def __getitem__(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.emb[ids], self.mask[ids]


def build_text_bank(encoder: TextEncoder, captions: Sequence[str], cache: Path | None = None) -> TextBank:
    """Encode ``[""] + unique(captions)`` once; cached under ``cache`` keyed by the captions, the
    encoder's width and length and the precision (the encoder runs under autocast)."""
    unique = [""] + sorted(set(captions) - {""})

    def compute() -> dict[str, torch.Tensor]:
        emb, mask = encoder(unique)
        return {"emb": emb.to(torch.float16), "mask": mask}

    if cache is None:
        return TextBank(unique, **compute())
    h = hashlib.sha256(("\n".join(unique) + f"|{encoder.max_tokens}|{encoder.dim}|{device.precision()}")
                       .encode()).hexdigest()[:12]
    d, _ = ckpt.cached(Path(cache) / f"text_bank_{h}.safetensors", compute)
    return TextBank(unique, d["emb"], d["mask"])


def training_data(x: torch.Tensor, captions: Sequence[Sequence[str]], bank: TextBank, name: str = "x"
                  ) -> dict[str, torch.Tensor]:
    """The dict ``train.fit`` batches: ``name`` (N, ...) images or latents, ``cap`` (N, k) ids into ``bank``
    (k = the fewest captions any image has)."""
    k = min(len(c) for c in captions)
    return {name: x, "cap": torch.stack([bank.ids(list(c)[:k]) for c in captions])}


# ----------------------------------------------------------------------------- schedules
def noise_scheduler(cfg) -> DDPMScheduler:
    """The forward process q(x_t | x_0) with ``cfg.num_train_timesteps`` steps and ``cfg.beta_schedule``."""
    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule,
                         prediction_type=getattr(cfg, "prediction", "epsilon"))


def sampling_scheduler(cfg, sampler: str):
    """DDPM (ancestral; the training chain, strided when fewer than T steps), DDIM (deterministic, η=0)
    or DPM-Solver++ (2nd order multistep)."""
    base = noise_scheduler(cfg)
    if sampler == "ddpm":
        return base
    if sampler == "ddim":
        return DDIMScheduler.from_config(base.config, timestep_spacing="trailing")
    if sampler == "dpm":
        return DPMSolverMultistepScheduler.from_config(base.config, algorithm_type="dpmsolver++",
                                                       timestep_spacing="trailing")
    raise ValueError(f"unknown sampler {sampler!r}; choose ddim, dpm or ddpm")


# ----------------------------------------------------------------------------- training
def snr_weight(sched: DDPMScheduler, t: torch.Tensor, gamma: float, prediction: str) -> torch.Tensor:
    """min-SNR-γ (Hang et al. 2023, https://arxiv.org/abs/2303.09556, eq. 8): each timestep's MSE is
    weighted so that the loss on x_0 it implies is ``min(SNR(t), γ)``, i.e. ``min(SNR, γ) / SNR`` for an
    ε target and ``min(SNR, γ) / (SNR + 1)`` for a v target; SNR(t) = ᾱ_t / (1 - ᾱ_t)."""
    abar = sched.alphas_cumprod[t].float()
    snr = abar / (1 - abar)
    clipped = torch.clamp(snr, max=gamma)
    return clipped / (snr + 1) if prediction == "v_prediction" else clipped / snr


def eps_loss(bank: TextBank, cfg, x0_of: Callable[[dict], torch.Tensor]) -> Callable[[nn.Module, dict], torch.Tensor]:
    """``loss_fn(model, batch)`` for ``train.fit``: the denoising MSE with caption dropout.

    ``x0_of(batch)`` gives the clean sample x_0 (B, C, H, W): pixels in [-1, 1] (06) or scaled latents (07).
    Per sample, in this order of draws: one of the image's captions, ∅ with probability
    ``cfg.caption_dropout``, the noise ε (plus, with ``cfg.offset_noise``, a per-channel constant) and
    the timestep t. The target is ε (DDPM eq. 14) or v (``cfg.prediction``, Salimans & Ho 2022,
    https://arxiv.org/abs/2202.00512), each sample's MSE weighted by min-SNR-γ when ``cfg.snr_gamma``."""
    sched = noise_scheduler(cfg)
    prediction, gamma, offset = (getattr(cfg, k, d) for k, d in
                                 (("prediction", "epsilon"), ("snr_gamma", 0.0), ("offset_noise", 0.0)))

    def loss_fn(model: nn.Module, batch: dict) -> torch.Tensor:
        dev = next(model.parameters()).device
        x0 = x0_of(batch)                                                   # (B, C, H, W)
        b = x0.shape[0]
        pick = torch.randint(0, batch["cap"].shape[1], (b,))               # one of the image's captions
        ids = batch["cap"][torch.arange(b), pick]
        ids = torch.where(torch.rand(b) < cfg.caption_dropout, torch.zeros_like(ids), ids)  # row 0 = ∅
        noise = torch.randn_like(x0)
        if offset:
            noise = noise + offset * torch.randn(b, x0.shape[1], 1, 1)
        t = torch.randint(0, cfg.num_train_timesteps, (b,))
        xt = sched.add_noise(x0, noise, t)                                  # eq. 4
        target = sched.get_velocity(x0, noise, t) if prediction == "v_prediction" else noise
        emb, mask = bank[ids]
        pred = model(xt.to(dev), t.to(dev), device.as_compute(emb, dev), mask.to(dev))
        if not gamma:
            return F.mse_loss(pred.float(), target.to(dev))                 # eq. 14
        per_sample = (pred.float() - target.to(dev)).pow(2).flatten(1).mean(1)
        return (snr_weight(sched, t, gamma, prediction).to(dev) * per_sample).mean()

    return loss_fn


def pooled_text_kwargs(cfg, dim: int) -> dict:
    """``UNet2DConditionModel`` arguments for ``cfg.pooled_text``: a "projection" class embedding (an MLP
    of the pooled text vector (width ``dim``), added to the timestep embedding; diffusers' ``class_embed_type``)."""
    if not getattr(cfg, "pooled_text", False):
        return {}
    return {"class_embed_type": "projection", "projection_class_embeddings_input_dim": dim}


def pooled(ctx: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Masked mean of projected text tokens (B, L, D) -> (B, D): the global text vector that SDXL and
    Imagen add to the timestep embedding besides cross-attention (``DenoiserConfig.pooled_text``)."""
    if mask is None:
        return ctx.mean(1)
    w = mask.to(ctx.dtype).unsqueeze(-1)
    return (ctx * w).sum(1) / w.sum(1).clamp(min=1)


# ----------------------------------------------------------------------------- sampling
@dataclass
class SampleConfig:
    sampler: str = "ddim"               # ddim | dpm | ddpm
    steps: int = 25                     # network evaluations per image (DDPM with steps = T: the full chain)
    guidance: float = 4.0               # CFG scale s; 1 = plain conditional model
    batch_size: int = 32


def guided_eps(model: nn.Module, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, mask: torch.Tensor,
               null_text: torch.Tensor, null_mask: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``eps(x, ∅) + s (eps(x, c) - eps(x, ∅))``, both in one batch.

    The network runs in the project's precision (``mmlib.device.autocast``); the cached text
    features (fp16 on disk) enter through ``device.as_compute``, and the guidance combination, which
    amplifies the difference of two predictions by ``scale``, is taken in fp32."""
    b = x.shape[0]
    text, null_text = device.as_compute(text), device.as_compute(null_text)
    with device.autocast(x.device):
        eps = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([text, null_text.expand(b, -1, -1)]),
                    torch.cat([mask, null_mask.expand(b, -1)]))
    cond, uncond = eps[:b].float(), eps[b:].float()
    return uncond + scale * (cond - uncond)


@torch.no_grad()
def sample(model: nn.Module, shape: tuple[int, ...], text: torch.Tensor, mask: torch.Tensor, null_text: torch.Tensor,
           null_mask: torch.Tensor, sc: SampleConfig = SampleConfig(), seed: int = 0,
           noise: torch.Tensor | None = None) -> torch.Tensor:
    """One sample x_0 of ``shape`` (C, H, W) per row of ``text`` (N, L, D), float on the CPU.

    Noise comes from its own ``torch.Generator(seed)`` (the training RNG is never touched), or is given
    (``noise`` (N, C, H, W)) so that prompts can be compared on identical starting noise; DDPM's
    per-step noise comes from ``Generator(seed + 1)``."""
    model.eval()
    dev = next(model.parameters()).device
    n = text.shape[0]
    if noise is None:
        noise = torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(seed + 1)
    null_text, null_mask = null_text.reshape(1, *null_text.shape[-2:]).to(dev), null_mask.reshape(1, -1).to(dev)
    out = []
    for i in range(0, n, sc.batch_size):
        sched = sampling_scheduler(model.cfg, sc.sampler)
        sched.set_timesteps(sc.steps)   # DDPM too: ancestral steps over a strided subset of the T steps
        x = noise[i:i + sc.batch_size].to(dev) * sched.init_noise_sigma
        c, m = text[i:i + sc.batch_size].to(dev), mask[i:i + sc.batch_size].to(dev)
        for t in sched.timesteps:
            tt = torch.full((x.shape[0],), int(t), device=dev, dtype=torch.long)
            eps = guided_eps(model, x, tt, c, m, null_text, null_mask, sc.guidance)
            kw = {"generator": gen} if sc.sampler == "ddpm" else {}
            x = sched.step(eps.to(dev), t, x, **kw).prev_sample.float()
        out.append(x.cpu())
    return torch.cat(out)
