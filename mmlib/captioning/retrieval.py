"""Nearest-neighbour retrieval baseline: caption a validation image with a caption of the training
image whose frozen-encoder feature is closest (cosine of mean-pooled tokens).

A captioner that cannot beat copying its nearest training neighbour's caption has learned nothing
beyond the encoder's similarity; Devlin et al. 2015 (https://arxiv.org/abs/1505.04467) showed such
baselines are strong on COCO. The caption returned is the one the decoder was trained on (the
first, in the study's single-caption strategy) unless ``consensus`` picks, among the five, the one
most similar (word-overlap F1) to the other four.
"""
from __future__ import annotations

from collections import Counter

import torch

from .encoders import pooled


def nearest(train_tokens: torch.Tensor, query_tokens: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """(N, T, C), (M, T, C) -> (M,) index of each query's nearest training image."""
    keys = pooled(train_tokens)                                                   # (N, C)
    q = pooled(query_tokens)                                                      # (M, C)
    return torch.cat([(q[i:i + batch_size] @ keys.t()).argmax(1) for i in range(0, len(q), batch_size)])


def _f1(a: list[str], b: list[str]) -> float:
    common = sum((Counter(a) & Counter(b)).values())
    return 0.0 if common == 0 else 2 * common / (len(a) + len(b))


def consensus_caption(captions: list[str]) -> str:
    """The caption with the highest mean word-overlap F1 to the other captions of its image."""
    toks = [c.lower().split() for c in captions]
    scores = [sum(_f1(t, u) for j, u in enumerate(toks) if j != i) for i, t in enumerate(toks)]
    return captions[max(range(len(captions)), key=scores.__getitem__)]


def retrieval_captions(train_items: list[tuple[str, list[str]]], train_tokens: torch.Tensor,
                       query_names: list[str], query_tokens: torch.Tensor,
                       consensus: bool = False) -> dict[str, str]:
    """{query image: caption of its nearest training image}."""
    idx = nearest(train_tokens, query_tokens).tolist()
    pick = consensus_caption if consensus else (lambda caps: caps[0])
    return {name: pick(train_items[j][1]) for name, j in zip(query_names, idx)}
