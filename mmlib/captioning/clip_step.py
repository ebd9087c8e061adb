"""Notebook 03's CLIP step: pretrain the world CLIP on world8k (smoke/cpu) or load the study's open_clip
ViT-B-32 / OpenAI weights (paper), and report validation retrieval. The model, its InfoNCE loss and its
files are :mod:`.clip_pretrain`; this module sits above it and above the 02/03 experiment steps
(:mod:`.xattn_experiment`: the CNN grid it trains on), so every import is at module level.
"""
from __future__ import annotations

import json
from dataclasses import asdict

import torch

from .. import data, device, paths, pretrained, profiles, train
from ..data import world
from . import encoders
from .clip_pretrain import (WorldCLIPSettings, build, clip_dir, embed, infonce_loss, load_world_clip,
                            recall_at_k, save_world_clip, tokenize)
from .xattn_experiment import features, image_encoder, settings as caption_settings


def pretrain(profile: str, cnn_feats=None, retrain: bool = False, progress: bool = True) -> dict:
    """Train (or reload from the train.fit cache) the world CLIP of ``profile`` on the CNN grid tokens
    ``cnn_feats`` (an ``xattn_experiment.Features`` of notebook 02's encoder; computed or read from 02's
    cache when None), evaluate retrieval on the validation split, save it;
    returns {"model", "config", "metrics", "fit"}."""
    if cnn_feats is None:
        cnn_feats = features(profile, "cnn")
    settings = profiles.get(profile).caption_clip.clip
    cfg = settings.model_config()
    split = cnn_feats.split
    tokens = tokenize(profile, [c for _, cs in split.train for c in cs[:5]], cfg.context_length)
    tokens = tokens.view(len(split.train), 5, cfg.context_length)                 # (N, 5, L)
    torch.manual_seed(settings.seed)
    model = build(cfg, profile)
    model.visual.cnn.requires_grad_(False)
    grid = cnn_feats.train                                                        # (N, h·w, C) fp16
    extra_key = None
    if settings.extra_scenes:
        extra_grid, extra_tokens, extra_key = extra_pairs(profile, settings, cnn_feats, cfg.context_length)
        grid, tokens = torch.cat([grid, extra_grid]), torch.cat([tokens, extra_tokens])

    def loss_fn(m, batch):   # gathers the batch's CNN grid from the cache
        return infonce_loss(m, {"grid": device.as_compute(grid[batch["idx"]]), "tokens": batch["tokens"]})

    tcfg = train.TrainConfig(steps=settings.steps, batch_size=settings.batch_size, lr=settings.lr,
                             weight_decay=0.1, betas=(0.9, 0.98), warmup=settings.warmup, log_every=10)
    run_dir = paths.run_dir(profile, "03") / "clip_train"
    key = {"clip": asdict(cfg), "features": cnn_feats.key, "n": len(split.train)}
    if extra_key is not None:
        key["extra"] = extra_key
    fit = train.fit(model, loss_fn, {"idx": torch.arange(len(grid)), "tokens": tokens}, tcfg, run_dir,
                    key=key, progress=progress, restart=retrain)
    model.eval().requires_grad_(False)
    metrics = evaluate(model, profile, split, cnn_feats.val, cfg.context_length)
    previous = clip_dir(profile) / "metrics.json"
    seconds = fit.train_seconds  # a reloaded (cached) run keeps the training time of the run that trained it
    if fit.cached and previous.exists():
        seconds = json.loads(previous.read_text()).get("train_seconds") or seconds
    metrics.update(train_seconds=seconds, cached=fit.cached, steps=fit.steps,
                   final_loss=fit.history[-1]["loss"] if fit.history else None)
    save_world_clip(model, cfg, profile, metrics)
    return {"model": model, "config": cfg, "metrics": metrics, "fit": fit}


def extra_pairs(profile: str, settings: WorldCLIPSettings, cnn_feats, context_length: int
                ) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """The CNN grid (M, h·w, C) and BPE tokens (M, 5, L) of ``settings.extra_scenes`` further world
    scenes, our stand-in for CLIP's web-scale pairs: rendered like world8k but from world seed
    ``extra_seed`` (world8k's split is seed 0: the validation images are never among them), encoded by
    the same frozen CNN at the same size as notebook 02's grid and cached; plus their cache key."""
    if settings.extra_seed == profiles.get(profile).data.seed:
        raise ValueError(f"caption_clip.clip.extra_seed {settings.extra_seed} is the captioning split's own world "
                         f"seed: the extra scenes would repeat its (validation) images; choose another seed")
    folder = world.ensure(settings.extra_scenes, profiles.get(profile).data.image_size, seed=settings.extra_seed)
    captions = data.flickr8k.load_folder(folder, expect_images=settings.extra_scenes, check_images="exists")
    names = sorted(captions)
    size = caption_settings(profile, "cnn").image_size
    enc, fingerprint = image_encoder(profile, "cnn")
    key = {**fingerprint, "folder": folder.name, "size": size, "n": len(names)}
    grid, _ = encoders.cached_features(enc, lambda: data.images(folder, names, size),
                                       paths.run_dir(profile, "03") / "extra_features", key)
    if grid.shape[1:] != cnn_feats.train.shape[1:]:
        raise ValueError(f"extra scenes' grid {tuple(grid.shape[1:])} != notebook 02's {tuple(cnn_feats.train.shape[1:])}")
    tokens = tokenize(profile, [c for n in names for c in captions[n][:5]], context_length)
    return grid, tokens.view(len(names), 5, context_length), key


def evaluate(model, profile: str, split, val_images: torch.Tensor, context_length: int) -> dict[str, float]:
    """image→text and text→image R@1/5/10 on the validation split (5 captions per image);
    ``val_images``: uint8 images or the CNN grid tokens of the val images."""
    caps = [c for _, cs in split.val for c in cs[:5]]
    owner = torch.arange(len(split.val)).repeat_interleave(5)
    img, txt = embed(model, val_images, tokenize(profile, caps, context_length))
    return recall_at_k(img, txt, owner)


def prepare_clip(profile: str, cnn_feats=None, retrain: bool = False) -> dict:
    """Notebook 03's CLIP step: pretrain the world CLIP (smoke/cpu), or load the study's open_clip
    ViT-B-32 / OpenAI weights (paper); either way report val retrieval. {"model", "metrics", "name"}."""
    if profiles.get(profile).weights == "offline":
        r = pretrain(profile, cnn_feats, retrain=retrain)
        return {"model": r["model"], "metrics": r["metrics"], "name": "world8k CLIP (pretrained here)"}
    clip = profiles.get(profile).caption_clip.clip
    model = pretrained.clip_model(clip.model_name, clip.pretrained)
    split = data.load(profile)
    images = data.images(split.folder, [n for n, _ in split.val], clip.image_size)
    metrics = evaluate(model, profile, split, images, clip.context_length)
    return {"model": model, "metrics": metrics, "name": f"open_clip {clip.model_name} ({clip.pretrained})"}


def ensure_world_clip(profile: str):
    """``load_world_clip(profile)``, pretraining it first when it is not there yet (for 04 and 07)."""
    try:
        return load_world_clip(profile)
    except FileNotFoundError:
        return pretrain(profile, progress=False)["model"]
