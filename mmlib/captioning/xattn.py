"""Cross-attention Transformer decoder captioner (rows 1–2 of the study's Tables 1–2).

A frozen image encoder gives a sequence of image tokens P (N, C) (a CNN grid flattened, or the
CLIP ViT token sequence); a linear map W_img brings them to the decoder width. A stack of pre-LN
Transformer decoder blocks then predicts the caption word by word. In every block the *text*
tokens are the queries and the *image* tokens the keys and values — eq. 1 of the study:

    CrossAttn = softmax(Q_text K_img^T / sqrt(d)) V_img                       (eq. 1)

(its section 1.3.2 says the opposite, image tokens as queries; a decoder that must emit one
distribution per text position needs text queries, so we follow eq. 1).

The decoder is nanoGPT-shaped (one file, shapes in comments) and implements the small step
protocol of ``mmlib.captioning.decoding`` (``start`` / ``step``) so greedy and beam search run with
a KV cache: per layer the self-attention keys/values grow by one position per step, and the
cross-attention keys/values of the image are computed once.
Refs: Vaswani et al. 2017 (https://arxiv.org/abs/1706.03762); Karpathy's nanoGPT.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class XAttnConfig:
    vocab_size: int
    d_image: int = 512        # encoder channels: 512 ResNet-18, 1280 EfficientNet-Lite0, 768 CLIP ViT-B/32
    n_image_tokens: int = 49  # 7×7 grid (ResNet-18 at 224 px), 50 for CLIP ViT-B/32 (CLS + 7×7)
    n_layer: int = 6
    n_head: int = 8
    n_embd: int = 512
    d_ff: int = 2048
    dropout: float = 0.1
    block_size: int = 40      # longest token sequence (BOS + words + EOS)
    tie_weights: bool = True  # output head shares the token embedding matrix
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def to_dict(self) -> dict:
        return asdict(self)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
              dropout: float, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """q (B, nh, T, hs), k/v (B, nh, S, hs), mask (T, S) bool (True = may attend) or None."""
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout), None
    att = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, nh, T, S)
    if mask is not None:
        att = att.masked_fill(~mask, float("-inf"))
    att = att.softmax(-1)
    return att @ v, att


def causal_mask(t: int, past: int, device) -> torch.Tensor | None:
    """(t, past + t) bool: new position i (absolute past + i) sees absolute positions <= past + i."""
    if t == 1:
        return None  # one new token attends to everything cached
    return torch.ones(t, past + t, dtype=torch.bool, device=device).tril(diagonal=past)


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention; ``kv`` given -> cross-attention onto it."""

    def __init__(self, cfg: XAttnConfig):
        super().__init__()
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.q = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.kv = nn.Linear(cfg.n_embd, 2 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        return x.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, v = self.kv(x).chunk(2, dim=-1)
        return self.heads(k), self.heads(v)

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, C = x.shape                                         # x (B, T, C) queries
        y, att = attention(self.heads(self.q(x)), k, v, mask, self.dropout if self.training else 0.0,
                           need_weights)                          # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_drop(self.proj(y)), att


class Block(nn.Module):
    """Pre-LN decoder block: causal self-attention, cross-attention (eq. 1), MLP."""

    def __init__(self, cfg: XAttnConfig):
        super().__init__()
        self.ln1, self.ln2, self.ln3 = (nn.LayerNorm(cfg.n_embd) for _ in range(3))
        self.self_attn = MultiHeadAttention(cfg)
        self.cross_attn = MultiHeadAttention(cfg)
        self.mlp = nn.Sequential(nn.Linear(cfg.n_embd, cfg.d_ff), nn.GELU(), nn.Linear(cfg.d_ff, cfg.n_embd),
                                 nn.Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor, cache: dict, need_weights: bool = False):
        """x (B, T, C) new text positions; cache holds this layer's self k/v (B, nh, past, hs) and the
        image k/v (B, nh, N, hs). Returns the new x, the updated cache and the cross-attention
        weights (B, nh, T, N) when asked."""
        h = self.ln1(x)
        k, v = self.self_attn.keys_values(h)
        if cache.get("k") is not None:
            k, v = torch.cat([cache["k"], k], 2), torch.cat([cache["v"], v], 2)  # (B, nh, past+T, hs)
        mask = causal_mask(x.size(1), k.size(2) - x.size(1), x.device)
        x = x + self.self_attn(h, k, v, mask)[0]
        y, att = self.cross_attn(self.ln2(x), cache["img_k"], cache["img_v"], None, need_weights)  # eq. 1
        x = x + y
        x = x + self.mlp(self.ln3(x))
        return x, {"k": k, "v": v, "img_k": cache["img_k"], "img_v": cache["img_v"]}, att


class XAttnCaptioner(nn.Module):
    """Image tokens (B, N, d_image) -> caption logits; the encoder is frozen and lives outside
    (its features are cached to disk), so this module holds only trainable weights."""

    def __init__(self, cfg: XAttnConfig):
        super().__init__()
        self.cfg = cfg
        self.bos_id, self.eos_id, self.pad_id = cfg.bos_id, cfg.eos_id, cfg.pad_id   # decoding protocol
        self.img_proj = nn.Linear(cfg.d_image, cfg.n_embd)                    # W_img of eq. 1
        self.img_pos = nn.Parameter(torch.zeros(1, cfg.n_image_tokens, cfg.n_embd))  # where in the grid
        self.img_ln = nn.LayerNorm(cfg.n_embd)
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.apply(self._init)
        if cfg.tie_weights:
            self.head.weight = self.tok_emb.weight
        for name, p in self.named_parameters():  # GPT-2 scaled init of residual projections
            if (name.endswith("attn.proj.weight")) or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))
        nn.init.normal_(self.img_pos, std=0.02)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    # --- step protocol (mmlib.captioning.decoding; bos_id / eos_id / pad_id are set in __init__) ---
    def start(self, image_tokens: torch.Tensor) -> dict:
        """image_tokens (B, N, d_image) -> empty cache with the image keys/values of every layer."""
        mem = self.img_ln(self.img_proj(image_tokens) + self.img_pos[:, :image_tokens.size(1)])  # (B, N, C)
        layers = []
        for blk in self.blocks:
            k, v = blk.cross_attn.keys_values(mem)  # (B, nh, N, hs), computed once per caption
            layers.append({"k": None, "v": None, "img_k": k, "img_v": v})
        return {"layers": layers, "pos": 0}

    def step(self, tokens: torch.Tensor, cache: dict, need_weights: bool = False):
        """tokens (B, T) new tokens -> logits (B, T, V) and the cache extended by T positions.
        With ``need_weights`` also returns the cross-attention weights per layer (B, nh, T, N)."""
        B, T = tokens.shape
        pos = cache["pos"]
        if pos + T > self.cfg.block_size:
            raise ValueError(f"sequence of {pos + T} tokens exceeds block_size {self.cfg.block_size}")
        x = self.drop(self.tok_emb(tokens) + self.pos_emb(torch.arange(pos, pos + T, device=tokens.device)))
        layers, atts = [], []
        for blk, c in zip(self.blocks, cache["layers"]):
            x, c, att = blk(x, c, need_weights)
            layers.append(c)
            atts.append(att)
        h = self.ln_f(x)
        if self.training:
            logits = self.head(h)  # (B, T, V)
        else:  # decoding: the EOS-or-word choice is made on fp32 logits (bf16 keeps ~3 significant digits)
            with torch.autocast(h.device.type, enabled=False):
                logits = self.head(h.to(self.head.weight.dtype))
        new = {"layers": layers, "pos": pos + T}
        return (logits, new, atts) if need_weights else (logits, new)

    # --- training ------------------------------------------------------------------------------
    def forward(self, image_tokens: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """image_tokens (B, N, d_image), tokens (B, T) -> logits (B, T, V) (teacher forcing)."""
        return self.step(tokens, self.start(image_tokens))[0]

    def loss(self, image_tokens: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token cross-entropy; tokens (B, T) = BOS w1 .. wn EOS PAD..; PAD targets ignored."""
        tokens = tokens[:, :int((tokens != self.cfg.pad_id).sum(1).max())]  # drop all-PAD columns (≈ half)
        logits = self(image_tokens, tokens[:, :-1])
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), tokens[:, 1:].reshape(-1),
                               ignore_index=self.cfg.pad_id)

    @torch.no_grad()
    def cross_attention_maps(self, image_tokens: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Cross-attention weights for each input position, averaged over heads and layers:
        image_tokens (B, N, d), tokens (B, T) -> (B, T, N). Row t is what the model looked at
        when predicting token t+1."""
        _, _, atts = self.step(tokens, self.start(image_tokens), need_weights=True)
        return torch.stack(atts).mean(dim=(0, 2))  # (L, B, nh, T, N) -> (B, T, N)


def captioner_loss(model: XAttnCaptioner, batch: dict) -> torch.Tensor:
    """``train.fit`` loss on a batch {"image": (B, N, d_image), "tokens": (B, T)}."""
    return model.loss(batch["image"].float(), batch["tokens"])
