"""A small CLIP pretrained contrastively on world8k, for the profiles without hub weights.

The study used OpenAI's CLIP ViT-B/32 (``open_clip.create_model_and_transforms('ViT-B-32',
pretrained='openai')``; paper profile). No CLIP weights ship inside a PyPI package, so in
smoke/cpu notebook 03 first trains an open_clip ``CLIP`` of the same design, only small (a tiny
ViT at the world's image size + a small text transformer over the real CLIP BPE vocabulary,
``mmlib.pretrained.clip_tokenizer``), with the symmetric InfoNCE loss of Radford et al. 2021
(https://arxiv.org/abs/2103.00020):

    L = ½ [CE(s · I Tᵀ, diag) + CE(s · T Iᵀ, diag)],  I, T = L2-normalised image/text embeddings,
    s = exp(learnable logit scale)                                                      (InfoNCE)

on the training split (each step pairs every image with one of its five captions, drawn at
random), reports image→text and text→image recall@1/5 on the validation split, then freezes it
and saves it to ``runs/<profile>/03/clip/`` (``model.safetensors`` + ``config.json``).
Later notebooks reuse it through ``load_world_clip(profile)``: the Q-former's image encoder (04)
and the latent-diffusion text encoder (07).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIP

from .. import ckpt, data, device, paths, pretrained, profiles, train
from ..images import clip_normalize
from ..results import atomic_write_text


@dataclass
class WorldCLIPConfig:
    image_size: int = 128
    patch_size: int = 32        # 128 px -> 4×4 = 16 patches (+ CLS), ViT-B/32's patch size
    vision_width: int = 128
    vision_layers: int = 3
    text_width: int = 128
    text_layers: int = 3
    heads: int = 2              # head width 64, as in CLIP
    embed_dim: int = 128        # joint embedding
    context_length: int = 24    # BPE tokens per caption (world captions: 99 % ≤ 23 words)


@dataclass(frozen=True)
class WorldCLIPSettings:
    """Profile ``caption_clip.clip`` in smoke/cpu: the world CLIP's architecture and its pretraining run."""
    image_size: int
    patch_size: int
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

    def model_config(self) -> WorldCLIPConfig:
        return WorldCLIPConfig(**{f: getattr(self, f) for f in WorldCLIPConfig.__dataclass_fields__})


@dataclass(frozen=True)
class HubCLIPSettings:
    """Profile ``caption_clip.clip`` in paper: an open_clip model by name with its pretrained tag."""
    model_name: str
    pretrained: str
    image_size: int = 224
    context_length: int = 77


def build(cfg: WorldCLIPConfig):
    """An open_clip ``CLIP`` with a small custom config (random init)."""
    vision = dict(layers=cfg.vision_layers, width=cfg.vision_width, head_width=cfg.vision_width // cfg.heads,
                  patch_size=cfg.patch_size, image_size=cfg.image_size)
    text = dict(context_length=cfg.context_length, vocab_size=49408, width=cfg.text_width, heads=cfg.heads,
                layers=cfg.text_layers)
    return CLIP(embed_dim=cfg.embed_dim, vision_cfg=vision, text_cfg=text)


def clip_dir(profile: str) -> Path:
    """Where the world CLIP of a profile lives: ``runs/<profile>/03/clip/``."""
    return paths.run_dir(profile, "03") / "clip"


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> CLIP-normalised float."""
    return clip_normalize(images.float() / 255)


def tokenize(profile: str, captions: list[str], context_length: int) -> torch.Tensor:
    """CLIP BPE ids (N, context_length); longer captions are cut, keeping <end_of_text> last."""
    return pretrained.clip_tokenizer(profile, context_length=context_length)(captions)


def infonce_loss(model, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
    """``train.fit`` loss: batch {"image": uint8 (B, 3, H, W), "tokens": (B, 5, L)}; one random caption
    of each image is its positive, the other B-1 pairs of the batch are negatives."""
    B = batch["image"].size(0)
    pick = torch.randint(0, batch["tokens"].size(1), (B,))
    text = batch["tokens"][torch.arange(B), pick]                         # (B, L)
    img = F.normalize(model.encode_image(normalize_images(batch["image"])).float(), dim=-1)  # (B, D)
    txt = F.normalize(model.encode_text(text).float(), dim=-1)            # (B, D)
    scale = model.logit_scale.clamp(max=4.6052).exp()                     # CLIP caps s at 100
    logits = scale * img @ txt.t()                                        # (B, B)
    labels = torch.arange(B, device=logits.device)
    loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    return loss, {"scale": float(scale.detach())}


@torch.no_grad()
def embed(model, images: torch.Tensor, tokens: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 3, H, W), tokens (M, L) -> normalised embeddings (N, D), (M, D)."""
    model.eval()
    with device.autocast(next(model.parameters()).device):
        im = torch.cat([model.encode_image(normalize_images(images[i:i + batch_size])).float()
                        for i in range(0, len(images), batch_size)])
        tx = torch.cat([model.encode_text(tokens[i:i + batch_size]).float()
                        for i in range(0, len(tokens), batch_size)])
    return F.normalize(im, dim=-1), F.normalize(tx, dim=-1)


def recall_at_k(img: torch.Tensor, txt: torch.Tensor, txt_image: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
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
                                f"(profile {profile}) or mmlib.captioning.clip_pretrain.ensure_world_clip first")
    cfg = WorldCLIPConfig(**json.loads((out / "config.json").read_text()))
    model = build(cfg)
    model.load_state_dict(ckpt.load_weights(out / "model.safetensors", expect_config=asdict(cfg)))
    return model.eval().requires_grad_(False)


def pretrain(profile: str, split=None, retrain: bool = False, progress: bool = True) -> dict:
    """Train (or reload from the train.fit cache) the world CLIP of ``profile``, evaluate retrieval
    on the validation split, save it; returns {"model", "config", "metrics", "fit"}."""
    settings = profiles.get(profile).caption_clip.clip
    cfg = settings.model_config()
    split = split or data.load(profile)
    names = [n for n, _ in split.train]
    images = data.images(split.folder, names, cfg.image_size)                     # (N, 3, H, W) uint8
    tokens = tokenize(profile, [c for _, cs in split.train for c in cs[:5]], cfg.context_length)
    tokens = tokens.view(len(names), 5, cfg.context_length)                       # (N, 5, L)
    torch.manual_seed(settings.seed)
    model = build(cfg)
    tcfg = train.TrainConfig(steps=settings.steps, batch_size=settings.batch_size, lr=settings.lr,
                             weight_decay=0.1, betas=(0.9, 0.98), warmup=settings.warmup, log_every=10)
    run_dir = paths.run_dir(profile, "03") / "clip_train"
    fit = train.fit(model, infonce_loss, {"image": images, "tokens": tokens}, tcfg, run_dir,
                    key={"clip": asdict(cfg), "data": str(split.folder), "n": len(names)}, progress=progress,
                    restart=retrain)
    model.eval().requires_grad_(False)
    metrics = evaluate(model, profile, split, cfg.image_size, cfg.context_length)
    previous = clip_dir(profile) / "metrics.json"
    seconds = fit.train_seconds  # a reloaded (cached) run keeps the training time of the run that trained it
    if fit.cached and previous.exists():
        seconds = json.loads(previous.read_text()).get("train_seconds") or seconds
    metrics.update(train_seconds=seconds, cached=fit.cached, steps=fit.steps, final_loss=fit.history[-1]["loss"] if fit.history else None)
    save_world_clip(model, cfg, profile, metrics)
    return {"model": model, "config": cfg, "metrics": metrics, "fit": fit}


def evaluate(model, profile: str, split, image_size: int, context_length: int) -> dict[str, float]:
    """image→text and text→image R@1/R@5 on the validation split (5 captions per image)."""
    names = [n for n, _ in split.val]
    images = data.images(split.folder, names, image_size)
    caps = [c for _, cs in split.val for c in cs[:5]]
    owner = torch.arange(len(names)).repeat_interleave(5)
    img, txt = embed(model, images, tokenize(profile, caps, context_length))
    return recall_at_k(img, txt, owner)


def prepare_clip(profile: str, retrain: bool = False) -> dict:
    """Notebook 03's CLIP step: pretrain the world CLIP (smoke/cpu), or load the study's open_clip
    ViT-B-32 / OpenAI weights (paper); either way report val retrieval. {"model", "metrics", "name"}."""
    if profile != "paper":
        r = pretrain(profile, retrain=retrain)
        return {"model": r["model"], "metrics": r["metrics"], "name": "world8k CLIP (pretrained here)"}
    clip = profiles.get(profile).caption_clip.clip
    model = open_clip.create_model(clip.model_name, pretrained=clip.pretrained).eval().requires_grad_(False)
    metrics = evaluate(model, profile, data.load(profile), clip.image_size, clip.context_length)
    return {"model": model, "metrics": metrics, "name": f"open_clip {clip.model_name} ({clip.pretrained})"}


def ensure_world_clip(profile: str):
    """``load_world_clip(profile)``, pretraining it first when it is not there yet (for 04 and 07)."""
    try:
        return load_world_clip(profile)
    except FileNotFoundError:
        return pretrain(profile, progress=False)["model"]
