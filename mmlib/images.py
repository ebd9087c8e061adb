"""Image conversions, CLIP normalisation, PSNR and grids shared by every notebook.

Images travel as uint8 tensors (N, 3, H, W) in [0, 255]; generators work in [-1, 1].
"""
from __future__ import annotations

import math
import textwrap
from typing import Sequence

import matplotlib.pyplot as plt
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD


def to_signed(x: torch.Tensor) -> torch.Tensor:
    """uint8 (..., 3, H, W) in [0, 255] -> float in [-1, 1]."""
    return x.float() / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8 in [0, 255] (clamped, rounded)."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def unit_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in [0, 1] (diffusers' ``output_type="pt"``) -> uint8 in [0, 255]."""
    return (x.float().clamp(0, 1) * 255).round().to(torch.uint8)


def clip_normalize(x: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] (B, 3, H, W) -> CLIP's input normalisation (OpenAI's mean and std, as
    open_clip and BLIP-2 use them)."""
    mean = torch.tensor(OPENAI_DATASET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def psnr(x: torch.Tensor, y: torch.Tensor, peak: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB, ``10 log10(peak² / MSE)``: ``peak`` 1 for images in [0, 1], 2 for [-1, 1].

    x, y (N, ...) -> (N,)."""
    mse = (x.float() - y.float()).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return 10 * torch.log10(peak ** 2 / mse)


TITLE_FONT = 6          # points: captions above images
LABEL_FONT = 7          # points: row labels (prompts at the left of a row)
HEADER_FONT = 8         # points: column headers


def wrap_title(text: str, width: int, lines: int = 3) -> str:
    """``text`` wrapped to at most ``lines`` lines of ``width`` characters (an ellipsis marks a cut)."""
    return "\n".join(textwrap.wrap(" ".join(str(text).split()), max(4, width), max_lines=lines, placeholder=" …"))


def _chars_per_line(inches: float, fontsize: float) -> int:
    """About how many characters of a ``fontsize``-point sans-serif fit in ``inches`` (0.55 em per character)."""
    return int(inches * 72 / (0.55 * fontsize))


def _show(ax, image: torch.Tensor | None, missing: str = "") -> None:
    """One image in ``ax`` without ticks (axes kept, so a y label can still name the row); ``None``
    leaves a blank cell with ``missing`` written in it."""
    ax.set_xticks([]), ax.set_yticks([])
    if image is not None:
        ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
        for spine in ax.spines.values():
            spine.set_visible(False)
    else:
        ax.set_xlim(0, 1), ax.set_ylim(0, 1), ax.set_aspect("equal")     # the size of an image cell
        ax.set_facecolor("#f2f2f2")
        for spine in ax.spines.values():
            spine.set_color("#cccccc")
        if missing:
            ax.text(0.5, 0.5, missing, ha="center", va="center", fontsize=HEADER_FONT, color="#777777",
                    transform=ax.transAxes)


def image_grid(images: torch.Tensor, titles: Sequence[str] | None = None, ncol: int = 8, scale: float = 1.1,
               row_labels: Sequence[str] | None = None, fontsize: float = TITLE_FONT, title_lines: int = 3):
    """uint8 images (N, 3, H, W) -> a matplotlib figure, ``ncol`` per row, optional titles.

    Titles are wrapped to the image width (at most ``title_lines`` lines, in ``fontsize`` points) and the
    figure grows by their height, so neighbouring titles never overlap; ``row_labels`` (one per row)
    name the rows at the left (e.g. "generated" / "real", or the prompt of a row)."""
    n = len(images)
    ncol = max(1, min(ncol, n))
    nrow = math.ceil(n / ncol)
    width = _chars_per_line(scale * 0.95, fontsize)
    titles = list(titles) + [""] * (n - len(titles)) if titles else None      # fewer titles than images: the rest blank
    wrapped = [wrap_title(t, width, title_lines) if t else "" for t in titles] if titles else None
    lines = [max([w.count("\n") + 1 for w in wrapped[r * ncol:(r + 1) * ncol] if w] or [0]) for r in range(nrow)] \
        if wrapped else [0] * nrow
    label_width = 0.0
    if row_labels:
        label_chars = min(28, max(len(str(t)) for t in row_labels))
        label_width = label_chars * 0.55 * LABEL_FONT / 72 + 0.15
    title_h = [k * fontsize * 1.3 / 72 + (0.06 if k else 0) for k in lines]
    fig = plt.figure(figsize=(ncol * scale + label_width, nrow * scale * 1.04 + sum(title_h)))
    grid = fig.add_gridspec(nrow, ncol, height_ratios=[scale + h for h in title_h], hspace=0, wspace=0.06,
                            left=label_width / (ncol * scale + label_width), right=1, top=1, bottom=0)
    for r in range(nrow):
        for c in range(ncol):
            i = r * ncol + c
            if i >= n:
                continue
            ax = fig.add_subplot(grid[r, c])
            _show(ax, images[i])
            ax.set_anchor("S")
            if wrapped and wrapped[i]:
                ax.set_title(wrapped[i], fontsize=fontsize, pad=2, linespacing=1.1)
            if c == 0 and row_labels and r < len(row_labels) and row_labels[r]:
                ax.set_ylabel(wrap_title(row_labels[r], 28), fontsize=LABEL_FONT, rotation=0, ha="right",
                              va="center", labelpad=4)
    return fig


def labelled_rows_grid(rows: dict[str, torch.Tensor], titles: Sequence[str] | None = None, ncol: int = 8,
                       scale: float = 1.1, **kwargs):
    """Several image sets of the same prompts as labelled rows, ``ncol`` prompts per block: for each
    block, one row per entry of ``rows`` (e.g. {"generated": ..., "real": ...}), labelled at the left;
    ``titles`` (one per prompt) go above the block's first row only."""
    names = list(rows)
    n = len(rows[names[0]])
    ncol = max(1, min(ncol, n))
    images, tit, labels = [], [], []
    for start in range(0, n, ncol):
        idx = range(start, min(start + ncol, n))
        for j, name in enumerate(names):
            block = [rows[name][i] for i in idx]
            pad = ncol - len(block)
            images += block + [torch.full_like(block[0], 255)] * pad
            tit += [(titles[i] if titles and j == 0 else "") for i in idx] + [""] * pad
            labels.append(name)
    return image_grid(torch.stack(images), tit if titles else None, ncol=ncol, scale=scale, row_labels=labels, **kwargs)


def columns_grid(columns: dict[str, torch.Tensor | str | None], row_titles: Sequence[str] | None = None,
                 scale: float = 1.2, missing: str = "not run", label_width: int = 28):
    """One column per entry of ``columns`` (uint8 (N, 3, H, W) each, sizes may differ; ``None``: an empty
    column marked ``missing``; a string: an empty column marked with it), one row per image; ``row_titles``
    (e.g. the prompts) wrapped at the left."""
    names = list(columns)
    n = max((len(v) for v in columns.values() if isinstance(v, torch.Tensor)), default=len(row_titles or []))
    lw = (min(label_width, max((len(t) for t in row_titles), default=0)) * 0.55 * LABEL_FONT / 72 + 0.2) \
        if row_titles else 0.0
    header = max(wrap_title(k, _chars_per_line(scale, HEADER_FONT), 2).count("\n") + 1 for k in names)
    header_h = header * HEADER_FONT * 1.3 / 72 + 0.08
    fig = plt.figure(figsize=(scale * len(names) + lw, scale * n * 1.06 + header_h))
    grid = fig.add_gridspec(n, len(names), hspace=0.06, wspace=0.06, left=lw / (scale * len(names) + lw), right=1,
                            bottom=0, top=1 - header_h / (scale * n * 1.06 + header_h))
    for j, name in enumerate(names):
        col = columns[name]
        for i in range(n):
            ax = fig.add_subplot(grid[i, j])
            if isinstance(col, torch.Tensor):
                _show(ax, col[i] if i < len(col) else None)
            else:
                _show(ax, None, col if isinstance(col, str) else missing)
            if i == 0:
                ax.set_title(wrap_title(name, _chars_per_line(scale, HEADER_FONT), 2), fontsize=HEADER_FONT, pad=3)
            if j == 0 and row_titles and i < len(row_titles):
                ax.set_ylabel(wrap_title(row_titles[i], label_width), fontsize=LABEL_FONT, rotation=0, ha="right",
                              va="center", labelpad=4)
    return fig
