"""First stage of the latent diffusion model: a VQ-GAN style autoencoder (the study's section 2.4, Figure 10).

- Autoencoder: diffusers ``VQModel`` (encoder → 1×1 conv → nearest-codebook quantizer → decoder),
  van den Oord et al. 2017, "Neural Discrete Representation Learning", https://arxiv.org/abs/1711.00937.
- Losses as in taming-transformers / LDM (Esser et al. 2021, https://arxiv.org/abs/2012.09841;
  Rombach et al. 2022, https://arxiv.org/abs/2112.10752, appendix G):

      L = |x - x̂|₁ + w_p · P(x, x̂)                           reconstruction + perceptual
        + ‖sg[z] - e‖² + β ‖z - sg[e]‖²                      codebook + commitment (VQModel's commit_loss)
        + 1[step ≥ s₀] · λ · (-D(x̂))                          generator hinge term, adaptive λ (eq. 7 of VQGAN)
        + 1[step ≥ s₀] · ½ (relu(1 - D(x)) + relu(1 + D(sg[x̂])))   discriminator hinge loss

  with P the LPIPS-style distance between unit-normalised feature maps of a frozen ImageNet network
  (LPIPS-VGG in ``paper`` when the ``lpips`` package and its weights are present; otherwise the
  offline EfficientNet-Lite0 of ``mmlib.pretrained.cnn``), D a PatchGAN discriminator.

One optimiser, one loss. The shared loop (``mmlib.train.fit``) has a single optimiser, so generator
and discriminator are two parts of one ``VQGAN`` module and the loss above is one sum whose terms
touch disjoint parameters: the generator term sees the discriminator through *detached* weights
(``torch.func.functional_call``), the discriminator term sees *detached* reconstructions. The sum's
gradient is then exactly (∂L_G/∂θ_G, ∂L_D/∂θ_D), as with two optimisers stepping together (one AdamW,
shared lr and betas). The step that switches the discriminator on is counted in ``VQGAN.steps_seen``,
a parameter that never gets a gradient, so fit()'s checkpoint (trainable weights only) carries it and
an interrupted run resumes bit-identically.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from diffusers import VQModel
from torch import nn

from .. import ckpt, profiles, train
from ..images import psnr, to_signed, to_uint8


@dataclass
class VQConfig:
    image_size: int = 64                           # 256 in paper
    block_out_channels: tuple[int, ...] = (64, 128, 128)  # len-1 halvings: f = 2**(len-1); paper (128,128,256,512)
    layers_per_block: int = 1
    latent_channels: int = 4                       # paper: 32×32×4 latents
    num_codes: int = 512                           # paper 8192
    norm_num_groups: int = 32
    mid_attention: bool = False                    # self-attention in the bottleneck (paper True)
    # losses
    perceptual_weight: float = 1.0
    perceptual_size: int = 64                      # images are resized to this before the perceptual net
    codebook_weight: float = 1.0
    disc_start: int = 300                          # first step with the GAN terms (paper: after ≥1 epoch)
    disc_weight: float = 0.5                       # multiplies the adaptive λ
    disc_channels: int = 32
    disc_layers: int = 2                           # PatchGAN depth; receptive field 22 px with 2 layers

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def latent_size(self) -> int:
        return self.image_size // self.downsample


def build_vqmodel(cfg: VQConfig):
    """A diffusers ``VQModel`` of the configured size (codebook dim = latent channels, as in LDM's vq-f4/f8)."""

    n = len(cfg.block_out_channels)
    return VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                   up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=tuple(cfg.block_out_channels),
                   layers_per_block=cfg.layers_per_block, latent_channels=cfg.latent_channels,
                   sample_size=cfg.image_size, num_vq_embeddings=cfg.num_codes,
                   norm_num_groups=cfg.norm_num_groups, mid_block_add_attention=cfg.mid_attention)


def load_vqmodel(path_or_name: str, subfolder: str | None = None):
    """Paper loader: a ``VQModel`` saved with ``save_pretrained`` (a local folder or a hub name)."""

    kw = {"subfolder": subfolder} if subfolder else {}
    return VQModel.from_pretrained(path_or_name, **kw)


class VQOut(NamedTuple):
    recon: torch.Tensor      # (B, 3, H, W) in [-1, 1] (unclamped)
    qloss: torch.Tensor      # () codebook + β·commitment
    indices: torch.Tensor    # (B, h, w) code ids
    latents: torch.Tensor    # (B, C, h, w) pre-quantisation latents (what the diffusion model sees)


def vq_forward(vq, x: torch.Tensor) -> VQOut:
    """Encode, quantise, decode; x (B, 3, H, W) in [-1, 1]."""
    h = vq.encode(x).latents                                   # (B, C, h, w)
    quant, qloss, (_, _, idx) = vq.quantize(h)                 # idx (B·h·w,)
    recon = vq.decoder(vq.post_quant_conv(quant))
    return VQOut(recon, qloss.mean(), idx.view(h.shape[0], h.shape[2], h.shape[3]), h)


def codes(vq, x: torch.Tensor) -> torch.Tensor:
    """Code ids (B, h, w) of images x in [-1, 1]."""
    h = vq.encode(x).latents
    return vq.quantize(h)[2][2].view(h.shape[0], h.shape[2], h.shape[3])


def decode_codes(vq, idx: torch.Tensor) -> torch.Tensor:
    """Images from code ids (B, h, w): the codebook lookup the decoder sees."""
    b, h, w = idx.shape
    quant = vq.quantize.get_codebook_entry(idx.reshape(-1), (b, h, w, vq.quantize.vq_embed_dim))
    return vq.decoder(vq.post_quant_conv(quant))


# ---------------------------------------------------------------- codebook statistics
def codebook_usage(indices: torch.Tensor, num_codes: int) -> dict[str, float]:
    """Perplexity exp(H(p)) of the code histogram p, and how many codes are used / dead (never chosen)."""
    counts = torch.bincount(indices.reshape(-1).long(), minlength=num_codes).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum().item()
    used = int((counts > 0).sum())
    return {"perplexity": math.exp(entropy), "used": used, "dead": num_codes - used,
            "used_fraction": used / num_codes, "num_codes": num_codes}


# ---------------------------------------------------------------- discriminator
class PatchGAN(nn.Module):
    """PatchGAN discriminator (Isola et al. 2017, https://arxiv.org/abs/1611.07004): one logit per patch.

    GroupNorm instead of BatchNorm: no running statistics, so fit()'s checkpoints (trainable weights only)
    describe it completely and real/fake halves never mix through batch statistics.
    """

    def __init__(self, channels: int = 64, n_layers: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = channels
        for i in range(1, n_layers + 1):
            c_out = channels * min(2 ** i, 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(c, c_out, 4, stride, 1), nn.GroupNorm(min(32, c_out // 4), c_out), nn.LeakyReLU(0.2)]
            c = c_out
        layers.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        for m in self.modules():  # DCGAN init, as in taming-transformers
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, 1, h', w') logits
        return self.net(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean())


# ---------------------------------------------------------------- the trained module and its loss
class VQGAN(nn.Module):
    """VQModel + PatchGAN discriminator + frozen perceptual network, trained by ``vqgan_loss`` with fit()."""

    def __init__(self, cfg: VQConfig, perceptual: nn.Module | None, vq=None):
        super().__init__()
        self.cfg = cfg
        self.vq = vq if vq is not None else build_vqmodel(cfg)
        self.disc = PatchGAN(cfg.disc_channels, cfg.disc_layers)
        self.perceptual = perceptual.requires_grad_(False) if perceptual is not None else None
        # a step counter that travels in fit()'s checkpoints (see module docstring); never gets a gradient
        self.steps_seen = nn.Parameter(torch.zeros(()), requires_grad=True)

    @property
    def step(self) -> int:
        return int(self.steps_seen.item())

    def gan_active(self) -> bool:
        return self.step >= self.cfg.disc_start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return vq_forward(self.vq, x).recon


def _adaptive_weight(nll: torch.Tensor, g_loss: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
    """λ = ‖∇_last L_rec‖ / (‖∇_last L_G‖ + 1e-4), clamped to [0, 1e4] (VQGAN eq. 7)."""
    g_nll = torch.autograd.grad(nll, last, retain_graph=True)[0]
    g_adv = torch.autograd.grad(g_loss, last, retain_graph=True)[0]
    return (g_nll.norm() / (g_adv.norm() + 1e-4)).clamp(0, 1e4).detach()


def vqgan_loss(model: VQGAN, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """fit() loss: batch["image"] uint8 (B, 3, H, W) → the summed VQGAN objective of the module docstring."""
    cfg = model.cfg
    x = to_signed(batch["image"])                     # (B, 3, H, W) in [-1, 1]
    out = vq_forward(model.vq, x)
    rec = (x - out.recon).abs().mean()
    nll = rec
    p = torch.zeros(())
    if model.perceptual is not None and cfg.perceptual_weight > 0:
        p = model.perceptual(x, out.recon.float()).mean()
        nll = nll + cfg.perceptual_weight * p
    loss = nll + cfg.codebook_weight * out.qloss
    logs = {"rec_l1": rec.detach(), "perceptual": p.detach(), "codebook": out.qloss.detach(),
            "gan_weight": 0.0, "g_loss": 0.0, "d_loss": 0.0, "logits_real": 0.0, "logits_fake": 0.0}
    active = model.gan_active()
    if active:
        frozen_d = {n: q.detach() for n, q in model.disc.named_parameters()}
        g_loss = -torch.func.functional_call(model.disc, frozen_d, (out.recon,)).mean()
        lam = (_adaptive_weight(nll, g_loss, model.vq.decoder.conv_out.weight) * cfg.disc_weight
               if torch.is_grad_enabled() else torch.tensor(cfg.disc_weight))
        real, fake = model.disc(x), model.disc(out.recon.detach())
        d_loss = hinge_d_loss(real, fake)
        loss = loss + lam * g_loss + d_loss
        logs.update(gan_weight=lam, g_loss=g_loss.detach(), d_loss=d_loss.detach(),
                    logits_real=real.detach().mean(), logits_fake=fake.detach().mean())
    if model.training:
        with torch.no_grad():
            model.steps_seen.add_(1)
    return loss, logs


# ---------------------------------------------------------------- evaluation helpers
@torch.no_grad()
def reconstruct(vq, images: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 3, H, W) -> (uint8 reconstructions, code ids (N, h, w))."""
    recs, ids = [], []
    for i in range(0, len(images), batch_size):
        x = to_signed(images[i:i + batch_size])
        out = vq_forward(vq, x)
        recs.append(to_uint8(out.recon))
        ids.append(out.indices)
    return torch.cat(recs), torch.cat(ids)


@torch.no_grad()
def evaluate(vq, images: torch.Tensor, num_codes: int, batch_size: int = 64) -> dict[str, float]:
    """PSNR (dB) and codebook usage on held-out uint8 images."""
    recs, ids = reconstruct(vq, images, batch_size)
    return {"psnr": psnr(recs.float() / 255, images.float() / 255).mean().item(), **codebook_usage(ids, num_codes)}


@torch.no_grad()
def init_codebook(vq, images: torch.Tensor, seed: int = 0) -> None:
    """Data-dependent codebook init: codes = random encoder outputs of a batch (+ small noise).

    diffusers draws the codebook from U(±1/K), far from where an untrained encoder's outputs lie, so
    the first nearest-code searches pick a handful of codes and the rest die; starting on the data
    keeps most codes alive (cf. k-means init in SoundStream / vector-quantize-pytorch).
    """
    g = torch.Generator().manual_seed(seed)
    z = vq.encode(to_signed(images)).latents            # (B, C, h, w)
    z = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])            # (B·h·w, C)
    k = vq.quantize.n_e
    pick = torch.randint(len(z), (k,), generator=g)
    noise = torch.randn(k, z.shape[1], generator=g) * z.std(0, keepdim=True) * 0.1
    vq.quantize.embedding.weight.copy_(z[pick] + noise)



# ---------------------------------------------------------------- one call for the notebook
def config_from_profile(section) -> VQConfig:
    """The first stage's config of a ``latent_diffusion`` section (a copy: callers may replace fields)."""
    return dataclasses.replace(section.vq)


def train_first_stage(profile: str, train_images: torch.Tensor, val_images: torch.Tensor, out_dir,
                      perceptual: nn.Module | None = None, perceptual_name: str = "", progress: bool = True) -> dict:
    """Train (or reload) the VQGAN of ``profile`` on uint8 images; evaluate PSNR / codebook usage on
    ``val_images`` just before the discriminator starts and at the end (collapse check).

    Returns {"model": VQGAN, "vq": VQModel (frozen, eval), "fit", "before_gan", "final", "cfg"}.
    """


    sec = profiles.get(profile).latent_diffusion
    cfg = config_from_profile(sec)
    torch.manual_seed(0)
    model = VQGAN(cfg, perceptual)
    init_codebook(model.vq, train_images[torch.randperm(len(train_images))[:64]])
    tcfg = train.TrainConfig(steps=sec.vq_steps, batch_size=sec.vq_batch, lr=sec.vq_lr, warmup=sec.vq_warmup,
                             betas=(0.5, 0.9), weight_decay=0.0, keep=3, log_every=max(1, sec.vq_steps // 100),
                             ckpt_every=cfg.disc_start if 0 < cfg.disc_start < sec.vq_steps else 0)
    key = {"vq": asdict(cfg), "n_images": len(train_images), "perceptual": perceptual_name}
    fit = train.fit(model, vqgan_loss, {"image": train_images}, tcfg, out_dir, key, progress=progress)
    before = None
    mid = fit.train_dir / f"ckpt-{cfg.disc_start:07d}.pt"
    if mid.exists():  # the weights just before the first GAN step
        early = copy.deepcopy(model.vq)
        weights = ckpt.load_checkpoint(mid)["weights"]
        with torch.no_grad():
            for n, p in early.named_parameters():
                p.copy_(weights["vq." + n])
        before = evaluate(early.eval(), val_images, cfg.num_codes)
    vq = model.vq.eval().requires_grad_(False)
    return {"model": model, "vq": vq, "fit": fit, "before_gan": before,
            "final": evaluate(vq, val_images, cfg.num_codes), "cfg": cfg}


def reconstruction_figure(images: torch.Tensor, recons: torch.Tensor, n: int = 8):
    """Figure 10: originals (top row) over their reconstructions (bottom row)."""

    n = min(n, len(images))
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.4))
    for i in range(n):
        for row, src in enumerate((images, recons)):
            ax = axes[row, i] if n > 1 else axes[row]
            ax.imshow(src[i].permute(1, 2, 0).numpy())
            ax.set_xticks([]), ax.set_yticks([])
    (axes[0, 0] if n > 1 else axes[0]).set_ylabel("input")
    (axes[1, 0] if n > 1 else axes[1]).set_ylabel("reconstruction")
    fig.tight_layout()
    return fig


def curves_figure(history: list[dict], disc_start: int):
    """Reconstruction / perceptual / discriminator curves with the step the GAN starts."""

    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    for k in ("rec_l1", "perceptual", "codebook"):
        axes[0].plot(steps, [h[k] for h in history], label=k)
    for k in ("d_loss", "logits_real", "logits_fake"):
        axes[1].plot(steps, [h[k] for h in history], label=k)
    for ax in axes:
        ax.axvline(disc_start, color="k", ls="--", lw=0.8)
        ax.set_xlabel("step"), ax.legend(fontsize=7)
    axes[0].set_yscale("log"), axes[0].set_title("autoencoder losses"), axes[1].set_title("PatchGAN (hinge)")
    fig.tight_layout()
    return fig
