"""Prompt fidelity: does a generated image show what its prompt states? (The T2I evaluation's metric.)

Per attribute: the share of the prompts stating it whose generated image the attribute oracle
(``mmlib.eval.oracle``) reads as the stated value; overall: the *macro* average over the oracle's
readable attributes stated by at least ``MIN_STATED`` prompts of the set. Four reference rows on the
same prompts (``references``): the **ceiling** (the real render of the prompt's scene), the **prior
baseline** (the real render of a random *other* prompt's scene: what a generator that ignores the
text but draws perfect scenes scores, in expectation the collision rate Σp² of each attribute), the
**mean image** (one constant image for every prompt) and the **majority** row (every attribute shown
at its most frequent value among the set's prompts, read perfectly: a text-blind generator's best
constant guess, ``majority_fidelity``). A claim is judged against the strongest of the three
baselines. Readability is decided per prompt set too (``readable_on_set``): an attribute whose
ceiling does not beat the mean image and the majority row on the set is left out of its macro average.

Every number carries a 95 % bootstrap interval over prompts (``mmlib.eval.bootstrap``); all rows of
one prompt set are resampled alike (same seed), so they are paired (``difference_interval``).
Claim 2.3's colour-word test (``colour_words``) scores 06's "a girl in a <colour> dress" samples.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, replace
from typing import Sequence

import numpy as np
import torch
from scipy.stats import binomtest

from .bootstrap import Interval, interval, mean_interval, ratio_interval
from .oracle import AttributeOracle, encode_labels, predict
from .t2i_prompts import EVAL_SEED, Prompts, mean_image

MIN_STATED = 10          # an attribute enters a set's macro average only if this many of its prompts state it


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


def derangement(n: int, seed: int = EVAL_SEED) -> np.ndarray:
    """A random permutation without fixed points (one random cycle): prompt ``i`` is paired with the
    real render of prompt ``perm[i] != i`` for the prior baseline."""
    if n < 2:
        raise ValueError("a derangement needs at least two prompts")
    order = np.random.default_rng(seed).permutation(n)
    perm = np.empty(n, dtype=int)
    perm[order] = np.roll(order, -1)
    return perm


# ----------------------------------------------------------------------------- the reference rows


_REFERENCES: dict[tuple, dict] = {}
BASELINES = ("prior", "mean_image", "majority")     # the text-blind rows a model must beat
BASELINE_NAMES = {"prior": "random other scene", "mean_image": "mean image", "majority": "majority value"}


def majority_fidelity(model: AttributeOracle, stated: Sequence[dict], over: Sequence[str] | None = None,
                      min_stated: int = MIN_STATED) -> Fidelity:
    """The majority row: each stated attribute shown at its modal value among ``stated`` (the set's prompts)
    and read perfectly; a hit where the prompt states that value. No image and no oracle are involved."""
    names = list(model.names)
    modes = {a: Counter(s[a] for s in stated if a in s).most_common(1)[0][0]
             for a in names if any(a in s for s in stated)}
    has = np.array([[float(a in s) for a in names] for s in stated]).reshape(len(stated), len(names))
    hit = np.array([[float(a in s and s[a] == modes[a]) for a in names] for s in stated]).reshape(has.shape)
    wanted = model.readable if over is None else over
    macro = [a for a in names if a in wanted and has[:, names.index(a)].sum() >= min_stated]
    return Fidelity(names, hit, has, macro)


def references(profile: str, model: AttributeOracle, prompts: Prompts) -> dict[str, Fidelity]:
    """The four reference rows of ``prompts`` (memoised per process): ceiling, prior baseline, mean image
    and majority, as ``Fidelity``."""
    key = (profile, prompts.name, model.resolution, tuple(prompts.captions), tuple(model.readable))
    if key not in _REFERENCES:
        r = model.resolution
        real = prompts.real_images(r)
        trivial = mean_image(profile, r).expand(len(prompts), -1, -1, -1).contiguous()
        _REFERENCES[key] = {name: prompt_fidelity(model, imgs, prompts.stated) for name, imgs in
                            (("ceiling", real), ("prior", real[derangement(len(prompts), prompts.seed)]),
                             ("mean_image", trivial))}
        _REFERENCES[key]["majority"] = majority_fidelity(model, prompts.stated)
    return _REFERENCES[key]


def readable_on_set(refs: dict[str, Fidelity]) -> list[str]:
    """The ceiling's macro attributes whose ceiling score on this prompt set beats both the mean image's and
    the majority row's: an attribute the real renders cannot show better than a constant is not readable here."""
    ceiling = refs["ceiling"].per_attribute
    floors = [refs[k].per_attribute for k in ("mean_image", "majority") if k in refs]
    return [a for a in refs["ceiling"].macro_attributes if all(ceiling[a] > f.get(a, 0.0) for f in floors)]


def strongest(refs: dict[str, Fidelity]) -> str | None:
    """The baseline row (``BASELINES``) with the highest macro fidelity; None when none has one."""
    scored = {k: refs[k].macro for k in BASELINES if k in refs and refs[k].macro is not None}
    return max(scored, key=scored.get) if scored else None


def fidelity_record(model_fid: Fidelity, refs: dict[str, Fidelity], seed: int = EVAL_SEED) -> dict:
    """The fidelity part of a prompt set's record: the model and the reference rows as interval dicts
    (all resampled with ``seed``) over the attributes readable on this set (``readable_on_set``), the paired
    model − prior and model − strongest-baseline differences, the macro attributes, counts."""
    attrs = [a for a in readable_on_set(refs) if a in model_fid.macro_attributes]
    dropped = [a for a in model_fid.macro_attributes if a not in attrs]
    model_fid = replace(model_fid, macro_attributes=attrs)
    refs = {k: replace(f, macro_attributes=attrs) for k, f in refs.items()}
    best = strongest(refs)
    diff = difference_interval(model_fid, refs["prior"], seed)
    diff_best = difference_interval(model_fid, refs[best], seed) if best else None
    return {"fidelity": {"model": model_fid.as_dict(seed), **{k: f.as_dict(seed) for k, f in refs.items()}},
            "model_minus_prior": diff.as_dict() if diff else None, "strongest_baseline": best,
            "model_minus_strongest": diff_best.as_dict() if diff_best else None, "attributes": attrs,
            "not_readable_on_set": dropped, "counts": model_fid.counts}


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


def roundtrip_rows(profile: str, model: AttributeOracle, prompts: Prompts, reconstruct, resolution: int) -> list[dict]:
    """Does an image autoencoder keep what the prompts state? Per readable attribute of ``prompts``: the
    share of the real renders the oracle reads as stated, before and after ``reconstruct`` (uint8 (N, 3, r, r)
    -> uint8, the first stage's encode + decode), beside the prior baseline. A generator that samples the
    first stage's latents cannot beat its round trip, so an attribute at its prior here is lost before
    the second stage starts."""
    real = prompts.real_images(resolution)
    before = prompt_fidelity(model, real, prompts.stated)
    rows_of = {"real render": before, "round trip": prompt_fidelity(model, reconstruct(real), prompts.stated),
               "prior baseline": references(profile, model, prompts)["prior"]}
    pct = lambda iv: iv.fmt(scale=100)   # noqa: E731
    rows = [{"attribute": a, "prompts stating it": before.counts[a],
             **{k: pct(f.attribute_interval(a)) for k, f in rows_of.items()}} for a in before.macro_attributes]
    macro = {k: pct(interval(f.macro_stat, f.n_images)) for k, f in rows_of.items()}
    return rows + [{"attribute": "macro", "prompts stating it": len(prompts), **macro}]
