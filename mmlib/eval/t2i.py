"""Ground-truth evaluation of text-to-image models on the embedded world (used by notebooks 06–09).

The world knows the scene behind every caption and which attributes each caption states
(``scenes.jsonl``), so a generated image can be checked against the caption that produced it:

- **attribute oracle** (``mmlib.eval.oracle``) — a small CNN trained on real world renders *at the
  resolution being judged*; its held-out accuracy on real validation renders is reported next to
  every number it produces.
- **prompt fidelity** — over held-out (validation) captions: the share of the attributes a caption
  states that the oracle finds in the image generated from it, per attribute and overall (micro
  average over all stated attributes). The same number for the real held-out renders is the
  ceiling; for the mean training image (one constant image for every prompt) the trivial baseline.
- **Fréchet distance** (as FID, Heusel et al. 2017, https://arxiv.org/abs/1706.08500, eq. 6)
  in the oracle's pooled feature space between generated and real held-out images:
  ``|mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})``.
- **sampling cost** — seconds per image and images per second at a stated batch size and step count.

Typical use in a T2I notebook (API kept small on purpose)::

    from mmlib.eval import t2i
    oracle = t2i.oracle(profile, resolution=32)        # trained once per (profile, resolution), cached
    prompts = t2i.heldout_prompts(profile)             # val captions + what each states
    images, cost = t2i.time_sampling(lambda: my_sampler(prompts.captions), batch_size=32, steps=25)
    row = t2i.evaluate(profile, "06", "pixel diffusion", oracle, images, prompts, cost)
    # -> saves results 't2i_row_06' and rebuilds the shared table 't2i_table' (rows 06–09)

Images everywhere are uint8 tensors (N, 3, H, W), as ``mmlib.data.images`` returns them; other sizes
are resized to the oracle's resolution. This module never imports a model of the study.
The ``paper`` profile (real Flickr8k) has no scene records, so there is no oracle there:
``available(profile)`` is False, ``heldout_prompts`` gives captions with nothing stated, and
``evaluate(..., model=None, ...)`` saves a row with the sampling cost only.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from scipy import linalg
from scipy.stats import binomtest

from .. import data as mdata
from .. import profiles, results

# the oracle's API, re-exported: notebooks score with ``t2i.oracle`` / ``t2i.prompt_fidelity`` side by side
from .oracle import (  # noqa: F401
    AttributeOracle,
    OracleConfig,
    attributes,
    augment,
    encode_labels,
    features,
    fit_oracle,
    heldout_accuracy,
    oracle,
    predict,
    read_scenes,
)

ROW_NOTEBOOKS = ("06", "07", "08", "09")
TABLE_KEY = "t2i_table"
# attributes shown as their own columns in the shared table (all of them are in each saved row)
TABLE_ATTRS = ("background", "subject", "clothing_colour", "dog_colour", "count")


@dataclass
class Prompts:
    """Held-out captions to generate from, with the attributes each states (val split)."""
    images: list[str]            # the real val image each caption describes
    captions: list[str]
    stated: list[dict]           # attribute -> value stated by the caption
    folder: Path

    def __len__(self) -> int:
        return len(self.captions)

    def real_images(self, resolution: int) -> torch.Tensor:
        """The real renders the captions describe, uint8 (N, 3, r, r) (the fidelity ceiling)."""
        return mdata.images(self.folder, self.images, resolution)


def available(profile: str) -> bool:
    """Whether the profile's data has scene records (world8k), i.e. whether an oracle can judge it."""
    return (mdata.folder_for(profile) / "scenes.jsonl").exists()


def heldout_prompts(profile: str, n: int | None = None) -> Prompts:
    """``n`` val captions (default: profile ``t2i_eval.n_prompts``), spread evenly over the val images,
    cycling through the five annotators so terse and detailed captions both appear. On data without
    scene records (real Flickr8k) ``stated`` is empty dicts: captions for sampling, nothing to judge."""
    split = mdata.load(profile)
    scenes = read_scenes(split.folder) if available(profile) else None
    n = n or profiles.get(profile).t2i_eval.n_prompts
    n = min(n, len(split.val))
    pick = np.linspace(0, len(split.val) - 1, n).round().astype(int)
    images, captions, stated = [], [], []
    for j, i in enumerate(pick):
        name, refs = split.val[i]
        cap = scenes[name]["captions"][j % 5] if scenes else {"caption": refs[j % len(refs)], "stated": {}}
        images.append(name), captions.append(cap["caption"]), stated.append(cap["stated"])
    return Prompts(images, captions, stated, split.folder)


# ----------------------------------------------------------------------------- metrics


@dataclass
class Fidelity:
    overall: float                          # share of all stated attributes found (micro average)
    per_attribute: dict[str, float]         # attribute -> share found among captions stating it
    counts: dict[str, int]                  # attribute -> number of captions stating it
    n_images: int


def prompt_fidelity(model: AttributeOracle, images: torch.Tensor, stated: Sequence[dict]) -> Fidelity:
    """Share of the attributes stated by ``stated[i]`` that the oracle finds in ``images[i]``."""
    if len(images) != len(stated):
        raise ValueError(f"{len(images)} images but {len(stated)} stated-attribute dicts")
    pred = predict(model, images)                                                  # (N, A)
    want = torch.stack([encode_labels(s, model.names) for s in stated])            # (N, A), -100 unstated
    has = want >= 0
    hit = (pred == want) & has
    per = {a: float(hit[:, i].sum() / has[:, i].sum()) for i, a in enumerate(model.names) if has[:, i].any()}
    counts = {a: int(has[:, i].sum()) for i, a in enumerate(model.names) if has[:, i].any()}
    return Fidelity(float(hit.sum() / has.sum().clamp_min(1)), per, counts, len(images))


def frechet_distance(model: AttributeOracle, images_a: torch.Tensor, images_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to the oracle features of two image sets."""
    return frechet_from_features(features(model, images_a), features(model, images_b))


def frechet_from_features(fa: torch.Tensor, fb: torch.Tensor) -> float:
    a, b = fa.double().numpy(), fb.double().numpy()
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    if not np.isfinite(covmean).all():                     # near-singular: regularise as in the FID code
        eps = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = covmean.real
    return float(max(0.0, ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)))


def mean_image(profile: str, resolution: int) -> torch.Tensor:
    """The trivial generator's output: the mean training render, uint8 (3, r, r)."""
    split = mdata.load(profile)
    x = mdata.images(split.folder, [n for n, _ in split.train], resolution)
    return x.float().mean(0).round().to(torch.uint8)


@dataclass
class ColourWords:
    """Claim 2.3's test: does the colour word in "a girl in a <colour> dress" steer the samples?"""
    clothing_colour: float              # share of samples whose dress the oracle reads as the prompted colour
    chance: float                       # 1 / number of colours
    p_value: float                      # one-sided binomial test of the hits against chance
    n: int                              # samples scored
    samples_per_colour: int
    per_attribute: dict[str, float]
    mean_rgb: dict[str, list[float]]    # mean colour of each prompt's samples (a check by eye)

    def as_dict(self) -> dict:
        return asdict(self)


def colour_words(model: AttributeOracle | None, images: torch.Tensor, colours: Sequence[str]) -> ColourWords:
    """Score ``images`` generated colour-major from "a girl in a <colour> dress" (the same number per colour).

    ``model`` None (no oracle: real Flickr8k) gives NaN for every oracle number."""
    k, chance = len(images) // len(colours), 1 / len(colours)
    mean_rgb = images.float().mean((2, 3)).reshape(len(colours), k, 3).mean(1)        # (colours, 3)
    rgb = {c: v.tolist() for c, v in zip(colours, mean_rgb)}
    if model is None:
        return ColourWords(float("nan"), chance, float("nan"), len(images), k, {"clothing_colour": float("nan")}, rgb)
    stated = [dict(subject="girl", clothing_colour=c, garment="dress") for c in colours for _ in range(k)]
    fid = prompt_fidelity(model, images, stated)
    hits = round(fid.per_attribute["clothing_colour"] * len(images))
    p = binomtest(hits, len(images), chance, alternative="greater").pvalue
    return ColourWords(fid.per_attribute["clothing_colour"], chance, p, len(images), k, fid.per_attribute, rgb)


@dataclass
class SamplingCost:
    seconds: float
    n_images: int
    batch_size: int
    steps: int                  # network evaluations per image (one CFG step counts once)
    device: str

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / max(1, self.n_images)

    @property
    def images_per_second(self) -> float:
        return self.n_images / max(self.seconds, 1e-9)

    def as_dict(self) -> dict:
        return {**asdict(self), "seconds_per_image": self.seconds_per_image,
                "images_per_second": self.images_per_second}


def time_sampling(sample: Callable[[], torch.Tensor], batch_size: int, steps: int,
                  device: str | None = None) -> tuple[torch.Tensor, SamplingCost]:
    """Run ``sample()`` (returning uint8 images (N, 3, H, W)) once, timing it."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    images = sample()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return images, SamplingCost(seconds, len(images), batch_size, steps, dev)


# ----------------------------------------------------------------------------- the shared table


def references(profile: str, model: AttributeOracle, prompts: Prompts) -> dict:
    """Ceiling (real held-out renders) and trivial baseline (mean training image) for ``prompts``,
    plus the Fréchet distance of an equal number of real *training* renders (finite-sample floor)."""
    r = model.resolution
    real = prompts.real_images(r)
    split = mdata.load(profile)
    pick = np.linspace(0, len(split.train) - 1, len(prompts)).round().astype(int)
    other = mdata.images(split.folder, [split.train[i][0] for i in pick], r)
    trivial = mean_image(profile, r).expand(len(prompts), -1, -1, -1).contiguous()
    ceil, base = prompt_fidelity(model, real, prompts.stated), prompt_fidelity(model, trivial, prompts.stated)
    feats = features(model, real)
    return {"ceiling": asdict(ceil), "baseline": asdict(base),
            "frechet_real_floor": frechet_from_features(features(model, other), feats),
            "frechet_baseline": frechet_from_features(features(model, trivial), feats)}


def evaluate(profile: str, notebook: str, model_name: str, model: AttributeOracle | None, images: torch.Tensor,
             prompts: Prompts, cost: SamplingCost | None = None, **extra) -> dict:
    """Score generated ``images`` (one per prompt) and save the shared-table row ``t2i_row_<notebook>``.

    The row holds: prompt fidelity overall and per attribute, the real-image ceiling and the
    mean-image baseline at the same resolution, the oracle's held-out accuracy, the Fréchet distance
    to the real held-out renders (and the real-vs-real floor), the sampling cost, and ``extra``
    (e.g. ``sampler="DDIM"``, ``guidance=4``). Rebuilds ``t2i_table`` and returns the row.
    ``model=None`` (no oracle: real Flickr8k in ``paper``) saves a row with the sampling cost only.
    """
    if model is None:   # no scene records (paper): only what needs no ground truth
        row = {"notebook": notebook, "model": model_name, "profile": profile, "resolution": images.shape[-1],
               "n_prompts": len(prompts), "fidelity": None, "per_attribute": {}, "ceiling": None, "baseline": None,
               "frechet": None, "frechet_real_floor": None, "cost": cost.as_dict() if cost else None, **extra}
        results.save(profile, f"t2i_row_{notebook}", row)
        table(profile)
        return row
    fid = prompt_fidelity(model, images, prompts.stated)
    ref = references(profile, model, prompts)
    row = {"notebook": notebook, "model": model_name, "profile": profile, "resolution": model.resolution,
           "n_prompts": len(prompts), "fidelity": fid.overall, "per_attribute": fid.per_attribute,
           "counts": fid.counts, "ceiling": ref["ceiling"]["overall"], "ceiling_per_attribute":
           ref["ceiling"]["per_attribute"], "baseline": ref["baseline"]["overall"],
           "baseline_per_attribute": ref["baseline"]["per_attribute"],
           "oracle_accuracy": float(np.mean(list(model.accuracy.values()))) if model.accuracy else None,
           "frechet": frechet_distance(model, images, prompts.real_images(model.resolution)),
           "frechet_real_floor": ref["frechet_real_floor"], "frechet_baseline": ref["frechet_baseline"],
           "cost": cost.as_dict() if cost else None, **extra}
    results.save(profile, f"t2i_row_{notebook}", row)
    table(profile)
    return row


def table(profile: str) -> list[dict]:
    """Assemble the saved rows of notebooks 06–09 into the report table ``t2i_table`` (percentages)."""
    rows = []
    for nb in ROW_NOTEBOOKS:
        r = results.load(profile, f"t2i_row_{nb}", default=None)
        if r is None:
            continue
        pct = lambda v: None if v is None else 100 * v   # noqa: E731
        cost = r.get("cost") or {}
        row = {"NB": nb, "model": r["model"], "px": r["resolution"],
               "fidelity %": pct(r["fidelity"]), "real ceiling %": pct(r["ceiling"]),
               "mean-image baseline %": pct(r["baseline"])}
        row.update({f"{a} %": pct((r.get("per_attribute") or {}).get(a)) for a in TABLE_ATTRS})
        row.update({"Fréchet (oracle)": r["frechet"], "Fréchet real floor": r["frechet_real_floor"],
                    "s/image": cost.get("seconds_per_image"), "sampler steps": cost.get("steps"),
                    "batch": cost.get("batch_size"), "device": cost.get("device")})
        rows.append(row)
    if rows:
        formats = {c: ".1f" for c in rows[0] if c.endswith("%")}
        formats.update({"Fréchet (oracle)": ".2f", "Fréchet real floor": ".2f", "s/image": ".3f"})
        results.save_table(profile, TABLE_KEY, rows, formats=formats, note=(
            f"Profile {profile}: world8k, held-out val captions. Fidelity = share of the attributes a caption "
            "states that the attribute oracle finds in the generated image; ceiling = the same for the real "
            "render; baseline = the mean training image. Attribute columns are the model's fidelity."))
    return rows
