"""Ground-truth evaluation of text-to-image models on the embedded world (used by notebooks 06–09).

The world knows the scene behind every caption and which attributes each caption states
(``scenes.jsonl``), so a generated image can be checked against the caption that produced it. The
pieces, one module each:

- **attribute oracle** (``mmlib.eval.oracle``) — a small CNN trained on real world renders *at the
  resolution being judged*, calibrated on held-out real renders: per attribute its accuracy beside
  the majority-class prior; an attribute is *readable* only if the accuracy beats the prior by
  ``oracle.READABLE_MARGIN`` (fixed in code before any model was scored).
- **two prompt sets, the same for 06–09** (``mmlib.eval.t2i_prompts.prompt_sets``): *held-out*
  captions of images that no generator trained on, and *compositional* prompts whose (subject,
  clothing colour, background, object) never occurs together in any training caption, reported separately.
- **prompt fidelity** (``mmlib.eval.t2i_fidelity``) — the macro average over readable attributes of
  the share of prompts whose image the oracle reads as stated, beside three reference rows on the same
  prompts: the **ceiling**, the **prior baseline** and the **mean image**; claim 2.3's colour-word test.
- **Fréchet distance** in an independent ImageNet feature space (``mmlib.eval.frechet``), with the
  real-vs-real floor and the sample count.
- **sampling cost** (here) — seconds per image, sampler steps and network passes per image
  (classifier-free guidance counts twice), batch size and device.
- **the shared tables** (``mmlib.eval.t2i_tables``), rebuilt from every saved row.

Every number carries a 95 % bootstrap interval over prompts (``mmlib.eval.bootstrap``); all rows of
one prompt set are resampled alike (same seed), so they are paired.

Typical use in a T2I notebook (API kept small on purpose)::

    from mmlib.eval import oracle as orc, t2i, t2i_prompts
    oracle = orc.oracle(profile, resolution=32)        # trained once per (profile, resolution), cached
    sets = t2i_prompts.prompt_sets(profile)            # {"heldout": Prompts, "compositional": Prompts}
    samples, cost = t2i.sample_sets(lambda p: my_sampler(p.captions, seed=p.seed), sets,
                                    batch_size=32, steps=25, guidance=4.0)
    row = t2i.evaluate(profile, "06", "pixel diffusion", oracle, samples, sets, cost)
    # -> saves result 't2i_eval_06' and rebuilds the shared tables (rows 06–09); keeps the first 8
    #    held-out samples in runs/<profile>/06/heldout_samples.safetensors
    fig = t2i.generators_figure(profile)               # 09: real render, 06, 07, 08, 09 side by side

Images everywhere are uint8 tensors (N, 3, H, W), as ``mmlib.data.images`` returns them; other sizes
are resized to the oracle's resolution. This module never imports a model of the study.
The ``paper`` profile (real Flickr8k) has no scene records, so there is no oracle there:
``t2i_prompts.available(profile)`` is False, the held-out captions state nothing, there is no
compositional set, and ``evaluate(..., model=None, ...)`` saves the Fréchet distance and the cost only.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .. import ckpt, results
from ..images import columns_grid
from ..paths import run_dir
from . import frechet
from .oracle import READABLE_MARGIN, AttributeOracle, result_key
from .t2i_fidelity import fidelity_record, prompt_fidelity, references
from .t2i_prompts import Prompts, available, mean_image
from .t2i_tables import fmt, headline, row_key, tables

# ----------------------------------------------------------------------------- sampling cost


def network_evals(steps: int, guidance: float | None) -> int:
    """Denoiser (or transformer) passes per image: one per step, two with classifier-free guidance
    (conditional and unconditional, whether or not they share a batch)."""
    return steps * (2 if guidance not in (None, 0, 1) else 1)


@dataclass
class SamplingCost:
    seconds: float
    n_images: int
    batch_size: int
    steps: int                  # sampler steps (diffusion) or scales (next-scale) per image
    device: str
    guidance: float | None = None

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / max(1, self.n_images)

    @property
    def images_per_second(self) -> float:
        return self.n_images / max(self.seconds, 1e-9)

    @property
    def network_evals(self) -> int:
        return network_evals(self.steps, self.guidance)

    def as_dict(self) -> dict:
        return {**asdict(self), "seconds_per_image": self.seconds_per_image,
                "images_per_second": self.images_per_second, "network_evals": self.network_evals}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_sampling(sample: Callable[[], torch.Tensor], batch_size: int, steps: int, guidance: float | None = None,
                  device: str | None = None) -> tuple[torch.Tensor, SamplingCost]:
    """Run ``sample()`` (returning uint8 images (N, 3, H, W)) once, timing it."""
    _sync()
    t0 = time.perf_counter()
    images = sample()
    _sync()
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return images, SamplingCost(time.perf_counter() - t0, len(images), batch_size, steps, dev, guidance)


def sample_sets(sample: Callable[[Prompts], torch.Tensor], sets: dict[str, Prompts], batch_size: int, steps: int,
                guidance: float | None = None) -> tuple[dict[str, torch.Tensor], SamplingCost]:
    """``sample(prompts)`` for every prompt set (one image per prompt, noise from ``prompts.seed``),
    timed together: (images per set, cost over all of them)."""
    out, seconds, n = {}, 0.0, 0
    for name, prompts in sets.items():
        out[name], c = time_sampling(lambda: sample(prompts), batch_size, steps, guidance)
        seconds, n = seconds + c.seconds, n + c.n_images
    return out, SamplingCost(seconds, n, batch_size, steps, c.device, guidance)


# ----------------------------------------------------------------------------- scoring a row


def real_features(profile: str, prompts: Prompts, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (``mmlib.eval.frechet``) of the prompts' real set and of the disjoint floor set, cached
    under ``runs/<profile>/t2i_eval/`` (every notebook of a profile compares with the same ones)."""
    cache = run_dir(profile, "t2i_eval")
    key = {**prompts.reference_key(), "resolution": resolution}
    real = frechet.cached_features(cache, {**key, "which": "real"}, lambda: prompts.real_images(resolution))
    floor = frechet.cached_features(cache, {**key, "which": "floor"}, lambda: prompts.floor_images(resolution))
    return real, floor


def frechet_rows(profile: str, images: torch.Tensor, prompts: Prompts) -> dict:
    """Fréchet distances to the prompts' real set at the generated resolution: the model, the real
    floor (a disjoint real set of the same size) and the mean image, each with its interval and n."""
    r = images.shape[-1]
    real, floor = real_features(profile, prompts, r)
    mean = frechet.features(mean_image(profile, r)[None]).expand(len(prompts), -1) if available(profile) else None
    out = {"model": frechet.paired_interval(frechet.features(images), real, seed=prompts.seed).as_dict(),
           "real_floor": frechet.paired_interval(floor, real, seed=prompts.seed).as_dict(),
           "mean_image": frechet.paired_interval(mean, real, seed=prompts.seed).as_dict() if mean is not None else None,
           "n": len(prompts), "resolution": r, "features": frechet.FEATURES}
    return out


def score_set(profile: str, model: AttributeOracle | None, images: torch.Tensor, prompts: Prompts) -> dict:
    """One prompt set's part of a row: fidelity of the model and the three references (intervals),
    the paired model − prior difference, and the Fréchet distances."""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images for {len(prompts)} prompts of set {prompts.name!r}")
    out = {"n_prompts": len(prompts), "seed": prompts.seed, "fidelity": None, "model_minus_prior": None,
           "attributes": [], "counts": {}, "frechet": frechet_rows(profile, images, prompts)}
    if model is not None:
        fid = prompt_fidelity(model, images, prompts.stated)
        out.update(fidelity_record(fid, references(profile, model, prompts), prompts.seed))
    return out


def evaluate(profile: str, notebook: str, model_name: str, model: AttributeOracle | None,
             samples: dict[str, torch.Tensor], sets: dict[str, Prompts], cost: SamplingCost | None = None,
             **extra) -> dict:
    """Score generated ``samples`` (one image per prompt of each set of ``sets``) and save the row
    ``t2i_eval_<notebook>``; rebuild the shared tables (``t2i_tables.tables``) and return the row.

    Layout: ``{"notebook", "model", "profile", "resolution" (the oracle's), "generated_px", "cost",
    "oracle": {"key", "readable", "margin"}, "sets": {name: score_set(...)}, **extra}`` where a set holds
    ``fidelity.{model,ceiling,prior,mean_image}.{macro,per_attribute.<a>}`` as interval dicts
    (``value, lo, hi, n, n_boot``), ``model_minus_prior``, ``attributes`` (the macro average's),
    ``counts`` and ``frechet.{model,real_floor,mean_image}`` (intervals) with ``n``; ``headline.<set>``
    holds the same numbers formatted (``t2i_tables.headline``) for the report.
    ``model=None`` (no oracle: real Flickr8k in ``paper``) saves the Fréchet distances and the cost."""
    row = {"notebook": notebook, "model": model_name, "profile": profile,
           "resolution": model.resolution if model is not None else None,
           "generated_px": next(iter(samples.values())).shape[-1], "cost": cost.as_dict() if cost else None,
           "oracle": None if model is None else {"key": result_key(model.resolution), "readable": model.readable,
                                                 "margin": READABLE_MARGIN, "accuracy": model.accuracy,
                                                 "prior": model.prior},
           "sets": {name: score_set(profile, model, samples[name], sets[name]) for name in sets}, **extra}
    row["headline"] = {name: headline(rec) for name, rec in row["sets"].items()}
    results.save(profile, row_key(notebook), row)
    tables(profile)
    if "heldout" in samples and "heldout" in sets:
        save_heldout_samples(profile, notebook, model_name, samples["heldout"], sets["heldout"])
    return row


def summary_scores(profile: str, model: AttributeOracle | None, images: torch.Tensor, prompts: Prompts) -> dict:
    """Macro fidelity and Fréchet distance of one image set (an ablation's row): intervals, formatted."""
    iv = prompt_fidelity(model, images, prompts.stated).interval(prompts.seed) if model is not None else None
    fd = frechet.paired_interval(frechet.features(images), real_features(profile, prompts, images.shape[-1])[0],
                                 seed=prompts.seed)
    return {"fidelity % [95 % CI]": iv.fmt(1, 100) if iv else None, "Fréchet [95 % CI]": fd.fmt(1),
            "fidelity": iv.as_dict() if iv else None, "frechet": fd.as_dict()}


def summary_lines(row: dict) -> list[str]:
    """A saved row in words, one line per prompt set (what a notebook prints under its scoring cell)."""
    lines = []
    for name, s in row["sets"].items():
        f = s["frechet"]
        fd = (f"Fréchet {fmt(f['model'], 1)} (real floor {fmt(f['real_floor'], 1)}, "
              f"mean image {fmt(f['mean_image'], 1)}, n = {f['n']})")
        if s["fidelity"] is None:
            lines.append(f"{name}: {fd}")
            continue
        fid = s["fidelity"]
        lines.append(f"{name}: fidelity {fmt(fid['model']['macro'])} % over {len(s['attributes'])} readable attributes "
                     f"(ceiling {fmt(fid['ceiling']['macro'])}, prior baseline {fmt(fid['prior']['macro'])}, "
                     f"mean image {fmt(fid['mean_image']['macro'])}; "
                     f"model − prior {fmt(s['model_minus_prior'])} points); " + fd)
    return lines


# ----------------------------------------------------------------------------- the generators side by side

GENERATORS = {"06": "06 pixel diffusion", "07": "07 latent diffusion", "08": "08 SDXL LoRA", "09": "09 Infinity"}
N_SHOWN = 8                 # held-out prompts kept per generator for the side-by-side figure
MAX_SHOWN_PX = 256          # larger samples (SDXL in ``paper``) are kept downscaled to this side
SAMPLES_FILE = "heldout_samples.safetensors"


def samples_path(profile: str, notebook: str) -> Path:
    """``runs/<profile>/<notebook>/heldout_samples.safetensors``: the notebook's first held-out samples."""
    return run_dir(profile, notebook) / SAMPLES_FILE


def _shrink(x: torch.Tensor) -> torch.Tensor:
    if x.shape[-1] <= MAX_SHOWN_PX:
        return x.to(torch.uint8)
    return F.interpolate(x.float(), size=(MAX_SHOWN_PX, MAX_SHOWN_PX), mode="area").round().clamp(0, 255).to(torch.uint8)


def save_heldout_samples(profile: str, notebook: str, model_name: str, samples: torch.Tensor, prompts: Prompts,
                         n: int = N_SHOWN) -> Path:
    """Keep the first ``n`` held-out samples (uint8) with their prompts and real renders (safetensors,
    written atomically; called by ``evaluate``), for ``generators_figure`` of a later notebook."""
    k = min(n, len(samples), len(prompts))
    sub = prompts.subset(k)
    meta = {"notebook": notebook, "model": model_name, "set": prompts.name, "seed": prompts.seed,
            "captions": sub.captions, "generated_px": samples.shape[-1]}
    return ckpt.save_weights(samples_path(profile, notebook),
                             {"images": _shrink(samples[:k]), "real": _shrink(sub.real_images(samples.shape[-1]))},
                             meta)


def load_heldout_samples(profile: str, notebook: str) -> dict | None:
    """What ``save_heldout_samples`` kept for ``notebook``: ``{"images", "real", "captions", "model", ...}``,
    or None when that notebook has not been scored in ``profile``."""
    path = samples_path(profile, notebook)
    if not path.exists():
        return None
    return {**ckpt.read_config(path), **ckpt.load_weights(path)}


def generators_figure(profile: str, generators: dict[str, str] | None = None, n: int = N_SHOWN,
                      missing: str = "not run"):
    """The generators side by side on the same held-out prompts: one row per prompt (the caption wrapped
    at the left), columns the real render, then every notebook of ``generators`` (default
    ``GENERATORS``: 06–09) from its saved samples. A notebook without saved samples gets an empty column
    marked ``missing``; one whose samples were drawn for other prompts (an older prompt set) is marked so."""
    generators = generators or GENERATORS
    saved = {nb: load_heldout_samples(profile, nb) for nb in generators}
    present = [s for s in saved.values() if s is not None]
    if not present:
        raise FileNotFoundError(f"no held-out samples saved in profile {profile!r} by any of {sorted(generators)}: "
                                "run a text-to-image notebook first")
    ref = max(present, key=lambda s: s["real"].shape[-1])       # the real renders at the largest resolution
    captions = list(ref["captions"][:n])
    columns: dict[str, torch.Tensor | str | None] = {"real render": ref["real"][:n]}
    for nb, label in generators.items():
        s = saved[nb]
        if s is None:
            columns[label] = None
        elif list(s["captions"][:n]) != captions:
            columns[label] = "other prompts"
        else:
            columns[label] = s["images"][:n]
    return columns_grid(columns, captions, missing=missing)
