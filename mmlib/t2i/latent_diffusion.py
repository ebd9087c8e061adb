"""Second stage of the latent diffusion model: text-conditioned diffusion on frozen VQ latents (section 2.4, Figure 11).

Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models",
https://arxiv.org/abs/2112.10752. With the autoencoder (E, D) of ``mmlib.t2i.vqvae`` frozen:

    z_0 = s · E(x)                                   (s = 1 / std of the training latents, LDM §4.3.2)
    L_LDM = E_{z_0, c, ε, t} ‖ ε - ε_θ(z_t, t, τ(c)) ‖²       (LDM eq. 3, DDPM eq. 14 on z instead of x)

ε_θ is a diffusers ``UNet2DConditionModel`` whose cross-attention layers read the token sequence τ(c)
of a *frozen* CLIP text tower (``paper``: openai ViT-B/32 through open_clip, as Stable Diffusion v1
does; ``cpu``/``smoke``: the small CLIP pretrained on the world in notebook 03).

Which latents. For a VQ-regularised autoencoder the LDM paper trains the diffusion model on the
*continuous encoder output before quantisation* and lets the decoder quantise ("the quantisation layer
is absorbed by the decoder", LDM §3.1/App. G). We do the same: z = quant_conv(encoder(x)); sampled
latents go through ``VQModel.decode``, which snaps each position to its nearest code before decoding,
so small errors of the sampler are cleaned up instead of decoded as off-manifold noise. (Training on
the quantised codes instead would give the UNet a target with hard, discontinuous steps between
codes; nothing is gained since the decoder re-quantises anyway.)

Shared with notebook 06 through ``mmlib.t2i.diffusion``: the text bank of precomputed frozen token
embeddings (row 0 = ∅), the DDPM noise schedule, the ε-loss with caption dropout, and one sampler
loop (DDIM / DPM-Solver++ / strided DDPM with classifier-free guidance). What differs: the UNet runs on (C, h, w) latents,
the text tokens come from CLIP, and samples are decoded by the VQ decoder.
"""
from __future__ import annotations

import dataclasses
import hashlib
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import torch
from diffusers import UNet2DConditionModel
from open_clip.transformer import TextTransformer
from torch import nn

from .. import ckpt, pretrained, profiles, train
from ..pretrained import clip_model as pretrained_clip_model
from ..captioning.clip_pretrain import load_world_clip
from ..images import to_signed, to_uint8
from ..paths import run_dir
from . import diffusion
from .diffusion import DenoiserConfig, SampleConfig, TextBank, build_text_bank, eps_loss
from .vqvae import VQConfig, build_vqmodel


@dataclass
class LDMConfig(DenoiserConfig):
    """The latent UNet (``DenoiserConfig``'s fields, max_tokens = the CLIP context used) + its latents."""
    latent_size: int = 16                    # h = w of the VQ latents (paper 32)
    latent_channels: int = 4
    text_dim: int = 256                      # CLIP text width (ViT-B/32: 512); the UNet's cross_attention_dim
    latent_scale: float = 1.0                # s: 1/std of the training latents, set from the data

    @property
    def image_size(self) -> int:             # what the sampler calls the UNet's spatial size
        return self.latent_size


@dataclass(frozen=True)
class LatentDiffusionSettings:
    """Profile section ``latent_diffusion`` (07): the VQ first stage, the latent UNet, their runs, sampling."""
    vq: VQConfig                        # first stage (mmlib.t2i.vqvae)
    vq_steps: int
    vq_batch: int
    vq_lr: float
    vq_warmup: int
    n_vq_images: int | None             # training images of the first stage (None: the whole train split)
    model: LDMConfig                    # second stage (text_dim, latent size and scale are set from the data)
    train: train.TrainConfig            # train.fit's run of the second stage
    sample: SampleConfig                # the evaluation's sampler, steps, CFG scale, batch
    figure_seeds: int                   # samples per prompt in Figure 11
    colour_samples: int                 # samples per dress colour scored
    seeds: int = 1                      # training seeds of the second stage judged by claim 2.4 (0, 1, ...)
    seed_prompts: int | None = None     # held-out prompts each seed samples for the spread (None: all)


def config_from_profile(section: LatentDiffusionSettings) -> LDMConfig:
    """The latent UNet's config of the section (a copy: callers replace the data-derived fields)."""
    return dataclasses.replace(section.model)


class LatentDiffusion(nn.Module):
    """ε_θ(z_t, t, τ(c)): a cross-attention UNet over scaled VQ latents; same call signature as 06's model."""

    def __init__(self, cfg: LDMConfig, unet=None):
        super().__init__()
        self.cfg = cfg
        self.unet = unet if unet is not None else UNet2DConditionModel(
            sample_size=cfg.latent_size, in_channels=cfg.latent_channels, out_channels=cfg.latent_channels,
            layers_per_block=cfg.layers_per_block, block_out_channels=tuple(cfg.block_out_channels),
            down_block_types=tuple(cfg.down_block_types), up_block_types=tuple(cfg.up_block_types),
            norm_num_groups=cfg.norm_num_groups, cross_attention_dim=cfg.text_dim,
            attention_head_dim=cfg.heads(),  # diffusers' legacy name: number of heads per block
            **diffusion.pooled_text_kwargs(cfg, cfg.text_dim))

    def forward(self, z: torch.Tensor, t: torch.Tensor, text: torch.Tensor, mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        # z (B, C, h, w) noisy latents, t (B,), text (B, L, D) frozen CLIP tokens, mask (B, L) -> ε (B, C, h, w)
        dtype = self.unet.conv_in.weight.dtype
        text = text.to(dtype)
        return self.unet(z, t, encoder_hidden_states=text,
                         class_labels=diffusion.pooled(text, mask) if self.cfg.pooled_text else None,
                         encoder_attention_mask=None if mask is None else mask.to(dtype)).sample

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def load_unet(path_or_name: str, subfolder: str | None = None):
    """Paper loader: a ``UNet2DConditionModel`` saved with ``save_pretrained`` (local folder or hub name)."""
    kw = {"subfolder": subfolder} if subfolder else {}
    return UNet2DConditionModel.from_pretrained(path_or_name, **kw)


# ----------------------------------------------------------------------------- frozen CLIP text tower
def clip_token_features(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Per-token output of an open_clip text tower: ids (B, L) -> ln_final(transformer(tok + pos)) (B, L, D).

    The same path as ``CLIP.encode_text`` without the pooling and projection: Stable Diffusion
    conditions on this whole sequence, not on the pooled vector.
    """
    tower = model if hasattr(model, "token_embedding") else getattr(model, "text", None)
    if tower is None or not hasattr(tower, "token_embedding"):
        raise TypeError(f"{type(model).__name__} has no open_clip text tower (token_embedding)")
    L = ids.shape[1]
    x = tower.token_embedding(ids) + tower.positional_embedding[:L]
    mask = getattr(tower, "attn_mask", None)
    x = tower.transformer(x, attn_mask=None if mask is None else mask[:L, :L])
    return tower.ln_final(x)


def clip_width(model: nn.Module) -> int:
    tower = model if hasattr(model, "token_embedding") else model.text
    return int(tower.token_embedding.weight.shape[1])


class CLIPTextEncoder:
    """Frozen CLIP text tower: captions -> (token features (N, L, D) fp16, mask (N, L) bool).

    Same interface as 06's ``TextEncoder`` (``.dim``, ``.max_tokens``, ``__call__``), so 06's
    ``build_text_bank`` caches it. The mask covers [SOT] … [EOT]; padding is id 0.
    """

    def __init__(self, tokenizer, model: nn.Module, max_tokens: int = 32, name: str = "clip"):
        self.tokenizer, self.model = tokenizer, model.eval().requires_grad_(False)
        tower = model if hasattr(model, "token_embedding") else model.text
        self.max_tokens = min(max_tokens, int(tower.positional_embedding.shape[0]))
        self.dim, self.name = clip_width(model), name

    def fingerprint(self) -> str:
        """Short hash of the tower's weights: cached text features of another CLIP are never reused."""
        h = hashlib.sha256()
        for p in self.model.parameters():
            h.update(p.detach().float().flatten()[:512].numpy().tobytes())
        return h.hexdigest()[:12]

    def tokenize(self, captions: Sequence[str]) -> torch.Tensor:
        ids = self.tokenizer(list(captions))                           # (N, ctx) padded with 0
        if ids.shape[1] > self.max_tokens:                             # keep [EOT] as the last token
            cut = ids[:, :self.max_tokens].clone()
            long = (ids[:, self.max_tokens:] != 0).any(1)
            cut[long, -1] = ids[long].max(1).values                      # [EOT] has the largest id
            ids = cut
        return ids

    @torch.no_grad()
    def __call__(self, captions: Sequence[str], batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
        embs, masks = [], []
        dev = next(self.model.parameters()).device
        for i in range(0, len(captions), batch_size):
            ids = self.tokenize(captions[i:i + batch_size]).to(dev)
            h = clip_token_features(self.model, ids)
            embs.append(h.float().cpu().to(torch.float16))             # (b, L, D)
            masks.append((ids != 0).cpu())
        return torch.cat(embs), torch.cat(masks)


def random_text_tower(width: int = 256, layers: int = 4, heads: int = 4, context_length: int = 77,
                      vocab_size: int = 49408, seed: int = 0) -> nn.Module:
    """A randomly initialised small open_clip text tower (stand-in until/unless 03's CLIP is there)."""
    torch.manual_seed(seed)
    return TextTransformer(context_length=context_length, vocab_size=vocab_size, width=width, heads=heads,
                           layers=layers, output_dim=width)


def load_paper_clip(name: str = "ViT-B-32", pretrained: str = "openai") -> nn.Module:
    """Paper: the open_clip model ``name`` with the ``pretrained`` tag's weights (``pretrained.clip_model``)."""
    return pretrained_clip_model(name, pretrained)


def text_encoder_for(profile: str, max_tokens: int = 32) -> CLIPTextEncoder:
    """The profile's frozen CLIP text encoder: openai ViT-B/32 in paper; 03's world CLIP in cpu/smoke
    (``clip_pretrain.load_world_clip``: notebook 03's saved model; an error naming 03 when it has not run --
    07 never trains another notebook's model behind the reader's back)."""
    if profiles.get(profile).weights == "hub":
        return CLIPTextEncoder(pretrained.clip_tokenizer(profile), load_paper_clip(), max_tokens, "openai ViT-B/32")
    model = load_world_clip(profile)
    ctx = int(model.positional_embedding.shape[0])
    return CLIPTextEncoder(pretrained.clip_tokenizer(profile, context_length=ctx), model, max_tokens,
                           "world8k CLIP text tower (notebook 03)")


# ----------------------------------------------------------------------------- latents
@torch.no_grad()
def encode_latents(vq, images: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """uint8 images (N, 3, H, W) -> pre-quantisation latents E(x) (N, C, h, w), float32, unscaled."""
    vq.eval()
    out = []
    for i in range(0, len(images), batch_size):
        out.append(vq.encode(to_signed(images[i:i + batch_size])).latents.float())
    return torch.cat(out)


def latent_scale(latents: torch.Tensor) -> float:
    """s = 1 / std(z) over the training latents, so that z_0 has unit variance (LDM §4.3.2)."""
    return float(1.0 / latents.float().std())


@torch.no_grad()
def decode_latents(vq, z: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """Unscaled latents (N, C, h, w) -> uint8 images; ``VQModel.decode`` quantises first (see module doc)."""
    out = []
    for i in range(0, len(z), batch_size):
        out.append(to_uint8(vq.decode(z[i:i + batch_size].float()).sample))
    return torch.cat(out)


def training_data(latents: torch.Tensor, captions: Sequence[Sequence[str]], bank: TextBank) -> dict[str, torch.Tensor]:
    """The dict ``train.fit`` batches: ``z`` (N, C, h, w) unscaled latents, ``cap`` (N, k) ids into ``bank``."""
    return diffusion.training_data(latents, captions, bank, name="z")


def ldm_loss(bank: TextBank, cfg: LDMConfig):
    """``loss_fn(model, batch)`` for ``train.fit``: ε-MSE on scaled latents z_0 = s·E(x) (LDM eq. 3), caption dropout."""
    return eps_loss(bank, cfg, lambda batch: batch["z"].float() * cfg.latent_scale)   # unit variance


# ----------------------------------------------------------------------------- sampling
def sample_latents(model: LatentDiffusion, text: torch.Tensor, mask: torch.Tensor, null_text: torch.Tensor,
                   null_mask: torch.Tensor, sc: SampleConfig = SampleConfig(), seed: int = 0,
                   noise: torch.Tensor | None = None) -> torch.Tensor:
    """One latent per row of ``text`` (N, L, D), *unscaled* (ready for ``decode_latents``): 06's sampler
    loop (``diffusion.sample``) on (C, h, w) latents."""
    cfg = model.cfg
    z = diffusion.sample(model, (cfg.latent_channels, cfg.latent_size, cfg.latent_size), text, mask, null_text,
                         null_mask, sc, seed, noise)
    return z / cfg.latent_scale


def generate(model: LatentDiffusion, vq, encoder: CLIPTextEncoder, prompts: Sequence[str],
             sc: SampleConfig = SampleConfig(), seed: int = 0, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Prompts -> uint8 images (N, 3, H, W): CLIP tokens -> DDIM + CFG in latent space -> VQ decoder."""
    emb, mask = encoder(list(prompts) + [""])
    z = sample_latents(model, emb[:-1], mask[:-1], emb[-1], mask[-1], sc, seed=seed, noise=noise)
    return decode_latents(vq, z)


# ----------------------------------------------------------------------------- one call for the notebook
def train_second_stage(profile: str, vq, train_images: torch.Tensor, captions: Sequence[Sequence[str]],
                       encoder: CLIPTextEncoder, out_dir, vq_id: str, progress: bool = True,
                       seed: int | None = None) -> dict:
    """Precompute latents and CLIP token features once, then train the latent UNet with fit() (EMA
    weights loaded at the end). ``seed`` (default: the profile's training seed) draws the initial weights
    and the batch order; a replica with another seed has its own checkpoints (the seed is in the key).
    Returns {"model", "fit", "cfg", "bank", "prep_seconds"}."""
    sec = profiles.get(profile).latent_diffusion
    tcfg = sec.train if seed is None else dataclasses.replace(sec.train, seed=seed)
    t0 = time.perf_counter()
    latents = encode_latents(vq, train_images)                          # (N, C, h, w)
    cfg = dataclasses.replace(config_from_profile(sec), text_dim=encoder.dim,
                              latent_size=latents.shape[-1], latent_channels=latents.shape[1],
                              max_tokens=encoder.max_tokens, latent_scale=round(latent_scale(latents), 5))
    text_id = f"{encoder.name}:{encoder.fingerprint()}"
    bank = build_text_bank(encoder, [c for cs in captions for c in cs], cache=Path(out_dir) / f"text-{text_id[-12:]}")
    data = training_data(latents, captions, bank)
    prep = time.perf_counter() - t0
    torch.manual_seed(tcfg.seed)
    model = LatentDiffusion(cfg)
    key = {"ldm": cfg.key(), "vq": vq_id, "text": text_id, "n_images": len(train_images)}
    fit = train.fit(model, ldm_loss(bank, cfg), data, tcfg, out_dir, key, progress=progress)
    if fit.ema is not None:
        train.load_ema(model, fit.ema)
    return {"model": model.eval().requires_grad_(False), "fit": fit, "cfg": cfg, "bank": bank,
            "prep_seconds": prep}


def sample_config(profile: str) -> SampleConfig:
    sec = profiles.get(profile).latent_diffusion
    return sec.sample


def prompt_grid_figure(images: torch.Tensor, prompts: Sequence[str], n_cols: int):
    """Figure 11: one row per prompt, ``n_cols`` samples each (images in prompt-major order)."""
    fig, axes = plt.subplots(len(prompts), n_cols, figsize=(1.7 * n_cols, 1.8 * len(prompts)), squeeze=False)
    for r, p in enumerate(prompts):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.imshow(images[r * n_cols + c].permute(1, 2, 0).numpy())
            ax.set_xticks([]), ax.set_yticks([])
        axes[r, 0].set_ylabel(p.replace("a girl in ", ""), fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- export (09's speed comparison)


def export_dir(profile: str) -> Path:
    return run_dir(profile, "07") / "export"


def export_trained(profile: str, model: LatentDiffusion, vq, vq_cfg) -> Path:
    """Write the trained latent UNet (EMA) and the first stage's ``VQModel`` with their configs."""
    d = export_dir(profile)
    ckpt.save_weights(d / "vqmodel.safetensors", vq.state_dict(), asdict(vq_cfg))
    ckpt.save_weights(d / "ldm.safetensors", model.state_dict(), asdict(model.cfg))
    return d


def load_trained(profile: str):
    """``(model, vq)`` as notebook 07 trained and exported them in ``profile``; FileNotFoundError before."""
    d = export_dir(profile)
    if not (d / "ldm.safetensors").exists() or not (d / "vqmodel.safetensors").exists():
        raise FileNotFoundError(f"{d}: run notebook 07 in profile {profile!r} first")
    vq_cfg, cfg = ckpt.read_dataclass(VQConfig, d / "vqmodel.safetensors"), ckpt.read_dataclass(LDMConfig, d / "ldm.safetensors")
    vq = build_vqmodel(vq_cfg)
    vq.load_state_dict(ckpt.load_weights(d / "vqmodel.safetensors", asdict(vq_cfg)))
    model = LatentDiffusion(cfg)
    model.load_state_dict(ckpt.load_weights(d / "ldm.safetensors", asdict(cfg)))
    return model.eval().requires_grad_(False), vq.eval().requires_grad_(False)
