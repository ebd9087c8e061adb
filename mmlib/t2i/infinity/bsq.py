"""Binary spherical quantization (BSQ), the quantizer of Infinity's bitwise tokenizer.

Zhao, Xiong, Krähenbühl 2024, "Image and Video Tokenization with Binary Spherical Quantization",
arXiv 2406.07548; used by Infinity (Han et al. 2024, arXiv 2412.04431, sec. 3.1) and eq. 2 of the
study's report:

    q = Q(z) = sign(z / |z|) / sqrt(d)                                    # eq. 2

Every d-dim latent is projected onto the unit sphere and then snapped to the nearest corner of the
hypercube inscribed in it, so the implicit codebook has 2^d entries that are never stored: a code is
just d bits. Gradients pass straight through (``u + (q - u).detach()``). The training terms follow
BSQ: a commitment term ``|u - q|^2`` and an entropy term ``E[H(q(c|u))] - gamma * H(E[q(c|u)])``
(sharp per-token assignments, uniform codebook use), where the soft assignment factorises over bits:
``q(c_i = +1 | u) = sigmoid(4 * tau * u_i / sqrt(d))`` because ``|c|`` is fixed.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class BSQOutput(NamedTuple):
    codes: torch.Tensor        # (B, d, ...) in {-1/sqrt(d), +1/sqrt(d)}, straight-through gradient to z
    bits: torch.Tensor         # (B, d, ...) int64 in {0, 1}; 1 means the positive code
    commit: torch.Tensor       # () mean |u - q|^2 per token
    entropy: torch.Tensor      # () E[H(q(c|u))] - gamma * H(E[q(c|u)]), in bits per token


def bsq(z: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Eq. 2 with a straight-through gradient: (B, d, ...) -> codes of norm 1 along ``dim``."""
    d = z.shape[dim]
    u = F.normalize(z, dim=dim)
    q = torch.where(u >= 0, 1.0, -1.0).to(u.dtype) / math.sqrt(d)   # sign(0) := +1, so a code is never 0
    return u + (q - u).detach()


def codes_to_bits(codes: torch.Tensor) -> torch.Tensor:
    return (codes > 0).long()


def bits_to_codes(bits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Inverse of ``codes_to_bits``: {0,1} -> {-1/sqrt(d), +1/sqrt(d)} along ``dim``."""
    return (bits.float() * 2 - 1) / math.sqrt(bits.shape[dim])


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-6, 1 - 1e-6)
    return -(p * p.log2() + (1 - p) * (1 - p).log2())


def bsq_entropy(u: torch.Tensor, dim: int = 1, tau: float = 1.0, gamma: float = 1.0) -> torch.Tensor:
    """BSQ's factorised entropy objective (to be minimised), in bits per token.

    Per-sample entropy pushes each latent towards one corner; the codebook ("batch") entropy, from
    the bit-wise mean probabilities, rewards using all corners. Both factorise over the d bits.
    """
    d = u.shape[dim]
    p = torch.sigmoid(4 * tau * u / math.sqrt(d))                       # q(c_i = +1 | u)
    per_sample = binary_entropy(p).sum(dim).mean()
    p_mean = p.movedim(dim, -1).reshape(-1, d).mean(0)
    codebook = binary_entropy(p_mean).sum()
    return per_sample - gamma * codebook


class BSQ(nn.Module):
    """Quantizer module: ``forward(z) -> BSQOutput`` with z of shape (B, d, H, W)."""

    def __init__(self, dim: int, tau: float = 1.0, gamma: float = 1.0):
        super().__init__()
        self.dim, self.tau, self.gamma = dim, tau, gamma

    def forward(self, z: torch.Tensor) -> BSQOutput:
        u = F.normalize(z.float(), dim=1)
        codes = bsq(z.float())
        commit = (u - codes.detach()).pow(2).sum(1).mean()
        return BSQOutput(codes, codes_to_bits(codes.detach()), commit,
                         bsq_entropy(u, tau=self.tau, gamma=self.gamma))
