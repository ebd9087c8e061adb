"""The world CLIP: a CLIP pretrained contrastively on world8k, for the profiles without hub weights.

The study used OpenAI's CLIP ViT-B/32 (``open_clip.create_model_and_transforms('ViT-B-32',
pretrained='openai')``; paper profile). No CLIP weights ship inside a PyPI package, so in smoke/cpu
notebook 03 first trains a CLIP here, with the symmetric InfoNCE loss of Radford et al. 2021
(https://arxiv.org/abs/2103.00020):

    L = ½ [CE(s · I Tᵀ, diag) + CE(s · T Iᵀ, diag)],  I, T = L2-normalised image/text embeddings,
    s = exp(learnable logit scale)                                                      (InfoNCE)

Its recipe follows LiT / ALIGN (Zhai et al. 2022, https://arxiv.org/abs/2111.07991): the image tower
starts from a strong pretrained network instead of from nothing. Here that is the frozen ImageNet
EfficientNet-Lite0 (the only image network we have offline): its 4×4 grid of 1280-d features goes
through a trainable Transformer (CLS + grid tokens) that learns, from the captions, to relate the
grid cells -- who wears which colour, how many there are, what is beside whom -- which an average-
pooled ImageNet feature mixes away. The text tower is open_clip's Transformer over the real CLIP BPE
vocabulary (``mmlib.pretrained.clip_tokenizer``). A first CLIP of ours, a 3-layer ViT trained from
scratch on the 6,472 training images, reached text→image R@5 of 1.9 % and was a worse encoder than
the CNN it was meant to beat (report §1.2).

Training runs on the cached CNN grid of notebook 02 (one CNN pass per image for the whole run), each
step pairs every image with one of its five captions drawn at random, and an in-batch "negative"
whose caption is word-for-word the positive's is masked out (two scenes of the same description are
not a mismatch). The frozen CLIP is saved to ``runs/<profile>/03/clip/`` (``model.safetensors`` +
``config.json``, the CNN's weights included) and reused through ``load_world_clip(profile)`` by 03
(its token sequence feeds the decoder), 04/05 (the Q-formers' image tokens) and 07 (its text tower).
This module holds the model, its loss and its files; notebook 03's training step is ``clip_step``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.model import CLIP
from open_clip.transformer import Transformer

from .. import ckpt, device, paths, pretrained
from ..images import clip_normalize
from ..results import atomic_write_text


@dataclass
class WorldCLIPConfig:
    image_size: int = 128       # CNN input: 128 px -> a 4×4 grid of 1280-d EfficientNet-Lite0 features
    vision_width: int = 256     # the image Transformer over CLS + grid tokens
    vision_layers: int = 2
    text_width: int = 256
    text_layers: int = 3
    heads: int = 4              # head width 64, as in CLIP
    embed_dim: int = 256        # joint embedding
    context_length: int = 24    # BPE tokens per caption (world captions: 99 % ≤ 23 words)
    grid_channels: int = 1280   # EfficientNet-Lite0's last feature map

    @property
    def grid_tokens(self) -> int:
        return (self.image_size // 32) ** 2


@dataclass(frozen=True)
class WorldCLIPSettings:
    """Profile ``caption_clip.clip`` in smoke/cpu: the world CLIP's architecture and its pretraining run."""
    image_size: int
    vision_width: int
    vision_layers: int
    text_width: int
    text_layers: int
    heads: int
    embed_dim: int
    context_length: int
    steps: int
    batch_size: int
    lr: float
    warmup: int = 0
    seed: int = 0
    extra_scenes: int = 0       # further world scenes (rendered with ``extra_seed``) added to the training pairs
    extra_seed: int = 1         # world seed of those scenes; the captioning split is seed 0, so no val image is used

    def model_config(self) -> WorldCLIPConfig:
        return WorldCLIPConfig(**{f: getattr(self, f) for f in WorldCLIPConfig.__dataclass_fields__ if hasattr(self, f)})


@dataclass(frozen=True)
class HubCLIPSettings:
    """Profile ``caption_clip.clip`` in paper: an open_clip model by name with its pretrained tag."""
    model_name: str
    pretrained: str
    image_size: int = 224
    context_length: int = 77


class GridViT(nn.Module):
    """The world CLIP's image tower: frozen ImageNet CNN grid -> trainable Transformer -> CLS embedding.

    ``forward`` takes images in [0, 1] (B, 3, H, W) or, in training, the CNN's cached grid tokens
    (B, h·w, C); ``tokens`` returns the whole output sequence (B, 1 + h·w, width) after ``ln_post``
    (what notebook 03's decoder and the Q-formers attend over), ``tokens[:, 0] @ proj`` is the embedding.
    """

    def __init__(self, cfg: WorldCLIPConfig, cnn: nn.Module):
        super().__init__()
        w = cfg.vision_width
        self.cnn = cnn                                   # FeatureGrid: frozen, eval mode, own normalisation
        self.inp = nn.Sequential(nn.LayerNorm(cfg.grid_channels), nn.Linear(cfg.grid_channels, w))
        self.cls = nn.Parameter(torch.zeros(1, 1, w))
        self.pos = nn.Parameter(torch.randn(1, 1 + cfg.grid_tokens, w) * 0.02)
        self.transformer = Transformer(w, cfg.vision_layers, cfg.heads)   # open_clip's pre-LN blocks, as in its ViT
        self.ln_post = nn.LayerNorm(w)
        self.proj = nn.Parameter(torch.randn(w, cfg.embed_dim) * w ** -0.5)

    def grid(self, images: torch.Tensor) -> torch.Tensor:
        """Images [0, 1] (B, 3, H, W) -> CNN grid tokens (B, h·w, C)."""
        return self.cnn(images).flatten(2).transpose(1, 2)

    def head(self, grid: torch.Tensor) -> torch.Tensor:
        """CNN grid tokens (B, h·w, C) -> output sequence (B, 1 + h·w, width)."""
        x = self.inp(grid.to(self.pos.dtype))
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], 1) + self.pos
        return self.ln_post(self.transformer(x))

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.grid(images))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq = self.head(x) if x.dim() == 3 else self.tokens(x)
        return seq[:, 0] @ self.proj


def build(cfg: WorldCLIPConfig, profile: str = "cpu", pretrained_cnn: bool = True) -> CLIP:
    """An open_clip ``CLIP`` whose text tower is open_clip's (random init) and whose ``visual`` is a
    :class:`GridViT` over the profile's ImageNet CNN (its pretrained weights unless ``pretrained_cnn=False``)."""
    text = dict(context_length=cfg.context_length, vocab_size=49408, width=cfg.text_width,
                heads=cfg.heads, layers=cfg.text_layers)
    tiny_vit = dict(layers=1, width=64, head_width=64, patch_size=32, image_size=64)   # replaced below
    model = CLIP(embed_dim=cfg.embed_dim, vision_cfg=tiny_vit, text_cfg=text)
    model.visual = GridViT(cfg, pretrained.cnn(profile, pretrained=pretrained_cnn))
    return model


def clip_dir(profile: str) -> Path:
    """Where the world CLIP of a profile lives: ``runs/<profile>/03/clip/``."""
    return paths.run_dir(profile, "03") / "clip"


def tokenize(profile: str, captions: list[str], context_length: int) -> torch.Tensor:
    """CLIP BPE ids (N, context_length); longer captions are cut, keeping <end_of_text> last."""
    return pretrained.clip_tokenizer(profile, context_length=context_length)(captions)


def infonce_loss(model, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
    """``train.fit`` loss: batch {"grid": (B, h·w, C) CNN tokens (or "image": uint8 (B, 3, H, W)),
    "tokens": (B, 5, L)}; one random caption of each image is its positive, the other pairs of the
    batch are negatives, except those whose caption is the positive's word for word (masked)."""
    B = batch["tokens"].size(0)
    pick = torch.randint(0, batch["tokens"].size(1), (B,))
    text = batch["tokens"][torch.arange(B), pick]                         # (B, L)
    x = batch["grid"] if "grid" in batch else batch["image"].float() / 255
    img = F.normalize(model.encode_image(x).float(), dim=-1)              # (B, D)
    txt = F.normalize(model.encode_text(text).float(), dim=-1)            # (B, D)
    scale = model.logit_scale.clamp(max=4.6052).exp()                     # CLIP caps s at 100
    same = (text[:, None] == text[None]).all(-1) & ~torch.eye(B, dtype=torch.bool, device=text.device)
    logits = (scale * img @ txt.t()).masked_fill(same, float("-inf"))     # (B, B)
    labels = torch.arange(B, device=logits.device)
    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    return loss, {"scale": float(scale.detach()), "masked": float(same.sum()) / B}


@torch.no_grad()
def embed_images(model, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Normalised image embeddings (N, D) of uint8 images (N, 3, H, W) or CNN grid tokens (N, h·w, C)."""
    model.eval()
    out = []
    with device.autocast(next(model.parameters()).device):
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size]
            if xb.dtype == torch.uint8:   # the world CLIP's CNN normalises itself; a hub CLIP wants CLIP's
                xb = xb.float() / 255 if isinstance(model.visual, GridViT) else clip_normalize(xb.float() / 255)
            out.append(model.encode_image(device.as_compute(xb)).float())
    return F.normalize(torch.cat(out), dim=-1)


@torch.no_grad()
def embed_texts(model, tokens: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Normalised text embeddings (M, D) of BPE ids (M, L)."""
    model.eval()
    with device.autocast(next(model.parameters()).device):
        tx = torch.cat([model.encode_text(tokens[i:i + batch_size]).float() for i in range(0, len(tokens), batch_size)])
    return F.normalize(tx, dim=-1)


def embed(model, images: torch.Tensor, tokens: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 3, H, W) or grid tokens, BPE ids (M, L) -> normalised embeddings (N, D), (M, D)."""
    return embed_images(model, images, batch_size), embed_texts(model, tokens, batch_size)


@torch.no_grad()
def head_outputs(visual: GridViT, grid: torch.Tensor, cls_only: bool = False, dtype=torch.float32,
                 batch_size: int = 512) -> torch.Tensor:
    """The image tower's output sequence (N, 1 + h·w, width), or its CLS alone (N, width), from
    cached CNN grid tokens, in batches under the project's autocast, returned in ``dtype``."""
    visual.eval()
    with device.autocast(visual.pos.device):
        parts = [visual.head(device.as_compute(grid[i:i + batch_size])) for i in range(0, len(grid), batch_size)]
        parts = [(p[:, 0] if cls_only else p).float().to(dtype) for p in parts]
    return torch.cat(parts)       # outside autocast: it would refuse to concatenate fp16 under bf16


def pooled_features(model, grid: torch.Tensor) -> torch.Tensor:
    """The image tower's representation before the projection (CLS after ``ln_post``), (N, width):
    what the linear probe reads (as CLIP's probes read the pre-projection features)."""
    return head_outputs(model.visual, grid, cls_only=True)


def clip_tokens_from_grid(visual: GridViT, grid: torch.Tensor) -> torch.Tensor:
    """The image tower's output sequence (N, 1 + h·w, width), float16 (a feature cache's dtype)."""
    return head_outputs(visual, grid, dtype=torch.float16)


def recall_at_k(img: torch.Tensor, txt: torch.Tensor, txt_image: torch.Tensor, ks=(1, 5, 10)) -> dict[str, float]:
    """Retrieval recall (percent). img (N, D), txt (M, D), txt_image (M,) index of each caption's image.

    image→text: an image is a hit at k if any of its captions is among the k nearest captions;
    text→image: a caption is a hit at k if its image is among the k nearest images."""
    sim = img @ txt.t()                                                   # (N, M)
    out = {}
    for k in ks:
        top_t = sim.topk(k, dim=1).indices                                # (N, k) caption ids
        out[f"i2t R@{k}"] = 100 * (txt_image[top_t] == torch.arange(len(img))[:, None]).any(1).float().mean().item()
        top_i = sim.t().topk(k, dim=1).indices                            # (M, k) image ids
        out[f"t2i R@{k}"] = 100 * (top_i == txt_image[:, None]).any(1).float().mean().item()
    return out


def save_world_clip(model, cfg: WorldCLIPConfig, profile: str, metrics: dict | None = None) -> Path:
    """Safetensors + config.json (+ metrics.json) in ``clip_dir(profile)``."""
    out = clip_dir(profile)
    ckpt.save_weights(out / "model.safetensors", model.state_dict(), config=asdict(cfg))
    atomic_write_text(out / "config.json", json.dumps(asdict(cfg), indent=1))
    if metrics is not None:
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1))
    return out


def load_world_clip(profile: str):
    """The frozen world8k CLIP (an open_clip ``CLIP``, eval mode) saved by notebook 03."""
    out = clip_dir(profile)
    if not (out / "model.safetensors").exists():
        raise FileNotFoundError(f"{out}/model.safetensors not found: run notebooks/03_caption_clip.ipynb "
                                f"(profile {profile}) or mmlib.captioning.clip_step.ensure_world_clip first")
    cfg = WorldCLIPConfig(**json.loads((out / "config.json").read_text()))
    model = build(cfg, profile, pretrained_cnn=False)
    model.load_state_dict(ckpt.load_weights(out / "model.safetensors", expect_config=asdict(cfg)))
    return model.eval().requires_grad_(False)
