"""The Infinity recipe for one profile: data -> tokenizer -> transformer -> samples (what 09 calls).

Stage 1 trains the bitwise tokenizer on the train split's images; stage 2 freezes it, stores the
encoder's continuous features f of every training image once (the quantizer re-runs on them each
step, so bitwise self-correction draws fresh flips), encodes every caption once with the frozen text
encoder, and trains the scale transformer. Both stages use ``mmlib.train.fit`` (cached by config).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ... import ckpt, profiles, train
from ... import data as mdata
from ...images import to_signed, to_uint8
from ...paths import run_dir
from . import text as textenc
from .sampling import SamplingConfig, generate
from .tokenizer import BitwiseTokenizer, TokenizerConfig, tokenizer_loss
from .transformer import ARLoss, ScaleTransformer, Text, TransformerConfig

NOTEBOOK = "09"


@dataclass(frozen=True)
class InfinitySettings:
    """Profile section ``infinity`` (09): tokenizer, scale transformer, their runs, sampling, speed test."""
    tokenizer: TokenizerConfig
    transformer: TransformerConfig
    tokenizer_train: train.TrainConfig
    transformer_train: train.TrainConfig
    sampling: SamplingConfig
    flip_prob: float = 0.1             # bitwise self-correction (0 disables)
    text_encoder: str | None = None    # hub name / folder of a T5 encoder; None: mmlib.pretrained's
    max_tokens: int = 24
    n_train: int | None = None         # cap on training images (None: the whole train split)
    captions_per_image: int = 5        # the first k captions of each image are encoded and trained on
    sample_batch: int = 32
    speed_batch: int = 8               # equal batch for the 06/07/09 speed comparison
    speed_diffusion_steps: int | None = None   # override 06/07's step count when timing (smoke only)


    def __post_init__(self):   # the transformer predicts the tokenizer's bits at the tokenizer's scales
        object.__setattr__(self, "transformer", dataclasses.replace(self.transformer, bits=self.tokenizer.bits,
                                                                    scales=self.tokenizer.scales))


def settings(profile: str, **overrides) -> InfinitySettings:
    """The ``infinity`` section of ``profile``; ``overrides`` replace top-level fields (e.g. ``flip_prob``)."""
    return dataclasses.replace(profiles.get(profile).infinity, **overrides)


@dataclass
class TrainingSet:
    folder: Path
    names: list[str]
    images: torch.Tensor               # uint8 (N, 3, r, r)
    captions: list[list[str]]          # 5 per image


def training_set(profile: str, s: InfinitySettings) -> TrainingSet:
    split = mdata.load(profile)
    items = split.train[:s.n_train] if s.n_train else split.train
    names = [n for n, _ in items]
    return TrainingSet(split.folder, names, mdata.images(split.folder, names, s.tokenizer.image_size),
                       [list(c)[:s.captions_per_image] for _, c in items])


def _fit(model, loss_fn, batches, cfg: train.TrainConfig, out_dir: Path, key: dict, retrain: bool,
         stop_after: int | None = None, progress: bool = True) -> train.FitResult:
    return train.fit(model, loss_fn, batches, cfg, out_dir, key, stop_after=stop_after, progress=progress,
                     restart=retrain)


def train_tokenizer(profile: str, s: InfinitySettings, ts: TrainingSet, retrain: bool = False,
                    progress: bool = True) -> tuple[BitwiseTokenizer, train.FitResult]:
    torch.manual_seed(s.tokenizer_train.seed)
    model = BitwiseTokenizer(s.tokenizer)
    key = {"stage": "tokenizer", "config": s.tokenizer.to_dict(), "data": str(ts.folder), "n": len(ts.names)}
    fit = _fit(model, tokenizer_loss, {"image": ts.images}, s.tokenizer_train, run_dir(profile, NOTEBOOK), key,
               retrain, progress=progress)
    model.run_name = fit.train_dir.name
    return model.eval().requires_grad_(False), fit


@torch.no_grad()
def encoder_features(tokenizer: BitwiseTokenizer, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The encoder's continuous features f (N, d, h, w) of uint8 images, before quantization."""
    return torch.cat([tokenizer.encoder(to_signed(images[i:i + batch_size])).float()
                      for i in range(0, len(images), batch_size)])


@dataclass
class TextBank:
    """Frozen text features of unique captions; ``ids`` (N, 5) maps each training image to its captions."""
    text: Text
    ids: torch.Tensor
    captions: list[str]


def text_bank(profile: str, encoder: textenc.TextEncoder, captions: Sequence[Sequence[str]]) -> TextBank:
    unique = sorted({c for cs in captions for c in cs})
    index = {c: i for i, c in enumerate(unique)}
    k = min(len(cs) for cs in captions)
    ids = torch.tensor([[index[c] for c in cs[:k]] for cs in captions])
    t = textenc.encode_cached(encoder, unique, run_dir(profile, NOTEBOOK) / "text")
    return TextBank(Text(t.tokens.half(), t.mask, t.pooled.half()), ids, unique)


class BankLoss(ARLoss):
    """``ARLoss`` reading one of each image's captions (random per step) from a ``TextBank``."""

    def __init__(self, quantizer, bank: TextBank, flip_prob: float):
        super().__init__(quantizer, flip_prob)
        self.bank = bank

    def __call__(self, model, batch):
        ids = batch["cap"][torch.arange(len(batch["cap"])), torch.randint(0, batch["cap"].shape[1], (len(batch["cap"]),))]
        t = self.bank.text
        return super().__call__(model, {"feature": batch["feature"], "text": t.tokens[ids],
                                        "text_mask": t.mask[ids], "pooled": t.pooled[ids]})


def probe_batch(features: torch.Tensor, bank: TextBank, n: int = 256) -> dict:
    """The first ``n`` training images with their first captions, as ``bit_accuracy_per_scale`` reads them."""
    ids, t = bank.ids[:n, 0], bank.text
    return {"feature": features[:n], "text": t.tokens[ids], "text_mask": t.mask[ids], "pooled": t.pooled[ids]}


def train_transformer(profile: str, s: InfinitySettings, tokenizer: BitwiseTokenizer, features: torch.Tensor,
                      bank: TextBank, flip_prob: float | None = None, retrain: bool = False,
                      stop_after: int | None = None, progress: bool = True
                      ) -> tuple[ScaleTransformer, train.FitResult]:
    """Stage 2; ``flip_prob`` overrides the profile's (0 for the no-self-correction ablation)."""
    p = s.flip_prob if flip_prob is None else flip_prob
    torch.manual_seed(s.transformer_train.seed)
    model = ScaleTransformer(s.transformer)
    key = {"stage": "transformer", "config": s.transformer.to_dict(), "flip_prob": p,
           "tokenizer": getattr(tokenizer, "run_name", None),      # the tokenizer's training folder
           "captions": ckpt.config_key({"c": bank.captions}), "n": len(features)}
    fit = _fit(model, BankLoss(tokenizer.quantizer, bank, p), {"feature": features, "cap": bank.ids},
               s.transformer_train, run_dir(profile, NOTEBOOK), key, retrain, stop_after, progress)
    if fit.ema is not None:
        train.load_ema(model, fit.ema)
    return model.eval().requires_grad_(False), fit


def sample_images(model: ScaleTransformer, tokenizer: BitwiseTokenizer, text: Text, sc: SamplingConfig,
                  batch_size: int = 32, seed: int = 0) -> torch.Tensor:
    """One image per row of ``text``: uint8 (N, 3, H, W); its own generator, the training RNG untouched."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(text.pooled), batch_size):
        part = Text(*(x[i:i + batch_size].float() if x.is_floating_point() else x[i:i + batch_size] for x in text))
        out.append(to_uint8(generate(model, tokenizer, part, sc, gen)))
    return torch.cat(out)
