"""Next-scale sampling for Infinity: classifier-free guidance, temperature and top-k / top-p on bits.

Han et al. 2024, arXiv 2412.04431, sec. 3.4 and its released sampler. For k = 1..K the transformer
predicts all r_k^2 tokens of scale k at once (K forward passes in all, against tens of denoising
steps for diffusion: the source of the speed the study observed); their bits are sampled, added to
F_k (eq. 4), and down(F_k, r_{k+1}) becomes the next block's input. With ``use_cache`` the keys and
values of earlier blocks are kept (KV cache across scales), so block k costs attention over the
blocks seen so far instead of re-running the whole prefix.

On bits, the logits are guided (``l_u + s (l_c - l_u)``), divided by ``tau``, and each bit is drawn
from its two-way distribution. top-k over a two-way distribution is either greedy (k = 1) or no
filtering (k = 0 or 2); top-p keeps the more likely value alone when its probability is at least p,
otherwise both (per-bit nucleus sampling).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ... import device
from .bsq import bits_to_codes
from .tokenizer import BitwiseTokenizer, down, up
from .transformer import ScaleTransformer, Text


@dataclass
class SamplingConfig:
    cfg_scale: float = 3.0      # 1 disables guidance (and halves the batch)
    tau: float = 1.0            # temperature on bit logits
    top_k: int = 0              # 0/2: no filtering, 1: greedy bits
    top_p: float = 1.0          # per-bit nucleus
    use_cache: bool = True      # KV cache across scales

    def to_dict(self) -> dict:
        return asdict(self)


def sample_bits(logits: torch.Tensor, tau: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Bit logits (...) -> bits (...) int64 in {0, 1}."""
    greedy = (logits > 0).long()
    if top_k == 1 or tau == 0:
        return greedy
    p1 = torch.sigmoid(logits.float() / tau)
    drawn = (torch.rand(p1.shape, generator=generator, device=p1.device) < p1).long()
    if top_p < 1.0:                            # nucleus of {0, 1}: the likelier value alone if it reaches p
        drawn = torch.where(torch.maximum(p1, 1 - p1) >= top_p, greedy, drawn)
    return drawn


def guided(logits: torch.Tensor, scale: float) -> torch.Tensor:
    """(2B, ...) logits of [conditional; unconditional] -> (B, ...) guided logits."""
    cond, uncond = logits.float().chunk(2)
    return uncond + scale * (cond - uncond)


@torch.no_grad()
def generate(model: ScaleTransformer, tokenizer: BitwiseTokenizer, text: Text, cfg: SamplingConfig,
             generator: torch.Generator | None = None, return_bits: bool = False):
    """Images (B, 3, H, W) in [-1, 1] for the B texts; optionally also the K sampled bit maps."""
    model.eval(), tokenizer.eval()
    B, scales, side = len(text.pooled), model.cfg.scales, tokenizer.cfg.latent_side
    gains = tokenizer.quantizer.gains()
    guide = cfg.cfg_scale != 1.0
    if guide:   # one pass over [conditional; unconditional]
        null = model.drop_text(text, torch.ones(B, dtype=torch.bool))
        text = Text(*(torch.cat([a, b]) for a, b in zip(text, null)))
    caches = [dict() for _ in model.blocks]
    f_hat = torch.zeros(B, model.cfg.bits, side, side, device=text.pooled.device)
    inputs, all_bits, x = [], [], None
    with device.autocast():
        for k, r in enumerate(scales):
            if cfg.use_cache:
                logits = model.step(k, x, text, caches)                       # (B', r^2, d)
            else:
                logits = model(inputs, text)[:, model.bounds[k][0]:]         # recompute the prefix
            logits = guided(logits, cfg.cfg_scale) if guide else logits.float()
            bits = sample_bits(logits, cfg.tau, cfg.top_k, cfg.top_p, generator)
            bits = bits.transpose(1, 2).reshape(B, -1, r, r)                   # (B, d, r, r)
            all_bits.append(bits)
            f_hat = f_hat + gains[k] * up(bits_to_codes(bits), side)         # eq. 4
            if k + 1 < len(scales):
                x = down(f_hat, scales[k + 1])
                x = torch.cat([x, x]) if guide else x
                inputs.append(x)
        images = tokenizer.decoder(f_hat).float().clamp(-1, 1)
    return (images, all_bits) if return_bits else images
