"""Figures and tables of ``01_data``: a sample grid, caption lengths and word frequencies
(our data against the real Flickr8k captions), caption statistics and the human-agreement ceiling."""
from __future__ import annotations

import textwrap
from collections import Counter

import matplotlib.pyplot as plt
import numpy as np

from . import Split, images
from .world import STOP_WORDS, caption_stats


def sample_grid(split: Split, n: int = 8, size: int = 128, seed: int = 0):
    """n training images with their five captions."""
    rng = np.random.default_rng(seed)
    items = [split.train[i] for i in sorted(rng.choice(len(split.train), size=min(n, len(split.train)), replace=False))]
    imgs = images(split.folder, [name for name, _ in items], size)
    cols = 4
    rows = -(-len(items) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 6.4 * rows), gridspec_kw={"hspace": 0.75})
    for ax, (name, caps), img in zip(np.atleast_1d(axes).flat, items, imgs):
        ax.imshow(img.permute(1, 2, 0).numpy())
        ax.set_title(name, fontsize=7)
        text = "\n".join(textwrap.fill(f"{k + 1}. {c}", 48) for k, c in enumerate(caps))
        ax.set_xlabel(text, fontsize=7, loc="left")
        ax.set_xticks([]), ax.set_yticks([])
    for ax in np.atleast_1d(axes).flat[len(items):]:
        ax.axis("off")
    return fig


def all_captions(captions: dict[str, list[str]]) -> list[str]:
    return [c for caps in captions.values() for c in caps]


def length_histogram(ours: list[str], real: list[str] | None, label: str):
    fig, ax = plt.subplots(figsize=(6, 3.2))
    bins = np.arange(0, 40) + 0.5
    ax.hist([len(c.split()) for c in ours], bins=bins, density=True, alpha=0.6, label=label)
    if real:
        ax.hist([len(c.split()) for c in real], bins=bins, density=True, alpha=0.6, label="real Flickr8k")
    ax.set_xlabel("words per caption (whitespace tokens)"), ax.set_ylabel("share"), ax.legend()
    fig.tight_layout()
    return fig


def content_word_counts(captions: list[str]) -> Counter:
    return Counter(t for c in captions for w in c.lower().split()
                   if (t := w.strip('.,!?"\'')) and t not in STOP_WORDS)


def word_frequency(ours: list[str], real: list[str] | None, label: str, top: int = 25):
    """Relative frequency of the most frequent content words, side by side."""
    sets = [(label, ours)] + ([("real Flickr8k", real)] if real else [])
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 5.5))
    for ax, (name, caps) in zip(np.atleast_1d(axes), sets):
        counts = content_word_counts(caps)
        words, freq = zip(*counts.most_common(top))
        ax.barh(range(len(words))[::-1], np.array(freq) / len(caps))
        ax.set_yticks(range(len(words))[::-1], words, fontsize=8)
        ax.set_title(f"{name}: top content words"), ax.set_xlabel("occurrences per caption")
    fig.tight_layout()
    return fig


def stats_rows(sets: dict[str, list[str]]) -> list[dict]:
    rows = []
    for name, caps in sets.items():
        s = caption_stats(caps, top=10)
        rows.append({"captions": name, "n": s["n_captions"], "mean words": s["mean_words"],
                     "median": s["median_words"], "range": f"{s['min_words']}–{s['max_words']}",
                     "word types": s["vocab_size"], "types ≥5×": s["types_ge5"],
                     "top content words": ", ".join(s["top_content_words"])})
    return rows


def top_word_overlap(ours: list[str], real: list[str], top: int = 25) -> float:
    """Share of the real data's top content words that are also among ours."""
    a = {w for w, _ in content_word_counts(ours).most_common(top)}
    b = {w for w, _ in content_word_counts(real).most_common(top)}
    return len(a & b) / len(b)
