"""Style classifier: which share of a set of images is in the *photo* style (vs the world's cartoon style).

The study judged by eye that LoRA moved SDXL from "comic-like" to Flickr8k's photographic look
(report section 2.1, Figure 5). Here that claim is measured: a small CNN is trained on real world8k
renders of the *same scenes* in both styles (``world.render(scene, "cartoon" | "photo")``), so only
style (palette, flat fills and outlines vs shading, texture and light) separates the classes, never
content. Training uses the attribute oracle's blur / noise / shift / flip augmentation
(``oracle.augment``) so that slightly-off generated samples are judged by style, not by sharpness.
Held-out accuracy on the val split's renders is reported with every share.

**Calibration by controls.** Held-out accuracy on clean renders does not show that the classifier
judges *style* on generated images: a generator's first stage smooths and re-colours, and a
classifier that keyed on sharpness or on the autoencoder's artefacts would call every decoded
cartoon a photo. So real images with a known style are passed through those same changes, and
must still be read as their style: real cartoons (and photos) through the generator's VAE round
trip, and real cartoons blurred by ``CONTROL_BLUR`` pixels. ``calibration`` checks held-out
accuracy >= ``MIN_ACCURACY`` and every control read as its style in >= ``MIN_CONTROL_SHARE`` of its
images (both fixed before any generator was judged); a claim judged with an uncalibrated
classifier is "not testable here" (``mmlib.claims``), never a failed run.

**The judged generator's first stage in training.** Blur augmentation alone did not make the classifier
blind to a VAE's artefacts (cpu, 7d19fcb: real cartoons through 08's VAE read as cartoon in 85 % < 90 %).
So ``classifier(..., first_stage=(key, fn))`` also trains on the *train* split's renders of **both**
styles passed through that generator's first stage (``fn``: uint8 -> uint8 round trip), labels
unchanged: its artefacts then occur in both classes and cannot signal a style. The controls stay on
the held-out val renders, which training never saw in any form; thresholds unchanged.

Images are uint8 (N, 3, H, W); other sizes are resized to the classifier's resolution.
This module never imports a model of the study.
"""
from __future__ import annotations

import dataclasses
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import data as mdata
from .. import profiles, train
from ..data import world
from ..paths import run_dir
from .oracle import OracleConfig, augment, to_input

STYLES = ("cartoon", "photo")   # class index 0, 1
MIN_ACCURACY = 0.90             # balanced held-out accuracy on real renders of both styles
MIN_CONTROL_SHARE = 0.90        # share of a control set that must be read as its true style
CONTROL_BLUR = 1.0              # Gaussian sigma (pixels at the judged resolution) of the blurred control


# the style classifier is the attribute oracle's small CNN with one 2-way head: the same sizes, training
# run and blur / noise / shift augmentation
StyleConfig = OracleConfig


class StyleClassifier(nn.Module):
    """Conv stages (GroupNorm) -> mean+max pooled feature -> 2 logits (cartoon, photo)."""

    def __init__(self, cfg: StyleConfig):
        super().__init__()
        self.cfg, w = cfg, cfg.width
        chans, layers = [3, w, 2 * w, 4 * w], []
        for i in range(3):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, padding=1), nn.GroupNorm(8, chans[i + 1]), nn.GELU()]
            if i < 2:
                layers.append(nn.AvgPool2d(2))
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(8 * w, len(STYLES))
        self.accuracy: float | None = None    # held-out accuracy on real val renders of both styles

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x * 2 - 1)                                  # x (B, 3, r, r) in [0, 1]
        return self.head(torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1))   # (B, 2)


def fit_classifier(cartoon: torch.Tensor, photo: torch.Tensor, cfg: StyleConfig, out_dir: Path, key: dict,
                   progress: bool = False) -> tuple[StyleClassifier, train.FitResult]:
    """Train on uint8 renders of both styles (N, 3, H, W each) with ``train.fit`` (cached by ``key``)."""
    torch.manual_seed(cfg.seed)     # the init must not depend on what the notebook drew before
    model = StyleClassifier(cfg)
    x = torch.cat([cartoon, photo])
    y = torch.cat([torch.zeros(len(cartoon)), torch.ones(len(photo))]).long()

    def loss_fn(m: StyleClassifier, batch: dict) -> torch.Tensor:
        dev = next(m.parameters()).device
        logits = m(augment(to_input(batch["x"], cfg.resolution), cfg).to(dev))
        return F.cross_entropy(logits.float(), batch["y"].to(dev))

    tcfg = train.TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup=min(20, cfg.steps // 10),
                             seed=cfg.seed, mixed_precision="no", log_every=max(1, cfg.steps // 20))
    fit = train.fit(model, loss_fn, {"x": x, "y": y}, tcfg, out_dir, {"style": asdict(cfg), **key}, progress=progress)
    return model.eval().requires_grad_(False), fit


@torch.no_grad()
def photo_probability(model: StyleClassifier, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """uint8 images (N, 3, H, W) -> P(photo) (N,)."""
    model.eval()
    dev = next(model.parameters()).device
    return torch.cat([model(to_input(images[i:i + batch_size], model.cfg.resolution).to(dev)).softmax(-1)[:, 1].cpu()
                      for i in range(0, len(images), batch_size)])


def style_share(model: StyleClassifier, images: torch.Tensor, style: str = "photo") -> float:
    """Share of ``images`` the classifier puts in ``style``."""
    p = photo_probability(model, images) >= 0.5
    return float((p if style == "photo" else ~p).float().mean())


def heldout_accuracy(model: StyleClassifier, cartoon: torch.Tensor, photo: torch.Tensor) -> float:
    """Balanced accuracy on real renders of both styles."""
    return 0.5 * (style_share(model, cartoon, "cartoon") + style_share(model, photo, "photo"))


def with_first_stage(cartoon: torch.Tensor, photo: torch.Tensor,
                     first_stage: tuple[str, Callable[[torch.Tensor], torch.Tensor]] | None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The training images of each style, followed by the same images through ``first_stage``'s round
    trip (labels unchanged); unchanged when ``first_stage`` is None."""
    if first_stage is None:
        return cartoon, photo
    round_trip = first_stage[1]
    return torch.cat([cartoon, round_trip(cartoon)]), torch.cat([photo, round_trip(photo)])


def classifier(profile: str, resolution: int, progress: bool = False,
               first_stage: tuple[str, Callable[[torch.Tensor], torch.Tensor]] | None = None) -> StyleClassifier:
    """The style classifier of ``profile`` at ``resolution``: trained on the train split's renders in both
    styles (same scenes), cached in ``runs/<profile>/style/``; ``.accuracy`` = balanced val accuracy.
    ``first_stage = (key, round_trip)``: the judged generator's first stage (``key`` names its weights);
    the train renders of both styles through ``round_trip`` join the training set (module docstring)."""
    d = profiles.get(profile).data
    if d.source != "world8k":
        raise ValueError(f"profile {profile!r}: the style classifier needs world8k renders in both styles")
    split = mdata.load(profile)
    folders = {s: world.ensure(n_images=d.n_images, size=d.image_size, seed=d.seed, style=s) for s in STYLES}

    def renders(items):
        names = [n for n, _ in items]
        return [mdata.images(folders[s], names, resolution) for s in STYLES]

    cfg = dataclasses.replace(profiles.get(profile).sd_lora.style, resolution=resolution)
    cartoon, photo = with_first_stage(*renders(split.train), first_stage)
    key = {"data": [str(f) for f in folders.values()], "n": len(split.train)}
    if first_stage is not None:
        key["first_stage"] = first_stage[0]
    model, _ = fit_classifier(cartoon, photo, cfg, run_dir(profile, "style"), key, progress)
    model.accuracy = heldout_accuracy(model, *renders(split.val))
    return model


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """uint8 images (N, 3, H, W) blurred by a separable Gaussian of ``sigma`` pixels (edges replicated)."""
    r = max(1, int(np.ceil(3 * sigma)))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma ** 2))
    k = (k / k.sum()).view(1, 1, 1, -1).repeat(3, 1, 1, 1)                 # (3, 1, 1, 2r+1)
    x = F.pad(images.float(), (r, r, 0, 0), mode="replicate")
    x = F.conv2d(x, k, groups=3)
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.transpose(2, 3), groups=3)
    return x.round().clamp(0, 255).to(torch.uint8)


def photo_indicator(model: StyleClassifier, images: torch.Tensor) -> np.ndarray:
    """(N,) 1.0 where the classifier puts the image in the photo style (P(photo) >= 0.5)."""
    return (photo_probability(model, images) >= 0.5).double().numpy()


def calibration(accuracy: float, controls: dict[str, tuple[str, float]]) -> dict:
    """Whether the classifier may judge generated images: held-out ``accuracy`` and ``controls``
    (name -> (true style, share of its images read as that style)) against the fixed thresholds.
    Returns {"calibrated", "failures" (what failed, in words), "accuracy", "controls", thresholds}."""
    failures = [] if accuracy >= MIN_ACCURACY else [
        f"held-out accuracy {100 * accuracy:.1f} % < {100 * MIN_ACCURACY:.0f} %"]
    failures += [f"{name}: read as {true} in {100 * share:.0f} % < {100 * MIN_CONTROL_SHARE:.0f} %"
                 for name, (true, share) in controls.items() if share < MIN_CONTROL_SHARE]
    return {"calibrated": not failures, "failures": failures, "accuracy": accuracy,
            "controls": {name: {"style": true, "share_read_as_style": share}
                         for name, (true, share) in controls.items()},
            "min_accuracy": MIN_ACCURACY, "min_control_share": MIN_CONTROL_SHARE, "control_blur": CONTROL_BLUR}
