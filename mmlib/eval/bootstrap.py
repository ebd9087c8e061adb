"""Bootstrap 95 % intervals by resampling images (Efron & Tibshirani 1993, percentile method).

Every statistic we report is a function of per-image sums (BLEU's clipped n-gram counts and
lengths, CIDEr-D's per-image score, an attribute's true/false statement counts), so one resample
is a vector of multiplicities ``w`` (how often each image was drawn, ``sum(w) = n``) and the
statistic is recomputed from ``w @ per_image_sums``; 1,000 resamples of 1,619 images cost
milliseconds instead of 1,000 calls of the metric.

    iv = mean_interval(per_image_cider)                  # Interval(value, lo, hi)
    iv = interval(lambda w: f(w @ stats), n=len(stats))  # any statistic of weighted sums
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np

N_BOOT = 1000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate (on all images) with its bootstrap percentile interval."""
    value: float
    lo: float
    hi: float
    n: int            # images resampled
    n_boot: int

    def __str__(self) -> str:
        return f"{self.value:.1f} [{self.lo:.1f}, {self.hi:.1f}]"

    def fmt(self, digits: int = 1, scale: float = 1.0) -> str:
        return f"{self.value * scale:.{digits}f} [{self.lo * scale:.{digits}f}, {self.hi * scale:.{digits}f}]"

    def above(self, other: Interval) -> bool:
        """The two intervals do not overlap and this one is higher."""
        return self.lo > other.hi

    def as_dict(self) -> dict:
        return {"value": self.value, "lo": self.lo, "hi": self.hi, "n": self.n, "n_boot": self.n_boot}

    @classmethod
    def from_dict(cls, d: dict) -> Interval:
        return cls(**{k: d[k] for k in ("value", "lo", "hi", "n", "n_boot")})


@functools.lru_cache(maxsize=8)
def weights(n: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """(n_boot, n) multiplicities of ``n`` images drawn with replacement ``n`` times, per resample
    (read-only; cached, so every statistic of the same images sees the same resamples)."""
    if n < 1:
        raise ValueError("cannot bootstrap an empty sample")
    draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    w = np.stack([np.bincount(d, minlength=n) for d in draws]).astype(np.float64)
    w.flags.writeable = False
    return w


def interval(stat: Callable[[np.ndarray], float], n: int, n_boot: int = N_BOOT, seed: int = 0,
             level: float = LEVEL) -> Interval:
    """``stat(w)`` for all images (``w`` = ones) and its percentile interval over ``n_boot`` resamples.

    ``stat`` takes a (n,) vector of image multiplicities; the same seed gives the same resamples,
    so two rows scored on the same images are resampled alike (paired)."""
    value = float(stat(np.ones(n)))
    boots = np.array([stat(w) for w in weights(n, n_boot, seed)], dtype=np.float64)
    boots = boots[np.isfinite(boots)]
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(boots, [tail, 100 - tail]) if len(boots) else (np.nan, np.nan)
    return Interval(value, float(lo), float(hi), n, n_boot)


def mean_interval(values, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> Interval:
    """Interval of the mean of per-image values (e.g. CIDEr-D's per-image scores)."""
    v = np.asarray(values, dtype=np.float64)
    return interval(lambda w: float(w @ v / w.sum()), len(v), n_boot, seed, level)


def ratio_interval(numerator, denominator, n_boot: int = N_BOOT, seed: int = 0,
                   level: float = LEVEL) -> Interval:
    """Interval of sum(numerator) / sum(denominator) over images (a pooled rate such as precision)."""
    a, b = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    return interval(lambda w: float(w @ a / (w @ b)) if w @ b > 0 else np.nan, len(a), n_boot, seed, level)
