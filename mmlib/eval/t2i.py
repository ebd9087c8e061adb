"""Ground-truth evaluation of text-to-image models on the embedded world (used by notebooks 06–09).

The world knows the scene behind every caption and which attributes each caption states
(``scenes.jsonl``), so a generated image can be checked against the caption that produced it:

- **attribute oracle** — a small CNN trained on real world renders *at the resolution being judged*,
  with blur / noise / shift augmentation so that slightly-off samples are not misjudged; one
  classification head per canonical attribute (``world.ATTRIBUTES``). Its held-out accuracy on real
  validation renders is reported next to every number it produces.
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

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import data as mdata
from .. import profiles, results, train
from ..paths import run_dir

ROW_NOTEBOOKS = ("06", "07", "08", "09")
TABLE_KEY = "t2i_table"
# attributes shown as their own columns in the shared table (all of them are in each saved row)
TABLE_ATTRS = ("background", "subject", "clothing_colour", "dog_colour", "count")


def attributes() -> dict[str, list]:
    from ..data import world
    return world.ATTRIBUTES


# ----------------------------------------------------------------------------- scene labels


def read_scenes(folder: Path) -> dict[str, dict]:
    """``scenes.jsonl`` of a world folder: image name -> record (``attributes``, ``captions`` with ``stated``)."""
    path = Path(folder) / "scenes.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: prompt fidelity needs the world's scene records "
                                f"(smoke/cpu profiles); real Flickr8k has no ground-truth scenes")
    with open(path) as f:
        return {r["image"]: r for r in map(json.loads, f)}


def encode_labels(attrs: dict, names: Sequence[str] | None = None) -> torch.Tensor:
    """Attribute dict -> (A,) value indices in ``world.ATTRIBUTES`` order; -100 where not applicable."""
    table = attributes()
    names = list(names or table)
    out = torch.full((len(names),), -100, dtype=torch.long)
    for i, a in enumerate(names):
        if a in attrs:
            out[i] = table[a].index(attrs[a])
    return out


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


# ----------------------------------------------------------------------------- oracle


@dataclass
class OracleConfig:
    resolution: int = 32
    width: int = 16               # channels of the first stage; doubled at each of 3 stages
    steps: int = 400
    batch_size: int = 128
    lr: float = 3e-3
    blur: float = 1.2             # max Gaussian blur sigma (pixels at this resolution)
    noise: float = 0.08           # max additive Gaussian noise sigma (images in [0, 1])
    shift: int = 2                # max random translation, pixels
    seed: int = 0


class AttributeOracle(nn.Module):
    """Conv stages (GroupNorm, so all state is in the weights) -> pooled feature -> one head per attribute."""

    def __init__(self, cfg: OracleConfig, heads: dict[str, int]):
        super().__init__()
        self.cfg, self.names = cfg, list(heads)
        w = cfg.width
        chans = [3, w, 2 * w, 4 * w]
        layers: list[nn.Module] = []
        for i in range(3):
            c_in, c = chans[i], chans[i + 1]
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.GroupNorm(8, c), nn.GELU(),
                       nn.Conv2d(c, c, 3, padding=1), nn.GroupNorm(8, c), nn.GELU()]
            if i < 2:
                layers.append(nn.AvgPool2d(2))
        self.body = nn.Sequential(*layers)
        self.feature_dim = 8 * w   # mean- and max-pooled
        self.heads = nn.ModuleDict({a: nn.Linear(self.feature_dim, k) for a, k in heads.items()})
        self.accuracy: dict[str, float] = {}   # held-out accuracy on real val renders, filled by oracle()

    @property
    def resolution(self) -> int:
        return self.cfg.resolution

    def features(self, x: torch.Tensor) -> torch.Tensor:
        # x (B, 3, r, r) float in [0, 1] -> (B, 8w)
        h = self.body(x * 2 - 1)
        return torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        return {a: head(f) for a, head in self.heads.items()}   # attribute -> (B, n_values)


def to_input(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> float [0, 1] at the oracle's resolution (antialiased resize if needed)."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images (N, 3, H, W), got {images.dtype}")
    x = images.float() / 255
    if x.shape[-1] != resolution or x.shape[-2] != resolution:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False)
    return x


def augment(x: torch.Tensor, cfg: OracleConfig) -> torch.Tensor:
    """Random blur, shift, flip and noise (global torch RNG, so train.fit resumes exactly)."""
    b = x.shape[0]
    # Gaussian blur with a per-image sigma in [0, cfg.blur]: 5x5 separable kernels
    sigma = torch.rand(b) * cfg.blur + 1e-3
    r = torch.arange(-2, 3, dtype=torch.float32)
    k = torch.exp(-r[None] ** 2 / (2 * sigma[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)                                     # (B, 5)
    xs = x.reshape(1, b * 3, *x.shape[-2:])
    kh = k.repeat_interleave(3, 0)[:, None, None, :]                   # (3B, 1, 1, 5)
    xs = F.conv2d(F.pad(xs, (2, 2, 0, 0), mode="replicate"), kh, groups=b * 3)
    xs = F.conv2d(F.pad(xs, (0, 0, 2, 2), mode="replicate"), kh.transpose(2, 3), groups=b * 3)
    x = xs.reshape_as(x)
    if cfg.shift:
        s = cfg.shift
        dx, dy = torch.randint(-s, s + 1, (2,)).tolist()
        x = torch.roll(F.pad(x, (s, s, s, s), mode="replicate"), (dy, dx), (2, 3))[..., s:-s, s:-s]
    flip = torch.rand(b) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    x = x + torch.randn_like(x) * (torch.rand(b, 1, 1, 1) * cfg.noise)
    return x.clamp(0, 1)


def oracle_config(profile: str, resolution: int) -> OracleConfig:
    sec = profiles.get(profile).t2i_eval
    kw = {k: sec[k] for k in OracleConfig.__dataclass_fields__ if k in sec}
    return OracleConfig(**{**kw, "resolution": resolution})


def _labelled(folder: Path, items: Sequence, resolution: int, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    scenes = read_scenes(folder)
    img_names = [name for name, _ in items]
    x = mdata.images(folder, img_names, resolution)                    # uint8 (N, 3, r, r)
    y = torch.stack([encode_labels(scenes[n]["attributes"], names) for n in img_names])  # (N, A)
    return x, y


def oracle(profile: str, resolution: int, progress: bool = False) -> AttributeOracle:
    """The attribute oracle for ``profile`` at ``resolution``: trained on the train split's real renders
    (``train.fit``, checkpoint cached in ``runs/<profile>/t2i_eval/``), with ``.accuracy`` = held-out
    accuracy per attribute on the val renders (also saved as result ``t2i_oracle_<r>px``)."""
    cfg = oracle_config(profile, resolution)
    split = mdata.load(profile)
    names = list(attributes())
    x, y = _labelled(split.folder, split.train, resolution, names)
    key = {"data": str(split.folder), "n_train": len(split.train)}
    model, fit = fit_oracle(x, y, names, cfg, run_dir(profile, "t2i_eval"), key, progress)
    model.accuracy = heldout_accuracy(model, *_labelled(split.folder, split.val, resolution, names))
    results.save(profile, f"t2i_oracle_{resolution}px", {
        "resolution": resolution, "accuracy": model.accuracy, "n_val": len(split.val), "n_train": len(split.train),
        "train_seconds": fit.train_seconds, "cached": fit.cached, "config": asdict(cfg),
        "mean_accuracy": float(np.mean(list(model.accuracy.values())))})
    return model


def fit_oracle(x: torch.Tensor, y: torch.Tensor, names: list[str], cfg: OracleConfig, out_dir: Path,
               key: dict, progress: bool = False) -> tuple[AttributeOracle, train.FitResult]:
    """Train an oracle on uint8 renders ``x`` (N, 3, r, r) with labels ``y`` (N, A) (-100: not applicable)."""
    table = attributes()
    model = AttributeOracle(cfg, {a: len(table[a]) for a in names})

    def loss_fn(m: AttributeOracle, batch: dict) -> tuple[torch.Tensor, dict]:
        logits = m(augment(to_input(batch["x"], cfg.resolution), cfg))
        losses = [F.cross_entropy(logits[a].float(), batch["y"][:, i], ignore_index=-100)
                  for i, a in enumerate(m.names) if (batch["y"][:, i] >= 0).any()]
        return torch.stack(losses).mean(), {}

    tcfg = train.TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, warmup=min(50, cfg.steps // 10),
                             seed=cfg.seed, mixed_precision="no", log_every=max(1, cfg.steps // 50),
                             ckpt_every=max(1, cfg.steps // 6))   # resumable when a shared machine is slow
    fit = train.fit(model, loss_fn, {"x": x, "y": y}, tcfg, out_dir,
                    {"oracle": asdict(cfg), "attributes": names, **key}, progress=progress)
    return model.eval().requires_grad_(False), fit


def heldout_accuracy(model: AttributeOracle, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Per-attribute accuracy on real renders ``x`` with labels ``y`` (entries -100 are skipped)."""
    pred = predict(model, x)
    return {a: float((pred[:, i] == y[:, i])[y[:, i] >= 0].float().mean())
            for i, a in enumerate(model.names) if (y[:, i] >= 0).any()}


@torch.no_grad()
def _forward(model: AttributeOracle, images: torch.Tensor, fn, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    dev = next(model.parameters()).device
    return torch.cat([fn(to_input(images[i:i + batch_size], model.resolution).to(dev)).cpu()
                      for i in range(0, len(images), batch_size)])


def predict(model: AttributeOracle, images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, 3, H, W) -> predicted value index per attribute (N, A), in ``model.names`` order."""
    return _forward(model, images, lambda x: torch.stack([v.argmax(1) for v in model(x).values()], 1))


def features(model: AttributeOracle, images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> the oracle's pooled features (N, D), the space of the Fréchet distance."""
    return _forward(model, images, model.features)


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
    from scipy import linalg
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
