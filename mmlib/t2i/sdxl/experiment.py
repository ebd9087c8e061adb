"""LoRA fine-tuning of an SDXL-architecture pipeline: the study's section 2.1 ("Lora 微调 Stable Diffusion").

The study fine-tuned ``stabilityai/stable-diffusion-xl-base-1.0`` with diffusers'
``examples/text_to_image/train_text_to_image_lora_sdxl.py`` (rank 128, 512 px, batch 16, 1000 steps,
lr 1e-4 cosine) on the first 7,000 Flickr8k images with their first captions, and saw the style move
from cartoon-like to photographic (its Figure 5). The notebook runs the same experiment with the same
diffusers/peft objects at two scales:

- ``paper``: the real SDXL-base-1.0 by name (``load_pipeline``), the script's recipe (profile section ``08_lora``).
- ``smoke``/``cpu``: no SDXL weights exist offline, so a *tiny* SDXL-architecture
  ``StableDiffusionXLPipeline`` is built here: two CLIP text encoders (``CLIPTextModel`` +
  ``CLIPTextModelWithProjection``, penultimate hidden states concatenated, pooled projection of the
  second), an ``AutoencoderKL`` (factor 2: 32 px -> 16×16×4 latents), a ``UNet2DConditionModel`` with
  ``addition_embed_type="text_time"`` (SDXL micro-conditioning on original size / crop / target size,
  Podell et al. 2023, https://arxiv.org/abs/2307.01952, sec. 2.2). Its "prior" is pretrained here on
  the world's **cartoon** renders (``pretrain_base``, cached), then LoRA adapts it to the **photo** renders.

The pipeline is :mod:`.pipeline`, the LoRA adapter :mod:`.lora`, the training stages (VAE, base, LoRA;
their eps-objective) :mod:`.stages`; this module is notebook 08's experiment on top of them.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image

from ... import ckpt, device, images, profiles, results
from ... import data as mdata
from ...data import world
from ...eval import frechet, style, t2i
from ...eval import oracle as orc
from ...eval.bootstrap import interval as bootstrap_interval
from ...eval.bootstrap import mean_interval
from ...eval.style import StyleConfig
from ...eval.t2i_fidelity import difference_interval, prompt_fidelity
from ...eval.t2i_prompts import Prompts, lora_split
from ...eval.t2i_tables import fmt
from ...images import psnr, to_uint8
from ...nets import n_params
from ...paths import run_dir
from .lora import LoraSettings, add_lora, save_lora
from .pipeline import SampleSettings, TinySDXLConfig, build_tiny_pipeline, encode_latents, load_pipeline, time_ids
from .stages import StageConfig, fit_diffusion, fit_vae, training_data


# ----------------------------------------------------------------------------- the experiment


@dataclass(frozen=True)
class SDLoRASettings:
    """Profile section ``08_lora`` (08): everything the experiment sets."""
    model: TinySDXLConfig = field(default_factory=TinySDXLConfig)
    vae: StageConfig = field(default_factory=lambda: StageConfig(steps=300, batch_size=64, lr=2e-3))
    base: StageConfig = field(default_factory=lambda: StageConfig(steps=1000, batch_size=64, lr=1e-3,
                                                                  caption_dropout=0.1))
    finetune: StageConfig = field(default_factory=lambda: StageConfig(steps=300, batch_size=16, lr=1e-4))
    lora: LoraSettings = field(default_factory=LoraSettings)
    sample: SampleSettings = field(default_factory=SampleSettings)
    lora_images: float | int = 7000 / 8091   # the first images (file order) LoRA trains on: a count or a share
    captions_per_image: int = 1              # LoRA data: the first caption of each image (the study)
    pretrained: str | None = None            # paper: SDXL's hub name (no base pretraining)
    style: StyleConfig = field(default_factory=lambda: StyleConfig(steps=200))   # resolution is set per use


def settings(profile: str) -> SDLoRASettings:
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


def study_data(profile: str, exp: SDLoRASettings | None = None) -> Data:
    exp = exp or settings(profile)
    folder = mdata.folder_for(profile)
    caps, n_lora = lora_split(folder, exp.lora_images)      # the one rule, shared with the held-out prompts
    return Data(folder, list(caps), caps, n_lora)


def style_folder(profile: str, style: str) -> Path:
    """The world8k folder of ``profile``'s data settings rendered in ``style`` (same scenes, names, captions)."""
    d = profiles.get(profile).data
    return world.ensure(n_images=d.n_images, size=d.image_size, seed=d.seed, style=style)


def world_time_ids(profile: str, size: int) -> torch.Tensor:
    """World renders are square, resized from the data size to ``size`` without a crop."""
    orig = profiles.get(profile).data.image_size
    return time_ids((orig, orig), (0, 0), (size, size))


def pretrain_base(profile: str, exp: SDLoRASettings | None = None, progress: bool = False, retrain: bool = False):
    """The base pipeline: in ``paper`` SDXL-base-1.0 (``load_pipeline``); else the tiny pipeline trained in
    two stages on the **cartoon** renders of the study's training split (its prior), saved with
    ``save_pretrained`` under ``runs/<profile>/08/base-<hash>/`` and reloaded from there on reruns.

    Stage 1: the ``AutoencoderKL`` on cartoon *and* photo renders (a generic autoencoder, as SDXL's VAE
    reconstructs photos; the prior's style lives in the UNet). Stage 2: UNet + both text encoders on the
    cartoon latents with all five captions per image. Returns ``(pipe, info)``.
    """
    exp = exp or settings(profile)
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


def lora_data(profile: str, pipe, exp: SDLoRASettings | None = None) -> dict[str, torch.Tensor]:
    """Photo latents of the LoRA split (first ``n_lora`` images, their first caption(s)); in ``paper`` the
    real images centre-cropped to the script's resolution, with their true size/crop time ids."""
    exp = exp or settings(profile)
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


def finetune_lora(profile: str, pipe, base_info: dict, exp: SDLoRASettings | None = None, progress: bool = False):
    """Attach LoRA to ``pipe.unet`` (base frozen), train it with ``train.fit`` on the photo split and save
    only the adapter. Returns ``(path of the .safetensors, FitResult)``. The checkpoint of ``train.fit``
    holds the LoRA matrices + optimizer state only (only they require grad)."""
    exp = exp or settings(profile)
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


# ----------------------------------------------------------------------------- evaluation

# real image sets of a known style in the style table: the classifier must read them as that style
REAL_SETS = {"real photo renders": "photo", "real cartoon renders": "cartoon"}
ROUND_TRIPS = {"cartoon": "real cartoons, VAE round trip", "photo": "real photos, VAE round trip"}
CONTROLS = {ROUND_TRIPS["cartoon"]: "cartoon", "real cartoons, blurred": "cartoon", ROUND_TRIPS["photo"]: "photo"}
BASE, LORA = "base (cartoon prior)", "LoRA weight 1"


@torch.no_grad()
def vae_round_trip(pipe, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """uint8 images through the pipeline's first stage: encode (posterior mean), decode, as every
    generated image is decoded. uint8 (N, 3, H, W) -> uint8 (N, 3, H, W)."""
    vae = pipe.vae.eval()
    dev, dtype = next(vae.parameters()).device, next(vae.parameters()).dtype
    z, _ = encode_latents(vae, images, batch_size)                       # scaled latents (N, 4, h, w)
    out = [to_uint8(vae.decode((z[i:i + batch_size] / vae.config.scaling_factor).to(dev, dtype)).sample.float().cpu())
           for i in range(0, len(z), batch_size)]
    return torch.cat(out)


def style_controls(pipe, cartoon: torch.Tensor, photo: torch.Tensor) -> dict[str, torch.Tensor]:
    """The style classifier's controls (``mmlib.eval.style``): real renders of a known style through the
    changes a generated image undergoes — the VAE round trip of this pipeline, and a Gaussian blur."""
    return {ROUND_TRIPS["cartoon"]: vae_round_trip(pipe, cartoon),
            "real cartoons, blurred": style.gaussian_blur(cartoon, style.CONTROL_BLUR),
            ROUND_TRIPS["photo"]: vae_round_trip(pipe, photo)}


def round_trip_psnr(controls: dict[str, torch.Tensor], cartoon: torch.Tensor, photo: torch.Tensor) -> dict[str, float]:
    """Mean PSNR (dB) of the VAE round trips in ``controls`` (``style_controls``) against their uint8
    originals, per style: the first stage's reconstruction quality on held-out renders."""
    return {s: float(psnr(controls[ROUND_TRIPS[s]].float() / 255, x.float() / 255).mean())
            for s, x in (("cartoon", cartoon), ("photo", photo))}


def first_stage(pipe, base_info: dict) -> tuple[str, Callable[[torch.Tensor], torch.Tensor]]:
    """This pipeline's VAE round trip, named by the base pipeline's key, for ``style.classifier``."""
    return str(base_info.get("key") or base_info.get("source")), lambda images: vae_round_trip(pipe, images)


def style_evaluation(profile: str, exp: SDLoRASettings, prompts: Prompts, sets: dict[str, torch.Tensor], steps: int,
                     first_stage: tuple[str, Callable[[torch.Tensor], torch.Tensor]] | None = None):
    """The calibrated style table (``08_style``) and its numbers (result ``08_eval``).

    For every image set of ``sets`` (one image per prompt: real renders, the controls of
    ``style_controls``, the base and the LoRA samples): the share the style classifier reads as photo,
    prompt fidelity (the shared oracle, macro over readable attributes) and the Fréchet distance to
    the prompts' real photos (``mmlib.eval.frechet``; for the real photos themselves the floor, a
    disjoint real set), each with a 95 % bootstrap interval over prompts. Then the classifier's
    calibration (``style.calibration`` on the real sets and controls) and the paired LoRA − base
    changes. ``first_stage`` (:func:`first_stage`): the classifier also trains on train renders through it.
    Returns ``(result, oracle, classifier)``."""
    r, seed = exp.model.image_size, prompts.seed
    oracle, clf = orc.oracle(profile, r), style.classifier(profile, r, first_stage=first_stage)
    truth = {**REAL_SETS, **CONTROLS}
    real, floor = t2i.real_features(profile, prompts, r)
    photo, fid, rows = {}, {}, {}
    for name, imgs in sets.items():
        photo[name] = style.photo_indicator(clf, imgs)
        fid[name] = prompt_fidelity(oracle, imgs, prompts.stated)
        own = floor if name == "real photo renders" else frechet.features(imgs)
        fiv = fid[name].interval(seed)
        rows[name] = {"style": truth.get(name, "generated"),
                      "photo_share": mean_interval(photo[name], seed=seed).as_dict(),
                      "fidelity": fiv.as_dict() if fiv else None,
                      "frechet": frechet.paired_interval(own, real, seed=seed).as_dict()}
    controls = {name: (truth[name], float(photo[name].mean() if truth[name] == "photo" else 1 - photo[name].mean()))
                for name in sets if name in truth}
    change = fid_change = None
    if BASE in sets and LORA in sets:
        d = photo[LORA] - photo[BASE]
        change = bootstrap_interval(lambda w: float(w @ d / w.sum()), len(d), seed=seed).as_dict()
        fc = difference_interval(fid[LORA], fid[BASE], seed)
        fid_change = fc.as_dict() if fc else None
    ev = {"classifier": style.calibration(clf.accuracy, controls), "resolution": r, "n_prompts": len(prompts),
          "seed": seed, "steps": steps, "rows": rows, "base": BASE, "lora": LORA, "photo_share_change": change,
          "fidelity_change": fid_change, "fidelity_attributes": fid[next(iter(sets))].macro_attributes,
          "frechet_features": frechet.FEATURES}
    cell = lambda name, k, scale=100: fmt(rows[name][k], scale) if name in rows else None  # noqa: E731
    ev["headline"] = {   # formatted 'value [lo, hi]' under fixed keys, for the report
        "photo_share_base": cell(BASE, "photo_share"), "photo_share_lora": cell(LORA, "photo_share"),
        "photo_share_change": fmt(change), "fidelity_base": cell(BASE, "fidelity"),
        "fidelity_lora": cell(LORA, "fidelity"), "fidelity_change": fmt(fid_change),
        "fidelity_cartoon_ceiling": cell("real cartoon renders", "fidelity"),
        "fidelity_photo_ceiling": cell("real photo renders", "fidelity"),
        "frechet_base": cell(BASE, "frechet", 1), "frechet_lora": cell(LORA, "frechet", 1),
        "frechet_floor": cell("real photo renders", "frechet", 1)}
    results.save(profile, "08_eval", ev)
    cal = ev["classifier"]
    table = [{"images": name, "true style": v["style"], "photo style % [95 % CI]": fmt(v["photo_share"]),
              "fidelity % [95 % CI]": fmt(v["fidelity"]),
              "Fréchet to real photos [95 % CI]": fmt(v["frechet"], 1)} for name, v in rows.items()]
    note = (f"Profile {profile}: {len(prompts)} held-out prompts (the shared set: images no model trained on), "
            f"{r} px, {steps} Euler steps, CFG {exp.sample.guidance:g}, the same noise for every generated row. "
            f"Style classifier: balanced held-out accuracy {100 * clf.accuracy:.1f} %; controls must be read as "
            f"their true style in >= {100 * style.MIN_CONTROL_SHARE:.0f} % of images "
            f"(blur sigma {style.CONTROL_BLUR:g} px): "
            + ("calibrated." if cal["calibrated"] else "NOT calibrated (" + "; ".join(cal["failures"]) + ").")
            + f" Fidelity: macro over the oracle's readable attributes; Fréchet in {frechet.FEATURES} "
              "(for the real photos: the floor, a disjoint real set).")
    results.save_table(profile, "08_style", table, note=note)
    return ev, oracle, clf


def style_summary(ev: dict) -> dict:
    """The named numbers of the style evaluation (percentages, point estimates) that the report reads."""
    rows = ev["rows"]
    pct = lambda name, k: None if not rows.get(name) or rows[name][k] is None else 100 * rows[name][k]["value"]  # noqa: E731
    return {"photo_share_base": pct(BASE, "photo_share"), "photo_share_lora": pct(LORA, "photo_share"),
            "fidelity_base": pct(BASE, "fidelity"), "fidelity_lora": pct(LORA, "fidelity"),
            "fidelity_cartoon_ceiling": pct("real cartoon renders", "fidelity"),
            "fidelity_photo_ceiling": pct("real photo renders", "fidelity"),
            "style_accuracy": 100 * ev["classifier"]["accuracy"], "style_calibrated": ev["classifier"]["calibrated"]}


# ----------------------------------------------------------------------------- figures


def columns_grid(columns: dict[str, torch.Tensor], row_titles: Sequence[str] | None = None, scale: float = 1.2):
    """Matplotlib figure: one column per entry of ``columns`` (uint8 (N, 3, H, W) each), one row per image
    (``mmlib.images.columns_grid``: headers and row titles wrapped, nothing overlaps)."""
    return images.columns_grid(columns, row_titles, scale=scale)
