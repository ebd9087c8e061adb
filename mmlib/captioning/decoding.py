"""Batched greedy and beam-search decoding with a KV cache, stopping at EOS.

Any autoregressive text decoder conditioned on an image memory can use these functions by
implementing the small ``StepModel`` protocol:

    start(memory)          -> cache            # memory (B, N, d); cache: nested dict/list of tensors,
                                                # batch first (ints/None allowed as leaves)
    step(tokens, cache)    -> (logits, cache)  # tokens (B, T) new tokens -> logits (B, T, V)
    bos_id, eos_id, pad_id                      # ints

``XAttnCaptioner`` implements it (cache = per-layer self-attention K/V + image K/V computed once);
the Q-former's [DEC] text branch (04) can implement it the same way. ``Recompute(model)`` wraps
any StepModel into the naive decoder that re-runs the whole prefix at every step (what the
study's loop did); the benchmark compares the two, and the tests check that both give exactly the
same tokens.

The study's greedy loop kept generating past EOS; here a finished sequence emits PAD from then on
and the loop ends as soon as every sequence (every beam) has finished.
"""
from __future__ import annotations

from typing import Any, Protocol

import torch
import torch.nn.functional as F

from .. import device


class StepModel(Protocol):
    bos_id: int
    eos_id: int
    pad_id: int

    def start(self, memory: torch.Tensor) -> Any: ...

    def step(self, tokens: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]: ...


def reorder_cache(cache: Any, idx: torch.Tensor) -> Any:
    """Select rows ``idx`` (batch dim 0) of every tensor in a nested cache (beam reordering)."""
    if isinstance(cache, torch.Tensor):
        return cache.index_select(0, idx)
    if isinstance(cache, dict):
        return {k: reorder_cache(v, idx) for k, v in cache.items()}
    if isinstance(cache, (list, tuple)):
        return type(cache)(reorder_cache(v, idx) for v in cache)
    return cache  # ints, None


class Recompute:
    """Naive decoding: no cache, the full prefix (and the image memory) is re-encoded every step."""

    def __init__(self, model: StepModel):
        self.model = model
        self.bos_id, self.eos_id, self.pad_id = model.bos_id, model.eos_id, model.pad_id

    def start(self, memory: torch.Tensor) -> dict:
        return {"memory": memory, "prefix": memory.new_zeros(memory.size(0), 0, dtype=torch.long)}

    def step(self, tokens: torch.Tensor, cache: dict) -> tuple[torch.Tensor, dict]:
        prefix = torch.cat([cache["prefix"], tokens], 1)                          # (B, t)
        logits, _ = self.model.step(prefix, self.model.start(cache["memory"]))   # (B, t, V)
        return logits[:, -tokens.size(1):], {"memory": cache["memory"], "prefix": prefix}


def _log_probs(logits: torch.Tensor, model: StepModel) -> torch.Tensor:
    """(B, V) log-probabilities of the next token; BOS and PAD are never generated."""
    logp = F.log_softmax(logits.float(), dim=-1)
    logp[:, [model.bos_id, model.pad_id]] = float("-inf")
    return logp


@torch.no_grad()
def greedy(model: StepModel, memory: torch.Tensor, max_len: int = 30) -> torch.Tensor:
    """memory (B, N, d) -> tokens (B, L<=max_len): words, then EOS, then PAD."""
    B = memory.size(0)
    cache = model.start(memory)
    cur = torch.full((B, 1), model.bos_id, dtype=torch.long, device=memory.device)
    done = torch.zeros(B, dtype=torch.bool, device=memory.device)
    out = []
    for _ in range(max_len):
        logits, cache = model.step(cur, cache)
        nxt = _log_probs(logits[:, -1], model).argmax(-1)                  # (B,)
        nxt = torch.where(done, torch.full_like(nxt, model.pad_id), nxt)
        out.append(nxt)
        done |= nxt == model.eos_id
        if done.all():
            break
        cur = nxt[:, None]
    return torch.stack(out, 1)


@torch.no_grad()
def beam_search(model: StepModel, memory: torch.Tensor, beam: int = 3, max_len: int = 30,
                length_penalty: float = 1.0) -> torch.Tensor:
    """memory (B, N, d) -> best beam's tokens (B, L): words, EOS, PAD.

    All B×beam hypotheses advance together in one batch; a finished hypothesis is extended only
    with PAD at zero cost, so it keeps its score and its slot. The winner maximises
    log p / length**length_penalty (length counts words + EOS)."""
    B, k = memory.size(0), beam
    dev = memory.device
    cache = reorder_cache(model.start(memory), torch.arange(B, device=dev).repeat_interleave(k))
    scores = torch.full((B, k), float("-inf"), device=dev)
    scores[:, 0] = 0.0                                   # one live hypothesis at the start: no duplicates
    seqs = torch.zeros(B * k, 0, dtype=torch.long, device=dev)
    done = torch.zeros(B * k, dtype=torch.bool, device=dev)
    cur = torch.full((B * k, 1), model.bos_id, dtype=torch.long, device=dev)
    for _ in range(max_len):
        logits, cache = model.step(cur, cache)
        logp = _log_probs(logits[:, -1], model)          # (B*k, V)
        V = logp.size(-1)
        logp[done] = float("-inf")
        logp[done, model.pad_id] = 0.0
        cand = (scores.view(-1, 1) + logp).view(B, k * V)
        scores, top = cand.topk(k, dim=-1)               # (B, k)
        src = (torch.arange(B, device=dev)[:, None] * k + top // V).view(-1)  # parent hypothesis rows
        tok = (top % V).view(-1)
        seqs = torch.cat([seqs[src], tok[:, None]], 1)
        done = done[src] | (tok == model.eos_id)
        if done.all():
            break
        cache = reorder_cache(cache, src)
        cur = tok[:, None]
    lengths = (seqs != model.pad_id).sum(-1).clamp(min=1).view(B, k).float()
    best = (scores / lengths ** length_penalty).argmax(-1)  # (B,)
    out = seqs.view(B, k, -1)[torch.arange(B, device=dev), best]              # (B, L)
    return out[:, :int((out != model.pad_id).sum(-1).max().clamp(min=1))]  # drop all-PAD columns


def generate(model: StepModel, memory: torch.Tensor, method: str = "beam", beam: int = 3,
             max_len: int = 30, batch_size: int = 256) -> list[list[int]]:
    """Decode a whole feature tensor in batches -> token ids per image (EOS and PAD removed)."""
    out: list[list[int]] = []
    for i in range(0, memory.size(0), batch_size):
        m = memory[i:i + batch_size]
        m = device.as_compute(m)                                   # features are cached in fp16
        with device.autocast(m.device, enabled=m.dtype == torch.float32):   # fp64 (exactness tests) runs as is
            toks = greedy(model, m, max_len) if method == "greedy" else beam_search(model, m, beam, max_len)
        out += strip(toks, model.eos_id, model.pad_id)
    return out


def truncation_rate(ids: list[list[int]], max_len: int) -> float:
    """Share of decoded captions (``generate``'s output, EOS removed) that ran ``max_len`` steps without
    emitting EOS: a rate, so that one runaway caption among thousands does not fail a run."""
    return sum(len(i) >= max_len for i in ids) / max(1, len(ids))


def strip(tokens: torch.Tensor, eos_id: int, pad_id: int) -> list[list[int]]:
    """(B, L) -> lists of ids up to (not including) the first EOS."""
    res = []
    for row in tokens.tolist():
        words = []
        for t in row:
            if t in (eos_id, pad_id):
                break
            words.append(t)
        res.append(words)
    return res
