"""Ground-truth evaluation of text-to-image models on the embedded world (used by notebooks 06–09).

The world knows the scene behind every caption and which attributes each caption states
(``scenes.jsonl``), so a generated image can be checked against the caption that produced it:

- **attribute oracle** (``mmlib.eval.oracle``) — a small CNN trained on real world renders *at the
  resolution being judged*, calibrated on held-out real renders: per attribute its accuracy beside
  the majority-class prior; an attribute is *readable* only if the accuracy beats the prior by
  ``READABLE_MARGIN`` (fixed in code before any model was scored).
- **prompt fidelity** — per attribute: the share of the prompts stating it whose generated image the
  oracle reads as the stated value; overall: the *macro* average over the readable attributes stated
  by at least ``MIN_STATED`` prompts of the set. Three reference rows on the same prompts: the
  **ceiling** (the real render of the prompt's scene), the **prior baseline** (the real render of a
  random *other* prompt's scene: what a generator that ignores the text but draws perfect scenes
  scores) and the **mean image** (one constant image for every prompt).
- **two prompt sets, the same for 06–09** (``prompt_sets``): *held-out* captions of images that no
  generator trained on, and *compositional* prompts whose (subject, clothing colour, background,
  object) never occurs together in any training caption, reported separately.
- **Fréchet distance** in an independent ImageNet feature space (``mmlib.eval.frechet``), with the
  real-vs-real floor and the sample count.
- **sampling cost** — seconds per image, sampler steps and network passes per image (classifier-free
  guidance counts twice), batch size and device.

Every number carries a 95 % bootstrap interval over prompts (``mmlib.eval.bootstrap``); all rows of
one prompt set are resampled alike (same seed), so they are paired.

Typical use in a T2I notebook (API kept small on purpose)::

    from mmlib.eval import t2i
    oracle = t2i.oracle(profile, resolution=32)        # trained once per (profile, resolution), cached
    sets = t2i.prompt_sets(profile)                    # {"heldout": Prompts, "compositional": Prompts}
    samples, cost = t2i.sample_sets(lambda p: my_sampler(p.captions, seed=p.seed), sets,
                                    batch_size=32, steps=25, guidance=4.0)
    row = t2i.evaluate(profile, "06", "pixel diffusion", oracle, samples, sets, cost)
    # -> saves result 't2i_eval_06' and rebuilds the shared tables (rows 06–09)

Images everywhere are uint8 tensors (N, 3, H, W), as ``mmlib.data.images`` returns them; other sizes
are resized to the oracle's resolution. This module never imports a model of the study.
The ``paper`` profile (real Flickr8k) has no scene records, so there is no oracle there:
``available(profile)`` is False, ``heldout_prompts`` gives captions with nothing stated, there is no
compositional set, and ``evaluate(..., model=None, ...)`` saves the Fréchet distance and the cost only.
"""
from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from scipy.stats import binomtest

from .. import data as mdata
from .. import profiles, results
from ..data import flickr8k, world
from ..paths import run_dir
from . import frechet
from .bootstrap import Interval, interval, mean_interval, ratio_interval

# the oracle's API, re-exported: notebooks score with ``t2i.oracle`` / ``t2i.prompt_fidelity`` side by side
from .oracle import (  # noqa: F401
    READABLE_MARGIN,
    AttributeOracle,
    OracleConfig,
    attributes,
    augment,
    calibrate,
    encode_labels,
    fit_oracle,
    oracle,
    predict,
    read_scenes,
    result_key,
    retraining_spread,
)

ROW_NOTEBOOKS = ("06", "07", "08", "09")
SETS = ("heldout", "compositional")
EVAL_SEED = 0            # sampling seed of every scored prompt set (06–09 alike) and of its bootstrap
MIN_STATED = 10          # an attribute enters a set's macro average only if this many of its prompts state it
# every (subject, clothing colour, background) triple occurs in the cpu training captions (224 of 224),
# so a compositional prompt adds the distractor object: 149 of the 480 possible quadruples are novel there
COMPOSITIONAL_KEYS = ("subject", "clothing_colour", "background", "object")
HEADLINE_ATTRS = ("background", "subject", "clothing_colour", "dog_colour", "count")   # always in a headline
REFERENCE_ROWS = {"ceiling": "real render of the prompt's scene (ceiling)",
                  "prior": "real render of another prompt's scene (prior baseline)",
                  "mean_image": "mean training image"}


def row_key(notebook: str) -> str:
    return f"t2i_eval_{notebook}"


# ----------------------------------------------------------------------------- prompt sets


@dataclass
class Prompts:
    """Prompts to generate from, with the attributes each states and two real sets to compare with.

    The real reference (``real_images``) is image ``images[i]`` of ``folder`` or, where ``scenes`` is
    given (compositional prompts), a fresh render of ``scenes[i]``; the Fréchet floor is a second,
    disjoint real set of the same size (``floor_images``: training renders or second renders)."""
    images: list[str]            # the real image each caption describes ("" where a scene is rendered)
    captions: list[str]
    stated: list[dict]           # attribute -> value stated by the caption
    folder: Path
    name: str = "heldout"
    seed: int = EVAL_SEED        # sampling noise of the scored images
    floor: list[str] = field(default_factory=list)            # a disjoint real set (names in ``folder``)
    scenes: list[dict] | None = None                           # compositional: scenes to render
    floor_scenes: list[dict] | None = None
    render_size: int = 128                                     # the data's image size (renders, then resized)

    def __len__(self) -> int:
        return len(self.captions)

    def real_images(self, resolution: int) -> torch.Tensor:
        """The real renders the captions describe, uint8 (N, 3, r, r) (the fidelity ceiling)."""
        if self.scenes is not None:
            return render_scenes(self.scenes, self.render_size, resolution)
        return mdata.images(self.folder, self.images, resolution)

    def floor_images(self, resolution: int) -> torch.Tensor:
        """A second real set of the same size, disjoint from ``real_images`` (the Fréchet floor)."""
        if self.floor_scenes is not None:
            return render_scenes(self.floor_scenes, self.render_size, resolution)
        return mdata.images(self.folder, self.floor, resolution)

    def reference_key(self) -> dict:
        """What determines the real sets (the key of their cached features)."""
        return {"set": self.name, "folder": str(self.folder), "images": self.images, "floor": self.floor,
                "scenes": [s["seed"] for s in self.scenes] if self.scenes else None,
                "floor_scenes": [s["seed"] for s in self.floor_scenes] if self.floor_scenes else None}

    def subset(self, k: int) -> Prompts:
        """The first ``k`` prompts (e.g. 06's sampler comparison)."""
        cut = lambda v: None if v is None else v[:k]   # noqa: E731
        return replace(self, images=self.images[:k], captions=self.captions[:k], stated=self.stated[:k],
                       floor=self.floor[:k], scenes=cut(self.scenes), floor_scenes=cut(self.floor_scenes))


def render_scenes(scenes: Sequence[dict], size: int, resolution: int) -> torch.Tensor:
    """Photo renders of scene dicts, through the data set's JPEG (quality 95, 4:4:4) and its resize,
    so they match ``mdata.images`` of a world folder: uint8 (N, 3, r, r)."""
    out = np.empty((len(scenes), 3, resolution, resolution), dtype=np.uint8)
    for i, s in enumerate(scenes):
        buf = io.BytesIO()
        Image.fromarray(world.render(world.Scene.from_dict(s), "photo", size)).save(buf, "JPEG", quality=95,
                                                                                    subsampling=0)
        with Image.open(buf) as im:
            out[i] = np.asarray(mdata.square(im.convert("RGB"), resolution)).transpose(2, 0, 1)
    return torch.from_numpy(out)


def available(profile: str) -> bool:
    """Whether the profile's data has scene records (world8k), i.e. whether an oracle can judge it."""
    return (mdata.folder_for(profile) / "scenes.jsonl").exists()


def unseen_images(profile: str, split: mdata.Split | None = None) -> list[mdata.Item]:
    """The val items no generator trained on. 06, 07 and 09 train on the train split; 08's LoRA, by the
    study's recipe, on the first ``sd_lora.lora_images`` images of the caption file, which reach into
    the val split (``sdxl_lora.study_data`` applies the same rule; a test checks the two agree)."""
    split = split or mdata.load(profile)
    order = list(flickr8k.read_captions(flickr8k.find_layout(split.folder)[0]))
    lora = profiles.get(profile).sd_lora.lora_images
    seen = set(order[:lora if isinstance(lora, int) else round(lora * len(order))])
    return [item for item in split.val if item[0] not in seen]


def heldout_prompts(profile: str, n: int | None = None) -> Prompts:
    """Held-out prompts: ``n`` (default: profile ``t2i_eval.n_prompts``) captions of images no generator
    trained on (``unseen_images``), spread evenly over them and cycling through the five annotators
    so terse and detailed captions both appear. The Fréchet floor: as many training renders, evenly
    spaced. On data without scene records (real Flickr8k) ``stated`` is empty dicts.
    ``n`` is for tests: 06–09 score the profile's number, so they score the same prompts."""
    split = mdata.load(profile)
    unseen = unseen_images(profile, split)
    scenes = read_scenes(split.folder) if available(profile) else None
    n = min(n or profiles.get(profile).t2i_eval.n_prompts, len(unseen), len(split.train))
    images, captions, stated = [], [], []
    for j, i in enumerate(np.linspace(0, len(unseen) - 1, n).round().astype(int)):
        name, refs = unseen[i]
        cap = scenes[name]["captions"][j % 5] if scenes else {"caption": refs[j % len(refs)], "stated": {}}
        images.append(name), captions.append(cap["caption"]), stated.append(cap["stated"])
    floor = [split.train[i][0] for i in np.linspace(0, len(split.train) - 1, n).round().astype(int)]
    return Prompts(images, captions, stated, split.folder, "heldout", floor=floor,
                   render_size=profiles.get(profile).data.image_size)


def training_combinations(profile: str, keys: Sequence[str] = COMPOSITIONAL_KEYS) -> set[tuple]:
    """Every combination of ``keys`` that some caption of a training image (any image but the
    held-out ones, ``unseen_images``) states together."""
    split = mdata.load(profile)
    held = {name for name, _ in unseen_images(profile, split)}
    return {tuple(c["stated"][k] for k in keys) for name, rec in read_scenes(split.folder).items() if name not in held
            for c in rec["captions"] if all(k in c["stated"] for k in keys)}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def compositional_prompts(profile: str, n: int | None = None) -> Prompts | None:
    """Prompts "a <subject> in a <colour> <garment> <place> near a <object>" whose (subject, clothing
    colour, background, object) no training caption states together (``training_combinations``),
    cycling through those combinations in a seeded order (objects as the world places them:
    ``world.DISTRACTORS``); each prompt's reference is a fresh photo render of a clean scene with
    exactly these attributes (``world.scene_for_prompt``), its floor a second render.
    ``n`` default: profile ``t2i_eval.n_compositional`` (None: ``n_prompts``). None on data without
    scene records, or when every combination occurs in training."""
    if not available(profile):
        return None
    sec = profiles.get(profile).t2i_eval
    n = n or sec.n_compositional or sec.n_prompts
    seen = training_combinations(profile)
    novel = [c for c in ((s, col, bg, obj) for s in world.PEOPLE for col in world.CLOTHING
                         for bg in world.BACKGROUNDS for obj in world.DISTRACTORS[bg]) if c not in seen]
    if not novel:
        return None
    rng = np.random.default_rng(EVAL_SEED)
    order = rng.permutation(len(novel))
    captions, stated, scenes, floor = [], [], [], []
    for j in range(n):
        subject, colour, background, thing = novel[order[j % len(novel)]]
        garment = "dress" if subject in ("woman", "girl") and (j // len(novel)) % 2 == 1 else "top"
        attrs = dict(subject=subject, clothing_colour=colour, garment=garment, background=background, object=thing)
        place = world.PLACES[background].split("|")[0]          # the first phrase of each place states it
        obj_word = world.OBJECT_WORDS[thing].split("|")[0]
        captions.append(f"{_article(subject)} {subject} in {_article(colour)} {colour} "
                        f"{'dress' if garment == 'dress' else 'shirt'} {place} near a {obj_word}")
        stated.append({"category": "person", "count": 1, **attrs})
        scenes.append(asdict(world.scene_for_prompt(seed=int(rng.integers(2 ** 31)), **attrs)))
        floor.append(asdict(world.scene_for_prompt(seed=int(rng.integers(2 ** 31)), **attrs)))
    return Prompts([""] * n, captions, stated, mdata.folder_for(profile), "compositional", scenes=scenes,
                   floor_scenes=floor, render_size=profiles.get(profile).data.image_size)


def prompt_sets(profile: str) -> dict[str, Prompts]:
    """The prompt sets 06–09 all score: ``heldout`` and (world data only) ``compositional``."""
    sets = {"heldout": heldout_prompts(profile)}
    comp = compositional_prompts(profile)
    if comp is not None:
        sets["compositional"] = comp
    return sets


# ----------------------------------------------------------------------------- prompt fidelity


@dataclass
class Fidelity:
    """Per-prompt oracle hits of one image set against its prompts' stated attributes."""
    names: list[str]             # the columns: the oracle's attributes
    hit: np.ndarray              # (N, A) 1 where the prompt states the attribute and the oracle reads it so
    has: np.ndarray              # (N, A) 1 where the prompt states the attribute
    macro_attributes: list[str]  # the macro average's: readable and stated by >= min_stated prompts

    @property
    def n_images(self) -> int:
        return len(self.hit)

    @property
    def counts(self) -> dict[str, int]:
        return {a: int(self.has[:, i].sum()) for i, a in enumerate(self.names) if self.has[:, i].any()}

    @property
    def per_attribute(self) -> dict[str, float]:
        """Attribute -> share read as stated, among the prompts stating it (every stated attribute)."""
        return {a: float(self.hit[:, i].sum() / self.has[:, i].sum()) for i, a in enumerate(self.names)
                if self.has[:, i].any()}

    def macro_stat(self, w: np.ndarray) -> float:
        """The macro average with prompt multiplicities ``w`` (a bootstrap resample); NaN when a
        resample drew no prompt stating one of the attributes."""
        idx = [self.names.index(a) for a in self.macro_attributes]
        num, den = w @ self.hit[:, idx], w @ self.has[:, idx]
        return float(np.mean(num / den)) if len(idx) and (den > 0).all() else float("nan")

    @property
    def macro(self) -> float | None:
        return self.macro_stat(np.ones(self.n_images)) if self.macro_attributes else None

    def interval(self, seed: int = EVAL_SEED) -> Interval | None:
        return interval(self.macro_stat, self.n_images, seed=seed) if self.macro_attributes else None

    def attribute_interval(self, a: str, seed: int = EVAL_SEED) -> Interval:
        i = self.names.index(a)
        return ratio_interval(self.hit[:, i], self.has[:, i], seed=seed)

    def as_dict(self, seed: int = EVAL_SEED) -> dict:
        iv = self.interval(seed)
        return {"macro": iv.as_dict() if iv else None, "attributes": self.macro_attributes, "counts": self.counts,
                "per_attribute": {a: self.attribute_interval(a, seed).as_dict() for a in self.counts}}


def prompt_fidelity(model: AttributeOracle, images: torch.Tensor, stated: Sequence[dict],
                    over: Sequence[str] | None = None, min_stated: int = MIN_STATED) -> Fidelity:
    """Oracle hits of ``images[i]`` against the attributes ``stated[i]``; the macro average runs over the
    attributes ``over`` (default: the oracle's readable ones, ``calibrate``) stated by >= ``min_stated`` prompts."""
    if len(images) != len(stated):
        raise ValueError(f"{len(images)} images but {len(stated)} stated-attribute dicts")
    pred = predict(model, images)                                                  # (N, A)
    want = torch.stack([encode_labels(s, model.names) for s in stated])            # (N, A), -100 unstated
    has = (want >= 0).numpy().astype(np.float64)
    hit = ((pred == want).numpy() & (has > 0)).astype(np.float64)
    wanted = model.readable if over is None else over
    macro = [a for a in model.names if a in wanted and has[:, model.names.index(a)].sum() >= min_stated]
    return Fidelity(list(model.names), hit, has, macro)


def difference_interval(a: Fidelity, b: Fidelity, seed: int = EVAL_SEED) -> Interval | None:
    """Paired interval of macro(a) - macro(b) on the same prompts (the same resamples for both)."""
    if a.macro_attributes != b.macro_attributes or not a.macro_attributes:
        return None
    return interval(lambda w: a.macro_stat(w) - b.macro_stat(w), a.n_images, seed=seed)


def mean_image(profile: str, resolution: int) -> torch.Tensor:
    """The trivial generator's output: the mean training render, uint8 (3, r, r)."""
    split = mdata.load(profile)
    x = mdata.images(split.folder, [n for n, _ in split.train], resolution)
    return x.float().mean(0).round().to(torch.uint8)


def derangement(n: int, seed: int = EVAL_SEED) -> np.ndarray:
    """A random permutation without fixed points (one random cycle): prompt ``i`` is paired with the
    real render of prompt ``perm[i] != i`` for the prior baseline."""
    if n < 2:
        raise ValueError("a derangement needs at least two prompts")
    order = np.random.default_rng(seed).permutation(n)
    perm = np.empty(n, dtype=int)
    perm[order] = np.roll(order, -1)
    return perm


# ----------------------------------------------------------------------------- claim 2.3's experiment


@dataclass
class ColourWords:
    """Claim 2.3's test: does the colour word in "a girl in a <colour> dress" steer the samples?"""
    clothing_colour: float              # share of samples whose dress the oracle reads as the prompted colour
    chance: float                       # 1 / number of colours: what a colour-blind generator scores
    p_value: float                      # one-sided binomial test of the hits against chance
    n: int                              # samples scored
    samples_per_colour: int
    per_attribute: dict[str, float]
    mean_rgb: dict[str, list[float]]    # mean colour of each prompt's samples (a check by eye)
    readable: bool | None = None        # can the oracle read clothing colour at all (calibrate)? None: no oracle
    interval: dict | None = None        # bootstrap 95 % interval of ``clothing_colour`` over samples

    def as_dict(self) -> dict:
        return asdict(self)


def colour_words(model: AttributeOracle | None, images: torch.Tensor, colours: Sequence[str]) -> ColourWords:
    """Score ``images`` generated colour-major from "a girl in a <colour> dress" (the same number per
    colour). A generator that ignores the colour word draws the same distribution for every prompt,
    so whatever the oracle's biases it hits 1 / len(colours) in expectation: the binomial test is exact.

    ``model`` None (no oracle: real Flickr8k) gives NaN for every oracle number."""
    k, chance = len(images) // len(colours), 1 / len(colours)
    mean_rgb = images.float().mean((2, 3)).reshape(len(colours), k, 3).mean(1)        # (colours, 3)
    rgb = {c: v.tolist() for c, v in zip(colours, mean_rgb)}
    if model is None:
        return ColourWords(float("nan"), chance, float("nan"), len(images), k, {"clothing_colour": float("nan")}, rgb)
    stated = [dict(subject="girl", clothing_colour=c, garment="dress") for c in colours for _ in range(k)]
    fid = prompt_fidelity(model, images, stated, over=["clothing_colour"], min_stated=1)
    hits = fid.hit[:, fid.names.index("clothing_colour")]
    p = binomtest(int(hits.sum()), len(images), chance, alternative="greater").pvalue
    return ColourWords(float(hits.mean()), chance, p, len(images), k, fid.per_attribute, rgb,
                       readable="clothing_colour" in model.readable, interval=mean_interval(hits).as_dict())


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


_REFERENCES: dict[tuple, dict] = {}


def references(profile: str, model: AttributeOracle, prompts: Prompts) -> dict[str, Fidelity]:
    """The three reference rows of ``prompts`` (memoised per process): ceiling, prior baseline and
    mean image, as ``Fidelity``."""
    key = (profile, prompts.name, model.resolution, tuple(prompts.captions), tuple(model.readable))
    if key not in _REFERENCES:
        r = model.resolution
        real = prompts.real_images(r)
        trivial = mean_image(profile, r).expand(len(prompts), -1, -1, -1).contiguous()
        _REFERENCES[key] = {name: prompt_fidelity(model, imgs, prompts.stated) for name, imgs in
                            (("ceiling", real), ("prior", real[derangement(len(prompts), prompts.seed)]),
                             ("mean_image", trivial))}
    return _REFERENCES[key]


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


def fidelity_record(model_fid: Fidelity, refs: dict[str, Fidelity], seed: int = EVAL_SEED) -> dict:
    """The fidelity part of a prompt set's record: the model and the reference rows as interval dicts
    (all resampled with ``seed``), the paired model − prior difference, the macro attributes, counts."""
    diff = difference_interval(model_fid, refs["prior"], seed)
    return {"fidelity": {"model": model_fid.as_dict(seed), **{k: f.as_dict(seed) for k, f in refs.items()}},
            "model_minus_prior": diff.as_dict() if diff else None, "attributes": model_fid.macro_attributes,
            "counts": model_fid.counts}


def headline(record: dict) -> dict:
    """A prompt set's record as formatted strings ('value [lo, hi]', %, or None) under fixed keys, for the
    report's ``value`` markers (a missing number renders as '–' instead of breaking the template)."""
    f, fd = record["fidelity"], record["frechet"]
    macro = lambda k: fmt(f[k]["macro"]) if f else None                          # noqa: E731
    attr = lambda k, a: fmt(f[k]["per_attribute"].get(a)) if f else None         # noqa: E731
    return {"fidelity": macro("model"), "ceiling": macro("ceiling"), "prior": macro("prior"),
            "mean_image": macro("mean_image"), "model_minus_prior": fmt(record["model_minus_prior"]),
            "attributes": ", ".join(record["attributes"]) or None, "n": record["n_prompts"],
            "frechet": fmt(fd["model"], 1), "frechet_floor": fmt(fd["real_floor"], 1),
            "frechet_mean_image": fmt(fd["mean_image"], 1),
            "per_attribute": {a: {k: attr(k, a) for k in ("model", "ceiling", "prior", "mean_image")}
                              for a in HEADLINE_ATTRS}}


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
    ``t2i_eval_<notebook>``; rebuild the shared tables (``tables``) and return the row.

    Layout: ``{"notebook", "model", "profile", "resolution" (the oracle's), "generated_px", "cost",
    "oracle": {"key", "readable", "margin"}, "sets": {name: score_set(...)}, **extra}`` where a set holds
    ``fidelity.{model,ceiling,prior,mean_image}.{macro,per_attribute.<a>}`` as interval dicts
    (``value, lo, hi, n, n_boot``), ``model_minus_prior``, ``attributes`` (the macro average's),
    ``counts`` and ``frechet.{model,real_floor,mean_image}`` (intervals) with ``n``; ``headline.<set>``
    holds the same numbers formatted (``headline``) for the report.
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
    return row


def summary_scores(profile: str, model: AttributeOracle | None, images: torch.Tensor, prompts: Prompts) -> dict:
    """Macro fidelity and Fréchet distance of one image set (an ablation's row): intervals, formatted."""
    iv = prompt_fidelity(model, images, prompts.stated).interval(prompts.seed) if model is not None else None
    fd = frechet.paired_interval(frechet.features(images), real_features(profile, prompts, images.shape[-1])[0],
                                 seed=prompts.seed)
    return {"fidelity % [95 % CI]": iv.fmt(1, 100) if iv else None, "Fréchet [95 % CI]": fd.fmt(1),
            "fidelity": iv.as_dict() if iv else None, "frechet": fd.as_dict()}


# ----------------------------------------------------------------------------- the shared tables


def fmt(iv: dict | None, scale: float = 100, digits: int = 1) -> str | None:
    """An interval dict as 'value [lo, hi]' (None stays None)."""
    return None if iv is None else Interval.from_dict(iv).fmt(digits, scale)


def _rows(profile: str) -> dict[str, dict]:
    return {nb: r for nb in ROW_NOTEBOOKS if (r := results.load(profile, row_key(nb), default=None)) is not None}


def tables(profile: str) -> dict[str, list[dict]]:
    """Assemble the saved rows of 06–09 into the report's tables: ``t2i_fidelity_table`` (macro
    fidelity, both prompt sets, three reference rows), ``t2i_attributes_<set>`` (per readable
    attribute), ``t2i_frechet_table`` and ``t2i_budget`` (the sampler budget of every model)."""
    rows = _rows(profile)
    if not rows:
        return {}
    out: dict[str, list[dict]] = {"t2i_fidelity_table": [], "t2i_frechet_table": [], "t2i_budget": []}
    for name in SETS:
        scored = {nb: r["sets"][name] for nb, r in rows.items() if name in r["sets"]}
        if not scored:
            continue
        first_nb, first = next(iter(scored.items()))
        n = first["n_prompts"]
        if first["fidelity"] is not None:
            ref = first["fidelity"]
            for k, label in REFERENCE_ROWS.items():
                out["t2i_fidelity_table"].append({"prompts": name, "images": label, "n": n,
                                                  "fidelity % [95 % CI]": fmt(ref[k]["macro"]),
                                                  "− prior baseline (points)": None})
            for nb, s in scored.items():
                out["t2i_fidelity_table"].append({"prompts": name, "images": f"{nb} {rows[nb]['model']}", "n": n,
                                                  "fidelity % [95 % CI]": fmt(s["fidelity"]["model"]["macro"]),
                                                  "− prior baseline (points)": fmt(s["model_minus_prior"])})
            attrs = first["attributes"]
            cols = {"ceiling": (first_nb, "ceiling"), "prior baseline": (first_nb, "prior"),
                    "mean image": (first_nb, "mean_image"), **{nb: (nb, "model") for nb in scored}}
            out[f"t2i_attributes_{name}"] = [
                {"attribute": a, "prompts stating it": first["counts"][a],
                 **{col: fmt(scored[src]["fidelity"][k]["per_attribute"].get(a)) for col, (src, k) in cols.items()}}
                for a in attrs]
        f = first["frechet"]
        out["t2i_frechet_table"] += [
            {"prompts": name, "images": "real floor (a disjoint real set)", "n": f["n"], "px": f["resolution"],
             "Fréchet [95 % CI]": fmt(f["real_floor"], 1)},
            {"prompts": name, "images": "mean training image", "n": f["n"], "px": f["resolution"],
             "Fréchet [95 % CI]": fmt(f["mean_image"], 1)}]
        out["t2i_frechet_table"] += [
            {"prompts": name, "images": f"{nb} {rows[nb]['model']}", "n": s["frechet"]["n"],
             "px": s["frechet"]["resolution"], "Fréchet [95 % CI]": fmt(s["frechet"]["model"], 1)}
            for nb, s in scored.items()]
    for nb, r in rows.items():
        c = r.get("cost") or {}
        out["t2i_budget"].append({
            "NB": nb, "model": r["model"], "sampler": r.get("sampler"), "steps (or scales)": c.get("steps"),
            "CFG": c.get("guidance"), "network passes / image": c.get("network_evals"),
            "decoder pass": r.get("decoder"), "batch": c.get("batch_size"), "seed": r["sets"]["heldout"]["seed"],
            **{f"{s} prompts": (r["sets"].get(s) or {}).get("n_prompts") for s in SETS},
            "s/image": c.get("seconds_per_image"), "device": c.get("device")})
    notes = {
        "t2i_fidelity_table": (
            f"Profile {profile}. Macro average over the attributes the oracle can read (accuracy above its majority "
            f"prior by more than {100 * READABLE_MARGIN:.0f} points) and at least {MIN_STATED} prompts state; 95 % "
            "bootstrap intervals over prompts, every row of a prompt set resampled alike; '− prior baseline' is "
            "the paired difference. Reference rows are the same for every model (same prompts, same oracle)."),
        "t2i_frechet_table": (
            f"Profile {profile}. Fréchet distance to the prompts' real renders in {frechet.FEATURES}; n images per "
            "set; the floor is the distance between two disjoint real sets of the same size (n ≪ 1280 dimensions "
            "biases every distance upwards). Intervals: prompts resampled, shifted by the resampling offset."),
        "t2i_budget": (
            f"Profile {profile}. Every model samples the same prompts with seed {EVAL_SEED}; network passes per "
            "image count a classifier-free-guidance step twice (conditional + unconditional)."),
    }
    for name in SETS:
        notes[f"t2i_attributes_{name}"] = (
            f"Profile {profile}, {name} prompts: share of the prompts stating the attribute whose image the "
            "oracle reads as stated, % [95 % CI]; readable attributes only.")
    for key, table_rows in out.items():
        if table_rows:
            fmts = {"s/image": ".3f"} if key == "t2i_budget" else {}
            results.save_table(profile, key, table_rows, formats=fmts, note=notes[key])
    return out


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
