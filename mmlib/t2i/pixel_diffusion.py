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
but moves cross-attention to the *lowest* resolution (8×8) and the middle block, with widths
(64, 128, 128) at 32 px (5.9M params, about 0.5 s per batch-32 step in bf16).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from .. import device

# ----------------------------------------------------------------------------- config


@dataclass
class PixelDiffusionConfig:
    image_size: int = 32
    block_out_channels: tuple[int, ...] = (64, 128, 128)
    down_block_types: tuple[str, ...] = ("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D")
    layers_per_block: int = 2
    norm_num_groups: int = 32
    attention_head_dim: int = 32        # channels per head
    cross_attention_dim: int = 256      # width of the projected text tokens
    text_dim: int = 384                 # frozen encoder's hidden size (MiniLM 384, BERT-base 768)
    max_tokens: int = 32                # captions are cut to this many word pieces
    num_train_timesteps: int = 1000     # T
    beta_schedule: str = "linear"       # DDPMScheduler default, as in the study
    caption_dropout: float = 0.1        # share of training captions replaced by "" (for CFG)

    def key(self) -> dict:
        return asdict(self)


@dataclass
class SampleConfig:
    sampler: str = "ddim"               # ddim | dpm | ddpm
    steps: int = 25                     # network evaluations per image (DDPM: 1000 = the full chain)
    guidance: float = 4.0               # CFG scale s; 1 = plain conditional model
    batch_size: int = 32


def config_from_profile(section) -> PixelDiffusionConfig:
    """``PixelDiffusionConfig`` from the ``pixel_diffusion`` profile section (only the fields it names)."""
    names = PixelDiffusionConfig.__dataclass_fields__
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in dict(section.get("model", {})).items() if k in names}
    return PixelDiffusionConfig(**kw)


# ----------------------------------------------------------------------------- model


class PixelDiffusion(nn.Module):
    """``eps_theta(x_t, t, text)``: UNet over pixels in [-1, 1], text via cross-attention."""

    def __init__(self, cfg: PixelDiffusionConfig):
        super().__init__()
        from diffusers import UNet2DConditionModel

        self.cfg = cfg
        # Listing 1 of the study: the only trainable part on the text side
        self.text_projection = nn.Sequential(
            nn.Linear(cfg.text_dim, cfg.cross_attention_dim),
            nn.GELU(),
            nn.LayerNorm(cfg.cross_attention_dim),
        )
        heads = [max(1, c // cfg.attention_head_dim) for c in cfg.block_out_channels]
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
            attention_head_dim=tuple(heads),  # diffusers' legacy name: the number of heads per block
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        # x (B, 3, H, W) noisy image, t (B,) timesteps, text (B, L, text_dim) frozen tokens, mask (B, L)
        ctx = self.text_projection(text.to(self.text_projection[0].weight.dtype))  # (B, L, cross_dim)
        return self.unet(x, t, encoder_hidden_states=ctx,
                         encoder_attention_mask=None if mask is None else mask.to(ctx.dtype)).sample

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ----------------------------------------------------------------------------- frozen text encoder


class TextEncoder:
    """Frozen BERT-family encoder: captions -> (token embeddings (N, L, D), attention mask (N, L))."""

    def __init__(self, tokenizer, model: nn.Module, max_tokens: int = 32):
        self.tokenizer, self.max_tokens = tokenizer, max_tokens
        self.model = model.float().eval().requires_grad_(False)   # fp32 weights; autocast decides the math
        self.dim = int(model.config.hidden_size)

    @classmethod
    def for_profile(cls, profile: str, max_tokens: int = 32) -> "TextEncoder":
        from .. import pretrained
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


@dataclass
class TextBank:
    """Frozen token embeddings of a list of unique captions; row 0 is the empty caption ``""`` (CFG's ∅)."""
    captions: list[str]
    emb: torch.Tensor                   # (N, L, D) float16
    mask: torch.Tensor                  # (N, L) bool
    index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self):
        self.index = {c: i for i, c in enumerate(self.captions)}

    def ids(self, captions: Sequence[str]) -> torch.Tensor:
        return torch.tensor([self.index[c] for c in captions], dtype=torch.long)

    def __getitem__(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.emb[ids], self.mask[ids]


def build_text_bank(encoder: TextEncoder, captions: Sequence[str], cache: Path | None = None) -> TextBank:
    """Encode ``[""] + unique(captions)`` once; cached as a ``.pt`` (weights_only) keyed by the captions."""
    unique = [""] + sorted(set(captions) - {""})
    if cache is not None:
        h = hashlib.sha256(("\n".join(unique) + f"|{encoder.max_tokens}|{encoder.dim}|{device.precision()}")
                           .encode()).hexdigest()[:12]   # computed under autocast: the precision is in the key
        path = Path(cache) / f"text_bank_{h}.pt"
        if path.exists():
            d = torch.load(path, weights_only=True)
            return TextBank(unique, d["emb"], d["mask"])
    emb, mask = encoder(unique)
    if cache is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"emb": emb, "mask": mask}, tmp)
        tmp.replace(path)
    return TextBank(unique, emb, mask)


# ----------------------------------------------------------------------------- training


def noise_scheduler(cfg: PixelDiffusionConfig):
    from diffusers import DDPMScheduler
    return DDPMScheduler(num_train_timesteps=cfg.num_train_timesteps, beta_schedule=cfg.beta_schedule)


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) in [0, 255] -> float in [-1, 1]."""
    return x.float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8 in [0, 255]."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def training_data(images: torch.Tensor, captions: Sequence[Sequence[str]], bank: TextBank) -> dict[str, torch.Tensor]:
    """The dict ``train.fit`` batches: ``x`` uint8 (N, 3, H, W), ``cap`` (N, k) ids into ``bank``."""
    k = min(len(c) for c in captions)
    cap = torch.stack([bank.ids(list(c)[:k]) for c in captions])  # (N, k)
    return {"x": images, "cap": cap}


def diffusion_loss(bank: TextBank, cfg: PixelDiffusionConfig) -> Callable[[nn.Module, dict], tuple]:
    """``loss_fn(model, batch)`` for ``train.fit``: DDPM ε-MSE (eq. 14) with caption dropout.

    Every random draw uses the global torch RNG, which ``train.fit`` checkpoints, so resuming is exact.
    """
    sched = noise_scheduler(cfg)

    def loss_fn(model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        dev = next(model.parameters()).device
        x0 = to_model_range(batch["x"])                                     # (B, 3, H, W)
        b = x0.shape[0]
        pick = torch.randint(0, batch["cap"].shape[1], (b,))               # one of the image's captions
        ids = batch["cap"][torch.arange(b), pick]
        ids = torch.where(torch.rand(b) < cfg.caption_dropout, torch.zeros_like(ids), ids)  # ∅ for CFG
        noise = torch.randn_like(x0)
        t = torch.randint(0, cfg.num_train_timesteps, (b,))
        xt = sched.add_noise(x0, noise, t)                                  # eq. 4
        emb, mask = bank[ids]
        pred = model(xt.to(dev), t.to(dev), device.as_compute(emb, dev), mask.to(dev))
        loss = F.mse_loss(pred.float(), noise.to(dev))                      # eq. 14
        return loss, {}

    return loss_fn


# ----------------------------------------------------------------------------- sampling


def sampling_scheduler(cfg: PixelDiffusionConfig, sampler: str):
    """DDPM (ancestral; the training chain, strided when fewer than T steps), DDIM (deterministic, η=0)
    or DPM-Solver++ (2nd order multistep)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
    base = noise_scheduler(cfg)
    if sampler == "ddpm":
        return base
    if sampler == "ddim":
        return DDIMScheduler.from_config(base.config, timestep_spacing="trailing")
    if sampler == "dpm":
        return DPMSolverMultistepScheduler.from_config(base.config, algorithm_type="dpmsolver++",
                                                       timestep_spacing="trailing")
    raise ValueError(f"unknown sampler {sampler!r}; choose ddim, dpm or ddpm")


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
def sample(model: PixelDiffusion, text: torch.Tensor, mask: torch.Tensor, null_text: torch.Tensor,
           null_mask: torch.Tensor, sc: SampleConfig = SampleConfig(), seed: int = 0,
           noise: torch.Tensor | None = None, progress: bool = False) -> torch.Tensor:
    """Generate one image per row of ``text`` (N, L, D): uint8 (N, 3, H, W).

    Noise comes from its own ``torch.Generator(seed)`` (the training RNG is never touched), or is given
    (``noise`` (N, 3, H, W)) so that prompts can be compared on identical starting noise.
    """
    model.eval()
    dev, cfg = model.device, model.cfg
    n, size = text.shape[0], cfg.image_size
    if noise is None:
        noise = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))
    gen = torch.Generator().manual_seed(seed + 1)  # DDPM's per-step noise
    null_text, null_mask = null_text.reshape(1, *null_text.shape[-2:]).to(dev), null_mask.reshape(1, -1).to(dev)
    out = []
    for i in range(0, n, sc.batch_size):
        sched = sampling_scheduler(cfg, sc.sampler)
        sched.set_timesteps(sc.steps)  # DDPM too: ancestral steps over a strided subset of the T steps
        x = noise[i:i + sc.batch_size].to(dev) * sched.init_noise_sigma
        c, m = text[i:i + sc.batch_size].to(dev), mask[i:i + sc.batch_size].to(dev)
        for t in sched.timesteps:
            tt = torch.full((x.shape[0],), int(t), device=dev, dtype=torch.long)
            eps = guided_eps(model, x, tt, c, m, null_text, null_mask, sc.guidance)
            kw = {"generator": gen} if sc.sampler == "ddpm" else {}
            x = sched.step(eps.to(dev), t, x, **kw).prev_sample.float()
        out.append(to_uint8(x.cpu()))
    return torch.cat(out)


def generate(model: PixelDiffusion, encoder: TextEncoder, prompts: Sequence[str], sc: SampleConfig = SampleConfig(),
             seed: int = 0, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Prompts -> uint8 images (N, 3, H, W), encoding the prompts (and ∅) with the frozen encoder."""
    emb, mask = encoder(list(prompts) + [""])
    return sample(model, emb[:-1], mask[:-1], emb[-1], mask[-1], sc, seed=seed, noise=noise)


# ----------------------------------------------------------------------------- notebook helpers


def train_config(section) -> "TrainConfig":
    """``train.TrainConfig`` from the ``pixel_diffusion`` profile section (``steps`` may be overridden)."""
    from ..train import TrainConfig
    return TrainConfig(steps=section.steps, batch_size=section.batch_size, lr=section.lr, warmup=section.warmup,
                       ema=section.ema, ckpt_every=section.ckpt_every, seed=section.get("seed", 0),
                       log_every=max(1, section.steps // 100))


def prepare(profile: str, encoder: TextEncoder, cfg: PixelDiffusionConfig, captions_per_image: int = 5
            ) -> tuple[dict[str, torch.Tensor], TextBank]:
    """Training tensors for ``train.fit`` and the frozen text bank, both cached under ``runs/<profile>/06/``.

    Images: the train split at ``cfg.image_size`` (uint8). Text: the first ``captions_per_image``
    captions of each image (the study used the first one only), encoded once by the frozen encoder.
    """
    from .. import data as mdata
    from ..paths import run_dir
    if encoder.dim != cfg.text_dim:
        raise ValueError(f"text encoder width {encoder.dim} != model text_dim {cfg.text_dim}; fix the profile")
    split = mdata.load(profile)
    images = mdata.images(split.folder, [n for n, _ in split.train], cfg.image_size)  # (N, 3, r, r)
    caps = [list(c)[:captions_per_image] for _, c in split.train]
    bank = build_text_bank(encoder, [c for cs in caps for c in cs], run_dir(profile, "06") / "text")
    return training_data(images, caps, bank), bank


def image_grid(images: torch.Tensor, titles: Sequence[str] | None = None, ncol: int = 8, scale: float = 1.1):
    """uint8 images (N, 3, H, W) -> a matplotlib figure, ``ncol`` per row, optional titles."""
    import matplotlib.pyplot as plt
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


# ----------------------------------------------------------------------------- export (09's speed comparison)


def export_path(profile: str) -> Path:
    from ..paths import run_dir
    return run_dir(profile, "06") / "export" / "pixel_diffusion.safetensors"


def export_trained(profile: str, model: PixelDiffusion) -> Path:
    """Write the trained (EMA) weights with their config, for ``load_trained`` (safetensors, atomic)."""
    from ..ckpt import save_weights
    return save_weights(export_path(profile), model.state_dict(), asdict(model.cfg))


def load_trained(profile: str) -> PixelDiffusion:
    """The model notebook 06 trained and exported in ``profile``; FileNotFoundError before it has run."""
    from ..ckpt import load_weights, read_dataclass

    path = export_path(profile)
    if not path.exists():
        raise FileNotFoundError(f"{path}: run notebook 06 in profile {profile!r} first")
    cfg = read_dataclass(PixelDiffusionConfig, path)
    model = PixelDiffusion(cfg)
    model.load_state_dict(load_weights(path, asdict(cfg)))
    return model.eval().requires_grad_(False)
