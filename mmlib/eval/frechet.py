"""Fréchet distance in an independent feature space: ImageNet EfficientNet-Lite0, pooled (1280-d).

FID (Heusel et al. 2017, https://arxiv.org/abs/1706.08500, eq. 6) between Gaussians fitted to the
features of two image sets::

    d² = |mu_1 - mu_2|² + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})

The features are those of the offline ImageNet CNN of ``mmlib.pretrained`` (EfficientNet-Lite0, the
same network in every profile): its last conv map before the classifier, global-average pooled to
1280 numbers, with images resized to the 224 px the network was trained at. Unlike the attribute
oracle it never saw a world render, so a generator cannot be close here by matching only what the
oracle was trained to read.

With ``n`` ≈ 200 images in 1280 dimensions the covariances have rank < n, and the distance is biased
upwards by an amount that depends on ``n`` (Chong & Forsyth 2020, https://arxiv.org/abs/1911.07023):
every distance is reported with ``n`` and with the *floor*, the distance between two disjoint real
sets of the same size.

Computation, exact and without a (d, d) ``sqrtm``: with centred features A (n_1, d), B (n_2, d),
``S_1 = AᵀA / (n_1 - 1)``, ``S_2 = BᵀB / (n_2 - 1)``, the non-zero eigenvalues of ``S_1 S_2`` are those
of ``(A Bᵀ)(A Bᵀ)ᵀ / ((n_1 - 1)(n_2 - 1))``, so ``Tr (S_1 S_2)^{1/2} = ‖A Bᵀ‖_* / sqrt((n_1 - 1)(n_2 - 1))``
(nuclear norm: an (n_1, n_2) SVD). When the sets are larger than ``d`` the (d, d) route
``Tr (S_1^{1/2} S_2 S_1^{1/2})^{1/2}`` (two symmetric eigendecompositions) is cheaper; both are tested
against each other and against the closed form for two Gaussians.

Bootstrap intervals resample *prompts*: image ``i`` of both sets belongs to prompt ``i``, and one
resample is a vector of multiplicities ``w`` (``mmlib.eval.bootstrap``); the weighted mean and
covariance give the distance of that resample (frequency weights: duplicates count as copies).
Resampling duplicates images, which lowers the effective sample size and moves every resample's
distance up; the interval is therefore the resamples' percentile interval shifted back by that
offset (their median minus the point estimate): the spread around the estimate. Rows resampled
alike (same seed) are paired; compare them with each other and with the floor.
"""
from __future__ import annotations

import functools
import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .. import ckpt, pretrained   # pretrained: the offline package's weights, the same network in every profile
from .bootstrap import LEVEL, Interval, weights

INPUT_SIZE = 224            # EfficientNet-Lite0's ImageNet resolution
FEATURES = "EfficientNet-Lite0 (ImageNet), global-average-pooled 1280-d, images resized to 224 px"
N_BOOT = 200                # each resample costs an (n, n) SVD (~30 ms at n = 200 on a busy 2-core CPU)


@functools.lru_cache(maxsize=1)
def _network():
    # channels_last: about a third less CPU time for this network (see captioning.encoders.GridTokens)
    return pretrained.efficientnet_lite0(pretrained=True).eval().to(memory_format=torch.channels_last)


_CACHE: OrderedDict[str, torch.Tensor] = OrderedDict()     # real sets are scored against many rows


@torch.no_grad()
def features(images: torch.Tensor, batch_size: int = 50) -> torch.Tensor:
    """uint8 images (N, 3, H, W) -> pooled EfficientNet-Lite0 features (N, 1280), float64.

    Bilinear resize to 224 px (antialiased when shrinking); the network normalises its input itself.
    Results are memoised by image content (the last 16 sets), so a real set scored against every row
    of a table is encoded once."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise TypeError(f"expected uint8 images (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
    key = hashlib.sha1(images.contiguous().numpy().tobytes()).hexdigest() + str(tuple(images.shape))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    net = _network()
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].float() / 255
        if x.shape[-1] != INPUT_SIZE or x.shape[-2] != INPUT_SIZE:
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > INPUT_SIZE)
        x = x.contiguous(memory_format=torch.channels_last)
        out.append(net(x).mean((2, 3)).double())                   # (B, 1280, 7, 7) -> (B, 1280)
    f = torch.cat(out)
    _CACHE[key] = f
    if len(_CACHE) > 16:
        _CACHE.popitem(last=False)
    return f


def _centred(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Weighted mean (d,), sqrt(w)-scaled centred rows (n, d) and the covariance divisor sum(w) - 1."""
    mu = w @ x / w.sum()
    return mu, np.sqrt(w)[:, None] * (x - mu), w.sum() - 1


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    lam, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(lam, 0, None))) @ v.T


def distance(fa, fb, wa: np.ndarray | None = None, wb: np.ndarray | None = None, route: str = "auto") -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``fa`` (n_1, d) and ``fb`` (n_2, d).

    ``wa``, ``wb``: multiplicities of the rows (a bootstrap resample; default all ones).
    ``route``: "samples" ((n_1, n_2) SVD), "features" ((d, d) eigendecompositions) or "auto" (the cheaper)."""
    a, b = np.asarray(fa, dtype=np.float64), np.asarray(fb, dtype=np.float64)
    wa = np.ones(len(a)) if wa is None else np.asarray(wa, dtype=np.float64)
    wb = np.ones(len(b)) if wb is None else np.asarray(wb, dtype=np.float64)
    keep_a, keep_b = wa > 0, wb > 0                            # rows not drawn contribute nothing
    mu1, ca, da = _centred(a[keep_a], wa[keep_a])
    mu2, cb, db = _centred(b[keep_b], wb[keep_b])
    if da <= 0 or db <= 0:
        return float("nan")
    if route == "auto":
        route = "samples" if max(len(ca), len(cb)) < a.shape[1] else "features"
    if route == "samples":
        cross = np.linalg.svd(ca @ cb.T, compute_uv=False).sum() / np.sqrt(da * db)
    elif route == "features":
        s1h = _sqrt_psd(ca.T @ ca / da)
        m = s1h @ (cb.T @ cb / db) @ s1h
        cross = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    else:
        raise ValueError(f"route must be 'auto', 'samples' or 'features', not {route!r}")
    trace = (ca ** 2).sum() / da + (cb ** 2).sum() / db
    return float(max(0.0, ((mu1 - mu2) ** 2).sum() + trace - 2 * cross))


def gaussian_distance(mu1, s1, mu2, s2) -> float:
    """Closed form between N(mu1, s1) and N(mu2, s2): the definition, for tests and references."""
    mu1, mu2, s1, s2 = (np.asarray(v, dtype=np.float64) for v in (mu1, mu2, s1, s2))
    s1h = _sqrt_psd(s1)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(s1h @ s2 @ s1h), 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * cross)


def paired_statistic(fa, fb) -> Callable[[np.ndarray], float]:
    """``stat(w)``: the distance between ``fa`` and ``fb`` (n, d) when row ``i`` of both is counted
    ``w[i]`` times (``distance(fa, fb, w, w)``), from three (n, n) Gram matrices (``K_a = a aᵀ``,
    ``K_b``, ``G = a bᵀ``) computed once: each call costs one (n, n) SVD."""
    a, b = np.asarray(fa, dtype=np.float64), np.asarray(fb, dtype=np.float64)
    if len(a) != len(b):
        raise ValueError(f"paired sets need the same size, got {len(a)} and {len(b)}")
    ka, kb, g = a @ a.T, b @ b.T, a @ b.T

    def stat(w: np.ndarray) -> float:
        total = w.sum()
        if total <= 1:
            return float("nan")
        gw, wg = g @ w / total, w @ g / total                   # a mu_b (n,), mu_a . b_j (n,)
        wgw = w @ g @ w / total ** 2                            # mu_a . mu_b
        c = g - gw[:, None] - wg[None, :] + wgw                 # (a - mu_a)(b - mu_b)ᵀ
        r = np.sqrt(w)
        cross = np.linalg.svd(r[:, None] * c * r[None, :], compute_uv=False).sum() / (total - 1)
        sa, sb = w @ ka @ w / total ** 2, w @ kb @ w / total ** 2   # |mu_a|², |mu_b|²
        tr_a = (w @ np.diag(ka) - total * sa) / (total - 1)
        tr_b = (w @ np.diag(kb) - total * sb) / (total - 1)
        return float(max(0.0, sa + sb - 2 * wgw + tr_a + tr_b - 2 * cross))
    return stat


def paired_interval(fa, fb, n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """Distance between ``fa`` and ``fb`` (row ``i`` of both belongs to prompt ``i``) with a bootstrap
    interval that resamples prompts (the same multiplicities for both sets).

    Duplicated images inflate a resample's distance (fewer distinct images, see the module
    docstring), so the percentile interval of the resamples is shifted by their median minus the
    point estimate: it gives the spread around the estimate (basic-bootstrap style), not the
    resamples' own, higher level."""
    stat, n = paired_statistic(fa, fb), len(fa)
    value = stat(np.ones(n))
    boots = np.array([stat(w) for w in weights(n, n_boot, seed)])
    boots = boots[np.isfinite(boots)]
    tail = (1 - LEVEL) / 2 * 100
    lo, hi = np.percentile(boots - (np.median(boots) - value), [tail, 100 - tail])
    return Interval(value, float(max(0.0, lo)), float(hi), n, n_boot)


def image_distance(images_a: torch.Tensor, images_b: torch.Tensor, n_boot: int = N_BOOT, seed: int = 0) -> Interval:
    """``paired_interval`` of two uint8 image sets of the same size (one image per prompt each)."""
    return paired_interval(features(images_a), features(images_b), n_boot, seed)


def cached_features(cache_dir: Path, key: dict, images_fn: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``features(images_fn())``, stored once under ``cache_dir`` (real reference sets: every notebook
    of a profile scores against the same ones). ``key`` names everything that determines the images."""
    key = {**key, "features": FEATURES}
    path = Path(cache_dir) / f"frechet-{ckpt.config_key(key)}.safetensors"
    found, _ = ckpt.cached(path, lambda: {"features": features(images_fn())}, key)
    return found["features"].double()
