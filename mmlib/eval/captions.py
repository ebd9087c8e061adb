"""Caption metrics: the study's BLEU (``seed`` mode) and standard COCO-style scores.

``seed`` mode is bit-compatible with the study's evaluation (Table 2 of ../shared/seed/report_zh.md):
each line of ``captions.txt`` is split at its FIRST comma -- so CSV quotes stay in the text
(``"A dog , a ball ."`` yields the tokens ``"A`` ... ``."``) --, tokens are ``str.split()``,
nothing is lowercased, and BLEU is nltk's ``corpus_bleu`` (Papineni et al. 2002,
https://aclanthology.org/P02-1040) with ``SmoothingFunction().method1`` and the weights in
:data:`SEED_WEIGHTS`. All five references of an image are used.

``standard`` mode: CSV-parsed captions, lowercased, punctuation removed (:func:`tokenize`), scored
by pycocoevalcap's pure-Python BLEU-1..4 (``closest`` reference length), CIDEr-D (Vedantam et al.
2015, https://arxiv.org/abs/1411.5726; pycocoevalcap's ``Cider`` is the CIDEr-D variant: clipped
n-gram counts, Gaussian length penalty sigma = 6, x10, idf from the scored references) and
ROUGE-L (Lin 2004, beta = 1.2). No Java: the PTB tokenizer is replaced by :func:`tokenize`.

Convention: every score is reported x100 (BLEU, ROUGE-L in percent; CIDEr-D x100 as in papers).
"""
from __future__ import annotations

import contextlib
import io
import math
import re
from pathlib import Path

import numpy as np
from nltk.translate.bleu_score import SmoothingFunction, closest_ref_length, corpus_bleu, modified_precision
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from . import bootstrap
from .bootstrap import Interval

BLEU_KEYS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4")
STANDARD_KEYS = (*BLEU_KEYS, "CIDEr-D", "ROUGE-L")
# the study's weights; note BLEU-3 uses (.333, .333, .334), not thirds
SEED_WEIGHTS = ((1, 0, 0, 0), (0.5, 0.5, 0, 0), (0.333, 0.333, 0.334, 0), (0.25, 0.25, 0.25, 0.25))
# a word: letters/digits, with inner hyphens or apostrophes kept ("t-shirt", "dog's")
_WORD = re.compile(r"[^\W_]+(?:['\-][^\W_]+)*")


# ----------------------------------------------------------------------------- seed mode
def _lines(path: str | Path) -> list[str]:
    """Lines as ``for line in open(path)`` yields them (universal newlines), without the ends."""
    return Path(path).read_text(encoding="utf-8-sig").rstrip("\n").split("\n")


def read_seed_refs(path: str | Path) -> dict[str, list[str]]:
    """References as the study read them: each line split at its first comma, quotes kept.

    The ``image,caption`` header line is skipped (the study kept it as an image named "image",
    which no hypothesis matches, so the scores are the same).
    """
    refs: dict[str, list[str]] = {}
    for i, line in enumerate(_lines(path), start=1):
        if not line.strip() or (i == 1 and line.strip() == "image,caption"):
            continue
        if "," not in line:
            raise ValueError(f"{path}:{i}: no comma between image name and caption")
        image, caption = line.strip().split(",", 1)
        refs.setdefault(image, []).append(caption)
    return refs


def read_seed_hypotheses(path: str | Path, known_images: set[str] | dict) -> dict[str, str]:
    """Generated captions from an ``image,caption``-per-line file (no header needed).

    Repair (documented, tested): a line that does not start with a known image name followed by a
    comma continues the previous caption and is joined to it with a space -- the study's file has
    one caption over two lines (207-208). With a space the tokens are those of the unsplit caption.
    Raises ValueError naming ``file:line`` for a continuation before any caption, or an image
    given twice.
    """
    hyps: dict[str, str] = {}
    last = None
    for i, line in enumerate(_lines(path), start=1):
        if i == 1 and line.strip() == "image,caption":
            continue
        image, sep, caption = line.partition(",")
        if sep and image in known_images:
            if image in hyps:
                raise ValueError(f"{path}:{i}: second caption for {image}")
            hyps[image], last = caption.strip(), image
        elif last is None:
            raise ValueError(f"{path}:{i}: does not start with a known image name: {line[:60]!r}")
        elif line.strip():
            hyps[last] = f"{hyps[last]} {line.strip()}"
    return hyps


def seed_scores_from_refs(hyps: dict[str, str], refs_raw: dict[str, list[str]]) -> dict[str, float]:
    """The study's BLEU-1..4 (x100) of ``hyps`` against raw reference strings (all refs used).

    ``refs_raw`` are the captions as the study read them (:func:`read_seed_refs`; quotes kept).
    An empty hypothesis scores 0 (it only adds to the brevity penalty).
    """
    images = _check_keys(hyps, refs_raw)
    references = [[r.split() for r in refs_raw[im]] for im in images]
    hypotheses = [hyps[im].split() for im in images]
    # one call with all four weight tuples: n-gram counts once, same floats as four calls
    bleus = corpus_bleu(references, hypotheses, weights=list(SEED_WEIGHTS),
                        smoothing_function=SmoothingFunction().method1)
    return {k: 100 * float(b) for k, b in zip(BLEU_KEYS, bleus)}


def seed_scores(hyps: dict[str, str], ref_lines_path: str | Path) -> dict[str, float]:
    """The study's BLEU-1..4 (x100) of ``hyps`` against a ``captions.txt`` read the study's way."""
    return seed_scores_from_refs(hyps, read_seed_refs(ref_lines_path))


def seed_bleu(hyp_path: str | Path, ref_path: str | Path) -> dict[str, float]:
    """The study's BLEU-1..4 (x100) of a generated-captions file against ``captions.txt``.

    On the study's Q-former + TinyLlama captions this gives 72.2 / 50.9 / 36.1 / 25.9 (Table 2).
    """
    refs = read_seed_refs(ref_path)
    return seed_scores_from_refs(read_seed_hypotheses(hyp_path, refs), refs)


# ----------------------------------------------------------------------------- standard mode
def tokenize(caption: str) -> str:
    """Lowercase, drop punctuation, keep words (inner ``-``/``'`` kept); tokens joined by spaces.

    Stands in for coco-caption's PTBTokenizer + punctuation removal (which needs Java); unlike it,
    contractions are not split (``don't`` stays one token).
    """
    return " ".join(_WORD.findall(caption.lower()))


def standard_scores(hyps: dict[str, str], refs: dict[str, list[str]]) -> dict[str, float]:
    """BLEU-1..4, CIDEr-D, ROUGE-L (all x100) of ``hyps`` against parsed reference captions.

    Every hypothesis image needs references; images with references but no hypothesis are not
    scored. An empty hypothesis scores 0.
    """

    images = _check_keys(hyps, refs)
    res = {im: [tokenize(hyps[im])] for im in images}
    gts = {im: [tokenize(r) for r in refs[im]] for im in images}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocoevalcap prints its n-gram counts
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    return {**{k: 100 * float(b) for k, b in zip(BLEU_KEYS, bleu)},
            "CIDEr-D": 100 * float(cider), "ROUGE-L": 100 * float(rouge)}


def _check_keys(hyps: dict[str, str], refs: dict[str, list[str]]) -> list[str]:
    missing = [im for im in hyps if not refs.get(im)]
    if missing:
        raise KeyError(f"{len(missing)} hypotheses without references, e.g. {missing[:3]}")
    if not hyps:
        raise ValueError("no hypotheses to score")
    return list(hyps)


# ----------------------------------------------------------------------------- human ceiling
def human_ceiling(refs: dict[str, list[str]], mode: str = "standard") -> dict[str, float]:
    """Leave-one-out human agreement: each reference scored against the others of its image.

    For k = 0..K-1 (K = fewest references of any image, 5 in Flickr8k) the k-th reference of every
    image is the hypothesis and the remaining K-1 are the references; the corpus-level scores are
    averaged over the K choices. ``mode="seed"`` uses the study's BLEU (pass raw refs from
    :func:`read_seed_refs` to mimic it exactly), ``"standard"`` uses :func:`standard_scores`.
    """
    score = {"standard": standard_scores, "seed": seed_scores_from_refs}[mode]
    k_refs = min(len(r) for r in refs.values())
    if k_refs < 2:
        raise ValueError("the human ceiling needs at least 2 references per image")
    runs = []
    for k in range(k_refs):
        hyps = {im: r[k] for im, r in refs.items()}
        others = {im: r[:k] + r[k + 1:k_refs] for im, r in refs.items()}
        runs.append(score(hyps, others))
    return {key: sum(run[key] for run in runs) / k_refs for key in runs[0]}


def ceiling_rows(name: str, val_items: list, captions_file: str | Path) -> list[dict]:
    """The human ceiling of a validation split in the study's seed mode and in the standard mode (two rows)."""
    refs = dict(val_items)
    raw = read_seed_refs(captions_file)
    seed = human_ceiling({im: raw[im] for im in refs}, mode="seed")
    std = human_ceiling(refs, mode="standard")
    return [{"references": name, "mode": "seed", **seed}, {"references": name, "mode": "standard", **std}]


# ----------------------------------------------------------------------------- intervals
def seed_bleu_stats(hyps: dict[str, str], refs_raw: dict[str, list[str]]) -> np.ndarray:
    """Per-image sufficient statistics of the study's BLEU, (N, 10): clipped n-gram matches and
    hypothesis n-gram counts for n = 1..4, hypothesis length, closest reference length (nltk's
    ``corpus_bleu`` sums exactly these over images)."""
    images = _check_keys(hyps, refs_raw)
    out = np.zeros((len(images), 10))
    for row, im in zip(out, images):
        refs, hyp = [r.split() for r in refs_raw[im]], hyps[im].split()
        for n in range(1, 5):
            p = modified_precision(refs, hyp, n)
            row[n - 1], row[3 + n] = p.numerator, p.denominator
        row[8], row[9] = len(hyp), closest_ref_length(refs, len(hyp))
    return out


def bleu_from_stats(sums: np.ndarray, weights=SEED_WEIGHTS[3]) -> float:
    """nltk's corpus BLEU (method1 smoothing, x100) from summed :func:`seed_bleu_stats` (10,)."""
    num, den, hyp_len, ref_len = sums[:4], sums[4:8], sums[8], sums[9]
    if num[0] == 0:
        return 0.0
    bp = 1.0 if hyp_len > ref_len else 0.0 if hyp_len == 0 else math.exp(1 - ref_len / hyp_len)
    p = [(nu if nu > 0 else 0.1) / de for nu, de in zip(num, den) if de > 0]
    return 100 * bp * math.exp(math.fsum(w * math.log(x) for w, x in zip(weights, p) if x > 0))


def intervals(hyps: dict[str, str], refs_raw: dict[str, list[str]], refs: dict[str, list[str]],
              n_boot: int = 1000, seed: int = 0) -> dict[str, Interval]:
    """Seed-mode BLEU-4 and CIDEr-D with bootstrap 95 % intervals (images resampled; CIDEr-D's idf
    stays that of all scored references, the usual approximation). Same ``seed`` = same resamples for
    every row scored on the same images, so rows are compared on paired resamples."""
    stats = seed_bleu_stats(hyps, refs_raw)
    images = list(hyps)
    gts = {im: [tokenize(r) for r in refs[im]] for im in images}
    _, per_image = Cider().compute_score(gts, {im: [tokenize(hyps[im])] for im in images})
    return {"seed BLEU-4": bootstrap.interval(lambda w: bleu_from_stats(w @ stats), len(images), n_boot, seed),
            "CIDEr-D": bootstrap.mean_interval(100 * np.asarray(per_image), n_boot, seed)}


def matched_to_human(hyps: dict[str, str], refs_raw: dict[str, list[str]], refs: dict[str, list[str]]) -> dict[str, float]:
    """The model scored like the human ceiling: for k = 0..K-1, against the K-1 references left when
    the k-th (the held-out human caption) is removed; seed BLEU-4 and CIDEr-D averaged over k."""
    k_refs = min(len(refs[im]) for im in hyps)
    out = {"seed BLEU-4": 0.0, "CIDEr-D": 0.0}
    for k in range(k_refs):
        drop = {im: r[:k] + r[k + 1:k_refs] for im, r in refs_raw.items() if im in hyps}
        out["seed BLEU-4"] += seed_scores_from_refs(hyps, drop)["BLEU-4"] / k_refs
        gts = {im: [tokenize(x) for x in (r[:k] + r[k + 1:k_refs])] for im, r in refs.items() if im in hyps}
        out["CIDEr-D"] += 100 * Cider().compute_score(gts, {im: [tokenize(hyps[im])] for im in hyps})[0] / k_refs
    return out
