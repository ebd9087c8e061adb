"""Infinity's bitwise visual tokenizer: a conv encoder/decoder around a multi-scale residual BSQ.

Han et al. 2024, "Infinity: Scaling Bitwise AutoRegressive Modeling for High-Resolution Image
Synthesis", arXiv 2412.04431, sec. 3.1; the multi-scale residual scheme is VAR's (Tian et al. 2024,
arXiv 2404.02905). With the encoder's feature map f (B, d, h, w) and scale sides r_1 < ... < r_K = h:

    R_k = Q(down(f - F_{k-1}, r_k))                 # BSQ (eq. 2) of the residual left so far
    F_k = sum_{i<=k} g_i * up(R_i, (h, w))          # eq. 4 of the report (with a learned gain g_i)

so the image is described coarse-to-fine by K maps of d-bit tokens (eq. 3 factorises over them).
Because every BSQ code has unit norm, each scale gets one learned positive gain g_k: without it a
scale could only add unit-length corrections, too large for the small residuals of fine scales (our
choice; the paper does not spell out how residual magnitudes are handled).

Bitwise self-correction (Infinity sec. 3.3) lives in ``MultiScaleBSQ.forward(flip_prob=p)``: bits of
every scale are flipped with probability p *before* they enter F_k, and the later scales quantize the
residual of that corrupted F_k, so the targets of scale k+1 teach the transformer to repair the
errors of scales <= k. Losses: L1 + MSE reconstruction, BSQ commitment and entropy (no GAN or
perceptual loss at this size).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ...images import psnr as images_psnr
from ...images import to_signed, to_uint8
from .bsq import BSQ, bits_to_codes


@dataclass
class TokenizerConfig:
    image_size: int = 32
    channels: tuple[int, ...] = (64, 128)      # one 2x down-sampling per entry: latent side = size / 2^len
    bits: int = 16                             # d: bits per token (implicit vocabulary 2^d)
    scales: tuple[int, ...] = (1, 2, 3, 4, 6, 8)  # sides r_1..r_K; r_K == latent side
    commit_weight: float = 0.25
    entropy_weight: float = 0.05
    entropy_gamma: float = 1.0

    def __post_init__(self):
        self.channels, self.scales = tuple(self.channels), tuple(self.scales)
        side = self.image_size // 2 ** len(self.channels)
        if self.scales[-1] != side or list(self.scales) != sorted(set(self.scales)):
            raise ValueError(f"scales {self.scales} must increase strictly and end at the latent side {side}")

    @property
    def latent_side(self) -> int:
        return self.scales[-1]

    def to_dict(self) -> dict:
        return asdict(self)


class ScalesOutput(NamedTuple):
    bits: list[torch.Tensor]       # K tensors (B, d, r_k, r_k) int64: targets, one per scale
    inputs: list[torch.Tensor]     # K-1 tensors (B, d, r_{k+1}, r_{k+1}): down(F_k) feeding scale k+1
    f_hat: torch.Tensor            # (B, d, h, w) F_K, straight-through to the encoder
    commit: torch.Tensor           # () mean over scales
    entropy: torch.Tensor          # () mean over scales


def down(x: torch.Tensor, side: int) -> torch.Tensor:
    return x if x.shape[-1] == side else F.interpolate(x, size=(side, side), mode="area")


def up(x: torch.Tensor, side: int) -> torch.Tensor:
    return x if x.shape[-1] == side else F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)


def flip_bits(bits: torch.Tensor, p: float) -> torch.Tensor:
    """Flip each bit independently with probability p (global torch RNG, so ``train.fit`` resumes exactly)."""
    if p <= 0:
        return bits
    return bits ^ (torch.rand(bits.shape, device=bits.device) < p).long()


class MultiScaleBSQ(nn.Module):
    """Residual quantization over growing scales (eqs. 3-4) with BSQ at every scale."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.scales, self.bits = cfg.scales, cfg.bits
        self.bsq = BSQ(cfg.bits, gamma=cfg.entropy_gamma)
        # g_k > 0, initialised to decay geometrically like the residuals
        self.log_gain = nn.Parameter(torch.log(0.7 ** torch.arange(len(cfg.scales), dtype=torch.float)))

    def gains(self) -> torch.Tensor:
        return self.log_gain.exp()

    def forward(self, f: torch.Tensor, flip_prob: float = 0.0) -> ScalesOutput:
        """Quantize f (B, d, h, w); ``flip_prob`` > 0 applies bitwise self-correction's corruption."""
        h, g = f.shape[-1], self.gains()
        f_hat = torch.zeros_like(f)
        bits, inputs, commits, entropies = [], [], [], []
        for k, side in enumerate(self.scales):
            out = self.bsq(down(f - f_hat, side))                  # R_k, eq. 2 on the residual
            bits.append(out.bits)
            codes = out.codes
            if flip_prob > 0:
                codes = bits_to_codes(flip_bits(out.bits, flip_prob)).to(codes.dtype)
            f_hat = f_hat + g[k] * up(codes, h)                    # eq. 4
            if k + 1 < len(self.scales):
                inputs.append(down(f_hat, self.scales[k + 1]))
            commits.append(out.commit)
            entropies.append(out.entropy)
        return ScalesOutput(bits, inputs, f_hat,
                            torch.stack(commits).mean(), torch.stack(entropies).mean())

    def bits_to_features(self, bits: list[torch.Tensor], side: int) -> torch.Tensor:
        """F_k from the bits of the first k scales (k = len(bits)): (B, d, side, side)."""
        g = self.gains()
        return sum(g[k] * up(bits_to_codes(b), side) for k, b in enumerate(bits))


def res_block(ch: int) -> nn.Module:
    return _Residual(nn.Sequential(nn.GroupNorm(8, ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1),
                                   nn.GroupNorm(8, ch), nn.SiLU(), nn.Conv2d(ch, ch, 3, padding=1)))


class _Residual(nn.Module):
    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


class Encoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        ch = cfg.channels
        layers = [nn.Conv2d(3, ch[0], 3, padding=1)]
        for i, c in enumerate(ch):
            nxt = ch[min(i + 1, len(ch) - 1)]
            layers += [res_block(c), nn.Conv2d(c, nxt, 4, stride=2, padding=1)]  # (B, c, H, W) -> (B, nxt, H/2, W/2)
        layers += [res_block(ch[-1]), nn.GroupNorm(8, ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], cfg.bits, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):            # (B, 3, H, W) in [-1, 1] -> (B, d, h, w)
        return self.net(x)


class Decoder(nn.Module):
    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        ch = cfg.channels[::-1]
        layers = [nn.Conv2d(cfg.bits, ch[0], 3, padding=1), res_block(ch[0])]
        for i, c in enumerate(ch):
            nxt = ch[min(i + 1, len(ch) - 1)]
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, nxt, 3, padding=1), res_block(nxt)]
        layers += [nn.GroupNorm(8, ch[-1]), nn.SiLU(), nn.Conv2d(ch[-1], 3, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, f):            # (B, d, h, w) -> (B, 3, H, W)
        return self.net(f)


class BitwiseTokenizer(nn.Module):
    """Encoder -> multi-scale residual BSQ -> decoder. Images are float in [-1, 1]."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder, self.quantizer, self.decoder = Encoder(cfg), MultiScaleBSQ(cfg), Decoder(cfg)

    def forward(self, x: torch.Tensor, flip_prob: float = 0.0) -> tuple[torch.Tensor, ScalesOutput]:
        q = self.quantizer(self.encoder(x), flip_prob)
        return self.decoder(q.f_hat), q

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Images -> bits of every scale: K tensors (B, d, r_k, r_k)."""
        return self.quantizer(self.encoder(x)).bits

    @torch.no_grad()
    def decode_bits(self, bits: list[torch.Tensor]) -> torch.Tensor:
        """Bits of the first k scales -> images (B, 3, H, W) in [-1, 1] (k < K gives the coarse image)."""
        f = self.quantizer.bits_to_features(bits, self.cfg.latent_side)
        return self.decoder(f).clamp(-1, 1)


@torch.no_grad()
def reconstruct(model: BitwiseTokenizer, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """uint8 images (N, 3, H, W) -> uint8 reconstructions from every scale's bits (encode + decode)."""
    model.eval()
    return torch.cat([to_uint8(model.decode_bits(model.encode(to_signed(images[i:i + batch_size]))))
                      for i in range(0, len(images), batch_size)])


def tokenizer_loss(model: BitwiseTokenizer, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
    """``train.fit`` loss: batch["image"] uint8 (B, 3, H, W)."""
    x = to_signed(batch["image"])
    rec, q = model(x)
    rec = rec.float()
    l1, mse = (rec - x).abs().mean(), (rec - x).pow(2).mean()
    loss = l1 + mse + model.cfg.commit_weight * q.commit + model.cfg.entropy_weight * q.entropy
    return loss, {"l1": l1.detach(), "psnr": psnr(rec.detach(), x), "entropy": q.entropy.detach()}


def psnr(rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean PSNR in dB of reconstructions of images in [-1, 1] (peak-to-peak 2)."""
    return images_psnr(rec.clamp(-1, 1), x, peak=2.0).mean()


@torch.no_grad()
def psnr_per_scale(model: BitwiseTokenizer, images: torch.Tensor, batch_size: int = 256) -> list[float]:
    """Reconstruction PSNR (dB) using the first k = 1..K scales, on uint8 images (N, 3, H, W)."""
    model.eval()
    totals = torch.zeros(len(model.cfg.scales))
    for i in range(0, len(images), batch_size):
        x = to_signed(images[i:i + batch_size])
        bits = model.encode(x)
        for k in range(1, len(bits) + 1):
            totals[k - 1] += psnr(model.decode_bits(bits[:k]), x) * len(x)
    return (totals / len(images)).tolist()
