"""Retrieval baselines: caption a validation image with a training caption chosen by image similarity
(cosine of mean-pooled frozen-encoder tokens).

- nearest neighbour: the caption the decoder was trained on (the first, in the study's
  single-caption strategy) of the single closest training image;
- consensus (Devlin et al. 2015, https://arxiv.org/abs/1505.04467): the captions of the ``k``
  closest training images are candidates, and the one most similar to the others (mean word-overlap
  F1, standing in for the paper's BLEU/CIDEr between candidates) is returned -- the caption the
  neighbourhood agrees on. Devlin et al. showed it is strong on COCO.

A captioner that cannot beat copying from its neighbours has learned nothing beyond the encoder's
similarity.
"""
from __future__ import annotations

from collections import Counter

import torch

from .encoders import pooled


def nearest(train_tokens: torch.Tensor, query_tokens: torch.Tensor, k: int = 1, batch_size: int = 1024) -> torch.Tensor:
    """(N, T, C), (M, T, C) -> (M, k) indices of each query's k nearest training images, closest first
    ((M,) when k = 1)."""
    keys = pooled(train_tokens)                                                   # (N, C)
    q = pooled(query_tokens)                                                      # (M, C)
    top = torch.cat([(q[i:i + batch_size] @ keys.t()).topk(k, dim=1).indices for i in range(0, len(q), batch_size)])
    return top[:, 0] if k == 1 else top


def _f1(a: list[str], b: list[str]) -> float:
    common = sum((Counter(a) & Counter(b)).values())
    return 0.0 if common == 0 else 2 * common / (len(a) + len(b))


def consensus_caption(captions: list[str]) -> str:
    """The caption with the highest mean word-overlap F1 to the other captions of its image."""
    toks = [c.lower().split() for c in captions]
    scores = [sum(_f1(t, u) for j, u in enumerate(toks) if j != i) for i, t in enumerate(toks)]
    return captions[max(range(len(captions)), key=scores.__getitem__)]


def retrieval_captions(train_items: list[tuple[str, list[str]]], train_tokens: torch.Tensor,
                       query_names: list[str], query_tokens: torch.Tensor, consensus_k: int = 0) -> dict[str, str]:
    """{query image: caption}: the first caption of its nearest training image, or (``consensus_k`` > 0)
    the consensus caption of the captions of its ``consensus_k`` nearest training images."""
    if consensus_k <= 0:
        idx = nearest(train_tokens, query_tokens).tolist()
        return {name: train_items[j][1][0] for name, j in zip(query_names, idx)}
    idx = nearest(train_tokens, query_tokens, k=consensus_k).tolist()
    return {name: consensus_caption([c for j in js for c in train_items[j][1]]) for name, js in zip(query_names, idx)}
