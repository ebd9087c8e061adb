"""LoRA fine-tuning of an SDXL-architecture pipeline: the study's section 2.1 ("Lora 微调 Stable Diffusion").

The study fine-tuned ``stabilityai/stable-diffusion-xl-base-1.0`` with diffusers'
``examples/text_to_image/train_text_to_image_lora_sdxl.py`` (rank 128, 512 px, batch 16, 1000 steps,
lr 1e-4 cosine) on the first 7,000 Flickr8k images with their first captions, and saw the style move
from cartoon-like to photographic (its Figure 5). This module runs the same experiment with the same
diffusers/peft objects at two scales:

- ``paper``: the real SDXL-base-1.0 by name (``load_pipeline``), the script's recipe (profile ``sd_lora``).
- ``smoke``/``cpu``: no SDXL weights exist offline, so a *tiny* SDXL-architecture
  ``StableDiffusionXLPipeline`` is built here: two CLIP text encoders (``CLIPTextModel`` +
  ``CLIPTextModelWithProjection``, penultimate hidden states concatenated, pooled projection of the
  second), an ``AutoencoderKL`` (factor 2: 32 px -> 16×16×4 latents), a ``UNet2DConditionModel`` with
  ``addition_embed_type="text_time"`` (SDXL micro-conditioning on original size / crop / target size,
  Podell et al. 2023, https://arxiv.org/abs/2307.01952, sec. 2.2). Its "prior" is pretrained here on
  the world's **cartoon** renders (``pretrain_base``, cached), then LoRA adapts it to the **photo** renders.

LoRA (Hu et al. 2021, https://arxiv.org/abs/2106.09685): a frozen weight ``W`` becomes
``W + (alpha / r) B A`` with ``A`` (r × d_in), ``B`` (d_out × r), ``B = 0`` at the start (so the adapted
model starts exactly at the base); only ``A, B`` of ``to_q, to_k, to_v, to_out.0`` train.
Training objective (both stages): ``|| eps - eps_theta(z_t, t, c, time_ids) ||^2`` with
``z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) eps`` (DDPM, https://arxiv.org/abs/2006.11239, eq. 4 and 14),
SDXL's scaled-linear betas, ``z_0 = scaling_factor * E(x)``.
"""
from __future__ import annotations

import json
import os
import shutil
import textwrap
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from PIL import Image
from torch import nn

from .. import ckpt, device, profiles, results, train
from .. import data as mdata
from ..data import flickr8k, world
from ..eval import style, t2i
from ..eval.style import StyleConfig
from ..images import to_signed
from ..nets import n_params
from ..paths import run_dir
from .sdxl import (
    SCHEDULER,
    Denoiser,
    LoraSettings,
    SampleSettings,
    TinySDXLConfig,
    add_lora,
    build_tiny_pipeline,
    encode_latents,
    load_pipeline,
    save_lora,
    time_ids,
    tokenize,
)


@dataclass
class StageConfig:
    """One training stage (VAE, base diffusion or LoRA) run through ``train.fit``."""
    steps: int
    batch_size: int
    lr: float
    warmup: int = 0
    schedule: str = "cosine"
    grad_clip: float | None = 1.0
    ckpt_every: int = 0
    seed: int = 0
    mixed_precision: str = "auto"
    caption_dropout: float = 0.0       # share of captions replaced by SDXL's zero embedding (for CFG)
    flip: float = 0.5                  # random horizontal flip probability (the script's --random_flip)
    kl_weight: float = 1e-6            # VAE stage only (LDM's KL-reg weight)

    def train_config(self, log_every: int = 10) -> train.TrainConfig:
        return train.TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, warmup=self.warmup,
                                 schedule=self.schedule, grad_clip=self.grad_clip, ckpt_every=self.ckpt_every,
                                 seed=self.seed, mixed_precision=self.mixed_precision, weight_decay=0.01,
                                 log_every=max(1, min(log_every, self.steps // 20)))


# ----------------------------------------------------------------------------- data


def training_data(pipe, images: torch.Tensor, captions: Sequence[Sequence[str]], tids: torch.Tensor,
                  batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Everything ``diffusion_loss`` needs, precomputed once (the VAE is frozen in both diffusion stages):
    latents of the image and of its mirror image (the random flip), token ids of ``k`` captions per image.

    images uint8 (N, 3, H, W); captions N lists (k = the shortest length is kept); tids (N, 6) or (6,).
    """
    k = min(len(c) for c in captions)
    flat = [c for caps in captions for c in list(caps)[:k]]
    ids, ids_2 = tokenize(pipe, flat)
    mu, sd = encode_latents(pipe.vae, images, batch_size)
    mu_f, sd_f = encode_latents(pipe.vae, images.flip(-1), batch_size)
    n = len(images)
    tids = tids.expand(n, 6) if tids.dim() == 1 else tids
    return {"mu": mu, "sd": sd, "mu_flip": mu_f, "sd_flip": sd_f, "tids": tids.float().contiguous(),
            "ids": ids.view(n, k, -1), "ids_2": ids_2.view(n, k, -1)}


def noise_scheduler():
    return DDPMScheduler(**{k: v for k, v in SCHEDULER.items() if k != "timestep_spacing"})


def diffusion_loss(stage: StageConfig):
    """``loss_fn(model: Denoiser, batch)`` for ``train.fit``: eps-MSE (DDPM eq. 14) on SDXL latents.

    Per sample: one of its captions, a random flip (latents of the mirrored image), a posterior sample
    ``z_0 = mu + sd * n``, caption dropout to zero embeddings. All draws use the global torch RNG,
    which ``train.fit`` checkpoints, so a resumed run is exact.
    """
    sched = noise_scheduler()

    def loss_fn(model: Denoiser, batch: dict) -> torch.Tensor:
        dev = next(model.parameters()).device
        b = batch["mu"].shape[0]
        flip = (torch.rand(b) < stage.flip)[:, None, None, None]
        mu = torch.where(flip, batch["mu_flip"], batch["mu"])
        sd = torch.where(flip, batch["sd_flip"], batch["sd"])
        z0 = mu + sd * torch.randn_like(mu)                                   # (B, 4, h, w)
        pick = torch.randint(0, batch["ids"].shape[1], (b,))
        ids, ids_2 = batch["ids"][torch.arange(b), pick], batch["ids_2"][torch.arange(b), pick]
        keep = torch.rand(b) >= stage.caption_dropout
        noise = torch.randn_like(z0)
        t = torch.randint(0, sched.config.num_train_timesteps, (b,))
        zt = sched.add_noise(z0, noise, t)                                    # eq. 4
        pred = model(zt.to(dev), t.to(dev), ids.to(dev), ids_2.to(dev), batch["tids"].to(dev), keep.to(dev))
        return F.mse_loss(pred.float(), noise.to(dev))                        # eq. 14
    return loss_fn


# ----------------------------------------------------------------------------- stages


class _VAE(nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae


def vae_loss(stage: StageConfig):
    """Reconstruction (L1 + L2) + ``kl_weight`` · KL(q(z|x) || N(0, I)) (LDM's KL-regularised autoencoder,
    without the perceptual and adversarial terms), on randomly flipped images."""
    def loss_fn(model: _VAE, batch: dict) -> tuple[torch.Tensor, dict]:
        x = to_signed(batch["x"])
        x = torch.where((torch.rand(len(x)) < stage.flip)[:, None, None, None], x.flip(-1), x)
        x = x.to(next(model.parameters()).device)
        dist = model.vae.encode(x).latent_dist
        rec = model.vae.decode(dist.sample()).sample.float()
        l_rec = F.l1_loss(rec, x) + F.mse_loss(rec, x)
        kl = dist.kl().mean() / x[0].numel()
        return l_rec + stage.kl_weight * kl, {"rec": float(l_rec), "kl": float(kl)}
    return loss_fn


def fit_vae(pipe, images: torch.Tensor, stage: StageConfig, out_dir: Path, key: dict, progress: bool = False
            ) -> train.FitResult:
    """Train the pipeline's ``AutoencoderKL`` on uint8 ``images``, then set ``scaling_factor`` = 1 / std
    of the latents (SD's 0.18215 and SDXL's 0.13025 were chosen the same way)."""
    pipe.vae.requires_grad_(True)
    fit = train.fit(_VAE(pipe.vae), vae_loss(stage), {"x": images}, stage.train_config(), out_dir,
                    {"stage": "vae", **key}, progress=progress)
    pipe.vae.requires_grad_(False).eval()
    pipe.vae.register_to_config(scaling_factor=1.0)
    mu, _ = encode_latents(pipe.vae, images[:512])
    pipe.vae.register_to_config(scaling_factor=float(1 / mu.std()))
    return fit


def fit_diffusion(pipe, data: dict, stage: StageConfig, out_dir: Path, key: dict, progress: bool = False
                  ) -> train.FitResult:
    """Train the parts of UNet + text encoders that require grad (set by the caller) on ``data``."""
    return train.fit(Denoiser(pipe), diffusion_loss(stage), data, stage.train_config(), out_dir, key,
                     progress=progress)


# ----------------------------------------------------------------------------- the experiment


@dataclass(frozen=True)
class Experiment:
    """Profile section ``sd_lora`` (08): everything the experiment sets."""
    model: TinySDXLConfig = field(default_factory=TinySDXLConfig)
    vae: StageConfig = field(default_factory=lambda: StageConfig(steps=300, batch_size=64, lr=2e-3))
    base: StageConfig = field(default_factory=lambda: StageConfig(steps=1000, batch_size=64, lr=1e-3,
                                                                  caption_dropout=0.1))
    finetune: StageConfig = field(default_factory=lambda: StageConfig(steps=300, batch_size=16, lr=1e-4))
    lora: LoraSettings = field(default_factory=LoraSettings)
    sample: SampleSettings = field(default_factory=SampleSettings)
    lora_images: float | int = 7000 / 8091   # the first images (file order) LoRA trains on: a count or a share
    captions_per_image: int = 1              # LoRA data: the first caption of each image (the study)
    n_prompts: int = 200                     # held-out prompts scored before/after
    pretrained: str | None = None            # paper: SDXL's hub name (no base pretraining)
    style: StyleConfig = field(default_factory=lambda: StyleConfig(steps=200))   # resolution is set per use


def experiment(profile: str) -> Experiment:
    return profiles.get(profile).sd_lora


@dataclass
class Data:
    """The study's split for this section: LoRA on the first images (file order) with their first caption,
    prompts from the rest (held out)."""
    folder: Path
    order: list[str]                   # image names in caption-file order
    captions: dict[str, list[str]]
    n_lora: int

    @property
    def lora_names(self) -> list[str]:
        return self.order[:self.n_lora]

    @property
    def heldout_names(self) -> list[str]:
        return self.order[self.n_lora:]


def study_data(profile: str, exp: Experiment | None = None) -> Data:
    exp = exp or experiment(profile)
    folder = mdata.folder_for(profile)
    caps = flickr8k.read_captions(flickr8k.find_layout(folder)[0])
    order = list(caps)
    n = exp.lora_images if isinstance(exp.lora_images, int) else round(exp.lora_images * len(order))
    return Data(folder, order, caps, n)


def style_folder(profile: str, style: str) -> Path:
    """The world8k folder of ``profile``'s data settings rendered in ``style`` (same scenes, names, captions)."""
    d = profiles.get(profile).data
    return world.ensure(n_images=d.n_images, size=d.image_size, seed=d.seed, style=style)


def world_time_ids(profile: str, size: int) -> torch.Tensor:
    """World renders are square, resized from the data size to ``size`` without a crop."""
    orig = profiles.get(profile).data.image_size
    return time_ids((orig, orig), (0, 0), (size, size))


def pretrain_base(profile: str, exp: Experiment | None = None, progress: bool = False, retrain: bool = False):
    """The base pipeline: in ``paper`` SDXL-base-1.0 (``load_pipeline``); else the tiny pipeline trained in
    two stages on the **cartoon** renders of the study's training split (its prior), saved with
    ``save_pretrained`` under ``runs/<profile>/08/base-<hash>/`` and reloaded from there on reruns.

    Stage 1: the ``AutoencoderKL`` on cartoon *and* photo renders (a generic autoencoder, as SDXL's VAE
    reconstructs photos; the prior's style lives in the UNet). Stage 2: UNet + both text encoders on the
    cartoon latents with all five captions per image. Returns ``(pipe, info)``.
    """
    exp = exp or experiment(profile)
    if exp.pretrained:
        return load_pipeline(profile), {"source": exp.pretrained, "cached": True, "seconds": 0.0}
    d, cfg = study_data(profile, exp), exp.model
    out = run_dir(profile, "08")
    key = {"model": asdict(cfg), "vae": asdict(exp.vae), "base": asdict(exp.base),
           "data": str(style_folder(profile, "cartoon")), "n_train": d.n_lora, "precision": device.precision()}
    folder = out / f"base-{ckpt.config_key(key)}"
    if (folder / "model_index.json").exists() and not retrain:
        info = json.loads((folder / "info.json").read_text())
        return load_pipeline(profile, folder), {**info, "cached": True}
    pipe = build_tiny_pipeline(cfg, profile)
    names = d.lora_names
    cartoon = mdata.images(style_folder(profile, "cartoon"), names, cfg.image_size)     # (N, 3, 32, 32)
    photo = mdata.images(d.folder, names, cfg.image_size)
    fv = fit_vae(pipe, torch.cat([cartoon, photo]), exp.vae, out, key, progress)
    data = training_data(pipe, cartoon, [d.captions[n] for n in names], world_time_ids(profile, cfg.image_size))
    pipe.text_encoder.requires_grad_(True), pipe.text_encoder_2.requires_grad_(True), pipe.unet.requires_grad_(True)
    fb = fit_diffusion(pipe, data, exp.base, out, {"stage": "base", "vae": fv.train_dir.name, **key}, progress)
    for m in (pipe.unet, pipe.text_encoder, pipe.text_encoder_2, pipe.vae):
        m.requires_grad_(False).eval()
    info = {"source": "tiny SDXL pretrained on cartoon renders", "key": folder.name, "vae_seconds": fv.train_seconds,
            "base_seconds": fb.train_seconds, "seconds": fv.train_seconds + fb.train_seconds,
            "vae_loss": fv.history[-1]["loss"] if fv.history else None,
            "base_loss": fb.history[-1]["loss"] if fb.history else None,
            "scaling_factor": pipe.vae.config.scaling_factor, "n_images": len(names),
            "params": {"unet": n_params(pipe.unet), "vae": n_params(pipe.vae),
                       "text_encoder": n_params(pipe.text_encoder), "text_encoder_2": n_params(pipe.text_encoder_2)},
            "history": {"vae": fv.history, "base": fb.history}}
    # atomic: the pipeline and its info.json are written to a temporary folder renamed at the end, so a
    # crash in between leaves no half-written base that a rerun would try to load
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(str(tmp))
    (tmp / "info.json").write_text(json.dumps(info))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return pipe, {**info, "cached": False}


def lora_data(profile: str, pipe, exp: Experiment | None = None) -> dict[str, torch.Tensor]:
    """Photo latents of the LoRA split (first ``n_lora`` images, their first caption(s)); in ``paper`` the
    real images centre-cropped to the script's resolution, with their true size/crop time ids."""
    exp = exp or experiment(profile)
    d = study_data(profile, exp)
    size = exp.model.image_size
    names = d.lora_names
    images = mdata.images(d.folder, names, size)
    tids = world_time_ids(profile, size) if not exp.pretrained else paper_time_ids(d.folder, names, size)
    caps = [d.captions[n][:exp.captions_per_image] for n in names]
    return training_data(pipe, images, caps, tids, batch_size=exp.sample.batch_size)


def paper_time_ids(folder: Path, names: Sequence[str], size: int) -> torch.Tensor:
    """(N, 6) time ids as the script computes them: original (h, w), centre-crop top-left after resizing
    the short side to ``size``, target (size, size)."""
    src, rows = mdata.image_dir(folder), []
    for n in names:
        with Image.open(src / n) as im:
            w, h = im.size
        s = size / min(w, h)
        top, left = max(0, round((h * s - size) / 2)), max(0, round((w * s - size) / 2))
        rows.append(time_ids((h, w), (top, left), (size, size)))
    return torch.stack(rows)


def finetune_lora(profile: str, pipe, base_info: dict, exp: Experiment | None = None, progress: bool = False):
    """Attach LoRA to ``pipe.unet`` (base frozen), train it with ``train.fit`` on the photo split and save
    only the adapter. Returns ``(path of the .safetensors, FitResult)``. The checkpoint of ``train.fit``
    holds the LoRA matrices + optimizer state only (only they require grad)."""
    exp = exp or experiment(profile)
    pipe.to(device.device())
    for m in (pipe.unet, pipe.text_encoder, pipe.text_encoder_2, pipe.vae):
        m.requires_grad_(False)
    data = lora_data(profile, pipe, exp)
    add_lora(pipe.unet, exp.lora)
    key = {"stage": "lora", "lora": asdict(exp.lora), "base": base_info.get("source"),
           "base_key": base_info.get("key"), "n": int(data["mu"].shape[0])}
    fit = fit_diffusion(pipe, data, exp.finetune, run_dir(profile, "08"), key, progress)
    pipe.unet.eval()
    return save_lora(pipe.unet, fit.train_dir / "lora"), fit


def heldout_prompts(profile: str, n: int, exp: Experiment | None = None):
    """``n`` prompts of the shared T2I evaluation (``t2i.heldout_prompts``) restricted to images LoRA never
    saw (the val split overlaps the study's first-7,000 LoRA images in its first ~8 %)."""
    d = study_data(profile, exp)
    held = set(d.heldout_names)
    p = t2i.heldout_prompts(profile, n=10 ** 9)   # every val image, captions cycling the five annotators
    keep = [i for i, im in enumerate(p.images) if im in held]
    keep = [keep[j] for j in np.linspace(0, len(keep) - 1, min(n, len(keep))).round().astype(int)]
    return t2i.Prompts([p.images[i] for i in keep], [p.captions[i] for i in keep], [p.stated[i] for i in keep],
                       p.folder)


def style_table(profile: str, exp: Experiment, prompts, sets: dict[str, torch.Tensor], steps: int):
    """The style table (``sd_lora_style``): for every image set, the calibrated style share, prompt
    fidelity, background and Fréchet distance to real photos. Returns (rows, oracle, classifier)."""
    r = exp.model.image_size
    oracle, clf = t2i.oracle(profile, r), style.classifier(profile, r)
    real_photo = prompts.real_images(r)
    rows = []
    for name, imgs in sets.items():
        fid = t2i.prompt_fidelity(oracle, imgs, prompts.stated)
        rows.append({"images": name, "photo style %": 100 * style.style_share(clf, imgs, "photo"),
                     "fidelity %": 100 * fid.overall, "background %": 100 * fid.per_attribute.get("background", float("nan")),
                     "Fréchet to real photos": t2i.frechet_distance(oracle, imgs, real_photo)})
    note = (f"Profile {profile}: {len(prompts)} held-out prompts (images LoRA never saw), {r} px, {steps} Euler steps, "
            f"CFG {exp.sample.guidance:g}, the same noise for every row. Style classifier balanced held-out accuracy "
            f"{100 * clf.accuracy:.1f} %; attribute oracle mean held-out accuracy "
            f"{100 * sum(oracle.accuracy.values()) / len(oracle.accuracy):.1f} %.")
    results.save_table(profile, "sd_lora_style", rows, formats={c: ".1f" for c in rows[0] if c.endswith("%")} |
                       {"Fréchet to real photos": ".2f"}, note=note)
    return rows, oracle, clf


def style_summary(rows: list[dict], accuracy: float) -> dict:
    """The named numbers of the style table (rows by their ``images`` name: the real renders, the base
    model and the full adapter) that the report and ``mmlib.claims`` read."""
    by = {r["images"]: r for r in rows}
    base, lora = by["base (cartoon prior)"], by["LoRA weight 1"]
    return {"photo_share_base": base["photo style %"], "photo_share_lora": lora["photo style %"],
            "fidelity_base": base["fidelity %"], "fidelity_lora": lora["fidelity %"],
            "fidelity_cartoon_ceiling": by["real cartoon renders"]["fidelity %"],
            "fidelity_photo_ceiling": by["real photo renders"]["fidelity %"], "style_accuracy": 100 * accuracy}


# ----------------------------------------------------------------------------- figures


def columns_grid(columns: dict[str, torch.Tensor], row_titles: Sequence[str] | None = None, scale: float = 1.2):
    """Matplotlib figure: one column per entry of ``columns`` (uint8 (N, 3, H, W) each), one row per image."""
    names = list(columns)
    n = len(next(iter(columns.values())))
    fig, axes = plt.subplots(n, len(names), figsize=(scale * len(names) + (2.6 if row_titles else 0), scale * n),
                             squeeze=False)
    for j, name in enumerate(names):
        for i in range(n):
            ax = axes[i, j]
            ax.imshow(columns[name][i].permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=8)
            if j == 0 and row_titles:
                ax.set_ylabel("\n".join(_wrap(row_titles[i], 28)), fontsize=6, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return fig


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width)[:3]
