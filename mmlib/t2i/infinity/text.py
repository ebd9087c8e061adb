"""The frozen text encoder Psi(t) of Infinity (eq. 3), and its embeddings computed once per caption.

Infinity conditions on flan-t5 (Han et al. 2024, arXiv 2412.04431, sec. 4.1), and so does ``paper``
(``google/flan-t5-base``, encoder only). ``smoke``/``cpu`` use the offline all-MiniLM-L6-v2 from
``mmlib.pretrained.text_encoder``. Either way the encoder is frozen and each caption is encoded once;
the transformer reads the token states (cross-attention) and their masked mean (start token and
adaptive LayerNorm).
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from transformers import AutoTokenizer, T5EncoderModel

from ... import ckpt, device, pretrained
from .transformer import Text


class TextEncoder:
    """Frozen tokenizer + encoder: ``encoder(captions) -> Text`` (tokens (N, T, D), mask, pooled)."""

    def __init__(self, tokenizer, model: nn.Module, max_tokens: int = 32, name: str = ""):
        self.tokenizer, self.model, self.max_tokens, self.name = tokenizer, model.eval(), max_tokens, name
        self.model.requires_grad_(False)

    @property
    def dim(self) -> int:
        cfg = self.model.config
        return getattr(cfg, "hidden_size", None) or cfg.d_model

    @torch.no_grad()
    def __call__(self, captions: Sequence[str], batch_size: int = 256) -> Text:
        toks, masks = [], []
        for i in range(0, len(captions), batch_size):
            enc = self.tokenizer(list(captions[i:i + batch_size]), padding="max_length", truncation=True,
                                 max_length=self.max_tokens, return_tensors="pt")
            with device.autocast(next(self.model.parameters()).device):
                out = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            toks.append(out.last_hidden_state.float())
            masks.append(enc["attention_mask"].bool())
        tokens, mask = torch.cat(toks), torch.cat(masks)
        return Text(tokens, mask, pool(tokens, mask))


def pool(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over tokens: (N, T, D), (N, T) -> (N, D)."""
    m = mask.unsqueeze(-1).to(tokens.dtype)
    return (tokens * m).sum(1) / m.sum(1).clamp_min(1)


def t5_encoder(name_or_path: str, max_tokens: int = 32) -> TextEncoder:
    """flan-t5's encoder (hub name in ``paper``, read through ``pretrained.hub_source``, or any folder
    written by ``save_pretrained``)."""
    if not Path(name_or_path).is_dir():
        name_or_path = pretrained.hub_source(name_or_path)
    tok = AutoTokenizer.from_pretrained(name_or_path)
    return TextEncoder(tok, T5EncoderModel.from_pretrained(name_or_path), max_tokens, name=str(name_or_path))


def for_profile(profile: str, name: str | None = None, max_tokens: int = 32) -> TextEncoder:
    """``name`` set (the profile's ``text_encoder``): a T5 encoder; None: ``mmlib.pretrained``'s encoder."""
    if name:
        return t5_encoder(name, max_tokens)
    tok, model = pretrained.text_encoder(profile)
    return TextEncoder(tok, model, max_tokens, name=f"pretrained.text_encoder({profile})")


def encode_cached(encoder: TextEncoder, captions: Sequence[str], cache_dir: Path) -> Text:
    """Encode ``captions`` once; cached as fp16 under ``cache_dir`` keyed by encoder and captions."""
    key = hashlib.sha256(("\n".join(captions) + f"|{encoder.name}|{encoder.max_tokens}|{device.precision()}")
                         .encode()).hexdigest()[:12]

    def compute() -> dict[str, torch.Tensor]:
        t = encoder(captions)
        return {"tokens": t.tokens.half(), "mask": t.mask, "pooled": t.pooled.half()}

    d, _ = ckpt.cached(Path(cache_dir) / f"text-{key}.safetensors", compute)   # a miss returns what a hit reads
    return Text(d["tokens"].float(), d["mask"], d["pooled"].float())
