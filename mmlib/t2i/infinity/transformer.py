"""Infinity's autoregressive transformer over scales, with a bitwise (infinite-vocabulary) head.

Han et al. 2024, arXiv 2412.04431, sec. 3.2-3.3; the next-scale layout is VAR's (arXiv 2404.02905).
Eq. 3 of the study's report:  p(R_1..R_K) = prod_k p(R_k | R_1..R_{k-1}, Psi(t)).

Sequence layout (L = sum_k r_k^2 positions, one *block* per scale, r_1 = 1):

    block 0 : the start token, made from the pooled text embedding Psi(t)      -> predicts R_1
    block k : r_{k+1}^2 tokens, down(F_k, r_{k+1}) projected to the model width -> predicts R_{k+1}

Block k only carries information from R_1..R_k, so the block-causal mask lets a query of block k
attend to every key of blocks 0..k (its own block included: all its tokens are predicted in
parallel) and to nothing later. Text enters three ways, as in the paper: the start token,
cross-attention to the text encoder's token embeddings in every layer, and adaptive LayerNorm
(shift/scale/gate, zero-initialised as in DiT) from the pooled embedding. Classifier-free guidance
is learned by replacing the text with a learned null text for a fraction ``cond_drop`` of samples.

Head: ``bits`` independent logits per token (the infinite-vocabulary classifier, sec. 3.2), trained
with binary cross-entropy, instead of a 2^d-way softmax; ``head_cost`` gives both costs.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TransformerConfig:
    bits: int = 16                             # d, as in the tokenizer
    scales: tuple[int, ...] = (1, 2, 3, 4, 6, 8)
    d_text: int = 384                          # MiniLM width; 768 for flan-t5-base
    d_model: int = 256
    n_layer: int = 4
    n_head: int = 4
    mlp_ratio: float = 4.0
    cond_drop: float = 0.1                     # text dropout for classifier-free guidance
    head: str = "bitwise"                      # bitwise | softmax (the latter only for cost comparisons)

    def __post_init__(self):
        self.scales = tuple(self.scales)
        if self.scales[0] != 1:
            raise ValueError("the first scale must be 1x1: the start token predicts it")

    @property
    def seq_len(self) -> int:
        return sum(r * r for r in self.scales)

    def to_dict(self) -> dict:
        return asdict(self)


class Text(NamedTuple):
    tokens: torch.Tensor       # (B, T, d_text) frozen text-encoder token embeddings
    mask: torch.Tensor         # (B, T) bool, True for real tokens
    pooled: torch.Tensor       # (B, d_text) masked mean of the tokens


def block_levels(scales: tuple[int, ...]) -> torch.Tensor:
    """(L,) block index of every position: block k holds the r_{k+1}^2 positions predicting scale k+1."""
    return torch.cat([torch.full((r * r,), k) for k, r in enumerate(scales)])


def block_causal_mask(scales: tuple[int, ...]) -> torch.Tensor:
    """(L, L) bool, True where query i may attend to key j: level(j) <= level(i)."""
    lv = block_levels(scales)
    return lv[None, :] <= lv[:, None]


def head_cost(d_model: int, bits: int) -> dict[str, float]:
    """Parameters and multiply-adds per token of the output head, bitwise vs a 2^d-way softmax."""
    bitwise = d_model * bits + bits
    softmax = d_model * 2 ** bits + 2 ** bits
    return {"bits": bits, "vocabulary": 2 ** bits, "bitwise_params": bitwise, "softmax_params": softmax,
            "bitwise_macs_per_token": d_model * bits, "softmax_macs_per_token": d_model * 2 ** bits,
            "ratio": softmax / bitwise}


class Attention(nn.Module):
    """Multi-head attention; self-attention with an optional KV cache, or cross-attention to ``context``."""

    def __init__(self, d_model: int, n_head: int, d_context: int | None = None):
        super().__init__()
        self.n_head = n_head
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_context or d_model, 2 * d_model)
        self.proj = nn.Linear(d_model, d_model)

    def heads(self, x):                        # (B, T, C) -> (B, nh, T, hs)
        B, T, C = x.shape
        return x.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)

    def forward(self, x, context=None, mask=None, cache: dict | None = None):
        q = self.heads(self.q(x))
        k, v = map(self.heads, self.kv(x if context is None else context).chunk(2, -1))
        if cache is not None:                  # sampling: keys of earlier blocks are kept, not recomputed
            if "k" in cache:
                k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)
            cache["k"], cache["v"] = k, v
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)   # (B, nh, T, hs)
        return self.proj(y.transpose(1, 2).flatten(2))


def modulate(x, shift, scale):
    return x * (1 + scale) + shift


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        D = cfg.d_model
        self.ln1 = nn.LayerNorm(D, elementwise_affine=False)
        self.attn = Attention(D, cfg.n_head)
        self.ln_x = nn.LayerNorm(D)
        self.cross = Attention(D, cfg.n_head, cfg.d_text)
        self.ln2 = nn.LayerNorm(D, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(D, int(D * cfg.mlp_ratio)), nn.GELU(approximate="tanh"),
                                 nn.Linear(int(D * cfg.mlp_ratio), D))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * D))       # adaptive LayerNorm from pooled text
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x, cond, text: Text, mask=None, cache=None):
        # x (B, T, D), cond (B, D)
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(cond)[:, None].chunk(6, -1)
        x = x + g1 * self.attn(modulate(self.ln1(x), sh1, sc1), mask=mask, cache=cache)
        x = x + self.cross(self.ln_x(x), context=text.tokens, mask=text.mask[:, None, None, :])
        return x + g2 * self.mlp(modulate(self.ln2(x), sh2, sc2))


class ScaleTransformer(nn.Module):
    """``forward(inputs, text) -> logits (B, L, bits)``: every scale's bits in one teacher-forced pass."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        D, K = cfg.d_model, len(cfg.scales)
        self.text_pool = nn.Sequential(nn.Linear(cfg.d_text, D), nn.SiLU(), nn.Linear(D, D))
        self.start = nn.Linear(cfg.d_text, D)                   # start token from Psi(t)
        self.null_tokens = nn.Parameter(torch.randn(1, cfg.d_text) * 0.02)   # the "empty" text of CFG
        self.null_pooled = nn.Parameter(torch.randn(cfg.d_text) * 0.02)
        self.word_embed = nn.Linear(cfg.bits, D)                # down(F_k) features -> width
        self.pos = nn.Parameter(torch.randn(cfg.seq_len, D) * 0.02)
        self.level_embed = nn.Embedding(K, D)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(D, elementwise_affine=False)
        self.ada_f = nn.Sequential(nn.SiLU(), nn.Linear(D, 2 * D))
        self.head = nn.Linear(D, cfg.bits if cfg.head == "bitwise" else 2 ** cfg.bits)
        self.register_buffer("mask", block_causal_mask(cfg.scales), persistent=False)
        self.register_buffer("levels", block_levels(cfg.scales), persistent=False)
        starts = torch.tensor([0] + [r * r for r in cfg.scales]).cumsum(0)
        self.bounds = [(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]

    def drop_text(self, text: Text, drop: torch.Tensor) -> Text:
        """Replace the text of samples where ``drop`` (B,) is True by the learned null text."""
        d = drop[:, None, None]
        tokens = torch.where(d, self.null_tokens.to(text.tokens.dtype).expand_as(text.tokens), text.tokens)
        first = torch.zeros_like(text.mask)
        first[:, 0] = True
        mask = torch.where(drop[:, None], first, text.mask)
        pooled = torch.where(drop[:, None], self.null_pooled.to(text.pooled.dtype), text.pooled)
        return Text(tokens, mask, pooled)

    def embed(self, k: int, x: torch.Tensor | None, text: Text) -> torch.Tensor:
        """Tokens of block k: (B, r_{k+1}^2, D). ``x`` (B, d, r, r) is down(F_k, r_{k+1}); None for k = 0."""
        a, b = self.bounds[k]
        h = self.start(text.pooled)[:, None] if k == 0 else self.word_embed(x.flatten(2).transpose(1, 2))
        return h + self.pos[a:b] + self.level_embed.weight[k]

    def logits(self, h: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada_f(cond)[:, None].chunk(2, -1)
        return self.head(modulate(self.ln_f(h), shift, scale))

    def forward(self, inputs: list[torch.Tensor], text: Text) -> torch.Tensor:
        # inputs: the first j <= K-1 tensors (B, d, r_{k+1}, r_{k+1}); returns (B, T, bits), T = positions of blocks 0..j
        h = torch.cat([self.embed(0, None, text)] + [self.embed(k + 1, x, text) for k, x in enumerate(inputs)], 1)
        cond, T = self.text_pool(text.pooled), h.shape[1]
        for blk in self.blocks:
            h = blk(h, cond, text, mask=self.mask[:T, :T])
        return self.logits(h, cond)

    def step(self, k: int, x: torch.Tensor | None, text: Text, caches: list[dict]) -> torch.Tensor:
        """Logits of block k only, given earlier blocks in ``caches`` (one dict per layer): (B, r^2, bits)."""
        h, cond = self.embed(k, x, text), self.text_pool(text.pooled)
        for blk, cache in zip(self.blocks, caches):
            h = blk(h, cond, text, cache=cache)    # own block + all cached earlier blocks: block-causal
        return self.logits(h, cond)


def flatten_bits(bits: list[torch.Tensor]) -> torch.Tensor:
    """K tensors (B, d, r, r) -> (B, L, d) in the sequence order."""
    return torch.cat([b.flatten(2).transpose(1, 2) for b in bits], 1)


class ARLoss:
    """``train.fit`` loss for the transformer; the frozen quantizer re-quantizes features every step.

    batch: ``feature`` (B, d, h, w) encoder outputs, ``text`` (B, T, d_text), ``text_mask`` (B, T),
    ``pooled`` (B, d_text). ``flip_prob`` is bitwise self-correction (0 disables it).
    """

    def __init__(self, quantizer: nn.Module, flip_prob: float):
        self.quantizer, self.flip_prob = quantizer, flip_prob

    def __call__(self, model: ScaleTransformer, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.no_grad():
            q = self.quantizer(batch["feature"].float(), flip_prob=self.flip_prob)
        text = Text(batch["text"].float(), batch["text_mask"].bool(), batch["pooled"].float())
        drop = torch.rand(len(text.pooled)) < model.cfg.cond_drop
        logits = model([x.to(text.tokens.dtype) for x in q.inputs], model.drop_text(text, drop)).float()
        target = flatten_bits(q.bits).float()
        loss = F.binary_cross_entropy_with_logits(logits, target)
        acc = ((logits > 0).float() == target).float().mean()
        return loss, {"bit_acc": acc.detach()}


@torch.no_grad()
def bit_accuracy_per_scale(model: ScaleTransformer, quantizer: nn.Module, data: dict,
                           batch_size: int = 256) -> list[float]:
    """Teacher-forced bit accuracy of every scale on clean (unflipped) inputs."""
    model.eval()
    correct = torch.zeros(len(model.cfg.scales))
    n = len(data["feature"])
    for i in range(0, n, batch_size):
        q = quantizer(data["feature"][i:i + batch_size].float())
        text = Text(data["text"][i:i + batch_size].float(), data["text_mask"][i:i + batch_size].bool(),
                    data["pooled"][i:i + batch_size].float())
        ok = ((model(q.inputs, text) > 0).long() == flatten_bits(q.bits)).float()   # (B, L, d)
        for k, (a, b) in enumerate(model.bounds):
            correct[k] += ok[:, a:b].mean((1, 2)).sum()
    return (correct / n).tolist()


def time_heads(d_model: int, bits: int, n_tokens: int = 2048, repeats: int = 3) -> dict[str, float]:
    """Measured seconds of forward+backward of both heads on ``n_tokens`` hidden states (same loss shape)."""
    h = torch.randn(n_tokens, d_model, requires_grad=True)
    target_bits = torch.randint(0, 2, (n_tokens, bits)).float()
    target_index = (target_bits.long() << torch.arange(bits)).sum(1)      # the same code as one class of 2^d
    out = {}
    for name, head, loss in (
            ("bitwise", nn.Linear(d_model, bits), lambda z: F.binary_cross_entropy_with_logits(z, target_bits)),
            ("softmax", nn.Linear(d_model, 2 ** bits), lambda z: F.cross_entropy(z, target_index))):
        loss(head(h)).backward()                                              # warm-up
        t0 = time.perf_counter()
        for _ in range(repeats):
            loss(head(h)).backward()
        out[f"{name}_seconds"] = (time.perf_counter() - t0) / repeats
    return out
