"""An SDXL-architecture text-to-image pipeline (diffusers' ``StableDiffusionXLPipeline``).

- ``paper``: the real ``stabilityai/stable-diffusion-xl-base-1.0`` by name (``load_pipeline``).
- ``smoke``/``cpu``: no SDXL weights exist offline, so a *tiny* pipeline of SDXL's component types is
  built here (``build_tiny_pipeline``): two CLIP text encoders (``CLIPTextModel`` +
  ``CLIPTextModelWithProjection``, penultimate hidden states concatenated, pooled projection of the
  second), an ``AutoencoderKL`` (factor 2: 32 px -> 16×16×4 latents), a ``UNet2DConditionModel`` with
  ``addition_embed_type="text_time"`` (SDXL micro-conditioning on original size / crop / target size,
  Podell et al. 2023, https://arxiv.org/abs/2307.01952, sec. 2.2).

Sampling runs the pipeline's own ``__call__`` on noise drawn up front from a seed. LoRA is in :mod:`.lora`,
training in :mod:`.stages`, the study's experiment in :mod:`.experiment`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from ...device import autocast
from ...images import to_signed, unit_to_uint8
from ...pretrained import go_offline, hf_clip_tokenizer, hub_source, is_offline

HUB_NAME = "stabilityai/stable-diffusion-xl-base-1.0"
SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                 timestep_spacing="leading", steps_offset=1, prediction_type="epsilon")  # SDXL-base's scheduler


@dataclass
class TinySDXLConfig:
    """Sizes of the tiny SDXL-architecture pipeline (``cpu``/``smoke``)."""
    image_size: int = 32
    vae_channels: tuple[int, ...] = (32, 64)           # len 2: one downsampling, 32 px -> 16×16 latents
    latent_channels: int = 4
    unet_channels: tuple[int, ...] = (64, 128, 128)    # latent 16×16, 8×8, 4×4
    down_block_types: tuple[str, ...] = ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    up_block_types: tuple[str, ...] = ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")
    layers_per_block: int = 1
    head_dim: int = 32                                 # channels per attention head
    text_width: int = 64                               # hidden size of each text encoder
    text_layers: int = 3                               # SDXL reads the penultimate layer, so >= 2
    projection_dim: int = 64                           # pooled text embedding (text_encoder_2)
    time_embed_dim: int = 16                           # addition_time_embed_dim (SDXL: 256)
    norm_num_groups: int = 32
    seed: int = 0

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.vae_channels) - 1)


# ----------------------------------------------------------------------------- the pipeline


def build_tiny_pipeline(cfg: TinySDXLConfig, profile: str = "cpu"):
    """A randomly initialised ``StableDiffusionXLPipeline`` with SDXL's component types, tiny sizes."""


    torch.manual_seed(cfg.seed)
    tok = hf_clip_tokenizer(profile, model_max_length=77)
    text = dict(vocab_size=len(tok), hidden_size=cfg.text_width, intermediate_size=4 * cfg.text_width,
                num_hidden_layers=cfg.text_layers, num_attention_heads=max(1, cfg.text_width // cfg.head_dim),
                max_position_embeddings=77, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id, projection_dim=cfg.projection_dim)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text, hidden_act="quick_gelu"))       # SDXL: CLIP ViT-L
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**text, hidden_act="gelu"))  # SDXL: OpenCLIP bigG
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=cfg.latent_channels,
                        down_block_types=("DownEncoderBlock2D",) * len(cfg.vae_channels),
                        up_block_types=("UpDecoderBlock2D",) * len(cfg.vae_channels),
                        block_out_channels=tuple(cfg.vae_channels), layers_per_block=1,
                        norm_num_groups=min(cfg.norm_num_groups, cfg.vae_channels[0]), sample_size=cfg.image_size)
    unet = UNet2DConditionModel(
        sample_size=cfg.latent_size, in_channels=cfg.latent_channels, out_channels=cfg.latent_channels,
        block_out_channels=tuple(cfg.unet_channels), layers_per_block=cfg.layers_per_block,
        down_block_types=tuple(cfg.down_block_types), up_block_types=tuple(cfg.up_block_types),
        attention_head_dim=tuple(max(1, c // cfg.head_dim) for c in cfg.unet_channels),  # legacy name: heads
        use_linear_projection=True, cross_attention_dim=2 * cfg.text_width,             # concat of both encoders
        addition_embed_type="text_time", addition_time_embed_dim=cfg.time_embed_dim,
        projection_class_embeddings_input_dim=6 * cfg.time_embed_dim + cfg.projection_dim,
        norm_num_groups=cfg.norm_num_groups)
    for m in (text_encoder, text_encoder_2, vae, unet):   # frozen like a loaded pipeline; stages unfreeze
        m.requires_grad_(False).eval()
    return StableDiffusionXLPipeline(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
                                     tokenizer=tok, tokenizer_2=hf_clip_tokenizer(profile, model_max_length=77),
                                     unet=unet, scheduler=EulerDiscreteScheduler(**SCHEDULER),
                                     add_watermarker=False)


def load_pipeline(profile: str, path: str | os.PathLike | None = None, dtype: torch.dtype | None = None):
    """``StableDiffusionXLPipeline.from_pretrained``: ``path`` (a ``save_pretrained`` folder) or, in
    ``paper``, ``$MMLIB_WEIGHTS_DIR/stabilityai/stable-diffusion-xl-base-1.0`` or the hub name.

    Tokenizers come back with ``model_max_length=77`` whatever the folder says (else the pipeline
    overflows the 77 position embeddings)."""
    if path is None:
        if is_offline(profile):
            raise ValueError(f"profile {profile!r} has no SDXL weights offline: build_tiny_pipeline / pretrain_base")
        path = hub_source(HUB_NAME)
    elif is_offline(profile):
        go_offline()
    kw = {"torch_dtype": dtype} if dtype is not None else {}
    pipe = StableDiffusionXLPipeline.from_pretrained(str(path), add_watermarker=False, **kw)
    for tok in (pipe.tokenizer, pipe.tokenizer_2):
        tok.model_max_length = 77
    return pipe


# ----------------------------------------------------------------------------- conditioning


def tokenize(pipe, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Both tokenizers, padded/truncated to 77 as the pipeline does: two LongTensors (N, 77)."""
    def ids(tok):
        return tok(list(captions), padding="max_length", max_length=tok.model_max_length, truncation=True,
                   return_tensors="pt").input_ids
    return ids(pipe.tokenizer), ids(pipe.tokenizer_2)


def encode_prompt(text_encoder: nn.Module, text_encoder_2: nn.Module, ids: torch.Tensor, ids_2: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """SDXL's text conditioning, as ``StableDiffusionXLPipeline.encode_prompt`` computes it (no mask):
    penultimate hidden states of both encoders concatenated (B, 77, d1 + d2), and the pooled projection
    of the second (B, p)."""
    h1 = text_encoder(ids, output_hidden_states=True).hidden_states[-2]            # (B, 77, d1)
    out2 = text_encoder_2(ids_2, output_hidden_states=True)
    return torch.cat([h1, out2.hidden_states[-2]], -1), out2.text_embeds          # (B, 77, d1+d2), (B, p)


def time_ids(original: tuple[int, int], crop: tuple[int, int], target: tuple[int, int]) -> torch.Tensor:
    """SDXL micro-conditioning vector (6,): original (h, w), crop top-left (top, left), target (h, w)."""
    return torch.tensor([*original, *crop, *target], dtype=torch.float32)


class Denoiser(nn.Module):
    """``eps_theta(z_t, t, caption, time_ids)``: both text encoders + the UNet, the part ``train.fit`` trains
    (all of it in base pretraining; only the UNet's LoRA matrices in fine-tuning)."""

    def __init__(self, pipe):
        super().__init__()
        self.unet, self.text_encoder, self.text_encoder_2 = pipe.unet, pipe.text_encoder, pipe.text_encoder_2

    def forward(self, z: torch.Tensor, t: torch.Tensor, ids: torch.Tensor, ids_2: torch.Tensor,
                tids: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        # z (B, 4, h, w), t (B,), ids/ids_2 (B, 77), tids (B, 6), keep (B,) bool: False -> unconditional
        emb, pooled = encode_prompt(self.text_encoder, self.text_encoder_2, ids, ids_2)
        if keep is not None:  # SDXL's unconditional input is all-zero embeddings (force_zeros_for_empty_prompt)
            emb = emb * keep[:, None, None].to(emb.dtype)
            pooled = pooled * keep[:, None].to(pooled.dtype)
        return self.unet(z, t, encoder_hidden_states=emb,
                         added_cond_kwargs={"text_embeds": pooled, "time_ids": tids}).sample


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 3, H, W) -> scaled posterior mean and std (N, C, h, w) each, in ``vae``'s dtype."""
    vae.eval()
    dev = next(vae.parameters()).device
    means, stds = [], []
    for i in range(0, len(images), batch_size):
        x = to_signed(images[i:i + batch_size]).to(dev, next(vae.parameters()).dtype)
        dist = vae.encode(x).latent_dist
        means.append(dist.mean.float().cpu()), stds.append(dist.std.float().cpu())
    s = vae.config.scaling_factor
    return torch.cat(means) * s, torch.cat(stds) * s


# ----------------------------------------------------------------------------- sampling


@dataclass
class SampleSettings:
    steps: int = 25                     # Euler steps (the study: 100)
    guidance: float = 5.0               # CFG scale (SDXL's default)
    batch_size: int = 64
    original_size: int | None = None    # SDXL's original-size condition; None: the output size


def initial_latents(pipe, n: int, seed: int, size: int | None = None) -> torch.Tensor:
    """(n, C, h, w) starting noise from its own generator, so base and LoRA start from the same noise."""
    size = size or pipe.unet.config.sample_size * pipe.vae_scale_factor
    h = size // pipe.vae_scale_factor
    return torch.randn(n, pipe.unet.config.in_channels, h, h, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def generate(pipe, prompts: Sequence[str], sample: SampleSettings = SampleSettings(), seed: int = 0,
             lora_scale: float | None = None, size: int | None = None, progress: bool = False) -> torch.Tensor:
    """One image per prompt through ``StableDiffusionXLPipeline.__call__``: uint8 (N, 3, H, W).

    Noise is drawn up front from ``seed`` (independent of batching); ``lora_scale`` scales every loaded
    adapter via ``cross_attention_kwargs={"scale": s}`` (None: as set)."""
    size = size or pipe.unet.config.sample_size * pipe.vae_scale_factor
    lat = initial_latents(pipe, len(prompts), seed, size)
    dev = pipe.unet.device
    orig = (sample.original_size or size,) * 2
    pipe.set_progress_bar_config(disable=not progress)
    kw = {"cross_attention_kwargs": {"scale": lora_scale}} if lora_scale is not None else {}
    out = []
    for i in range(0, len(prompts), sample.batch_size):
        with autocast(dev):
            img = pipe(prompt=list(prompts[i:i + sample.batch_size]), num_inference_steps=sample.steps,
                       guidance_scale=sample.guidance, height=size, width=size, original_size=orig,
                       target_size=(size, size), latents=lat[i:i + sample.batch_size].to(dev, pipe.unet.dtype),
                       output_type="pt", **kw).images
        out.append(unit_to_uint8(img).cpu())
    return torch.cat(out)
