"""The steps of notebooks 02 and 03, as short calls: features -> vocabulary -> train -> decode ->
score -> tables and figures. Both notebooks run the same pipeline; only the frozen encoder differs
(``kind="cnn"`` or ``kind="clip"``).
"""
from __future__ import annotations

import hashlib
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from .. import data, paths, profiles, results, train
from ..data.flickr8k import find_layout
from ..eval import captions as metrics
from ..nets import count_parameters
from . import decoding, encoders
from .clip_pretrain import HubCLIPSettings, WorldCLIPSettings, clip_dir, clip_tokens_from_grid
from .retrieval import retrieval_captions
from .vocab import Vocab
from .xattn import XAttnCaptioner, XAttnConfig

NOTEBOOK = {"cnn": "02", "clip": "03"}
SECTION = {"cnn": "caption_cnn", "clip": "caption_clip"}
# the study's Table 2 rows 1-2 (real Flickr8k, seed-mode BLEU) and Table 1 rows 1-2
STUDY_BLEU = {"cnn": (22.7, 13.9, 8.7, 5.2), "clip": (23.3, 15.5, 10.2, 6.2)}
STUDY_PARAMS = {"cnn": ("ResNet-18", 512, "34.2M", "21.5M"), "clip": ("CLIP (ViT-B/32)", 768, "108M", "21.5M")}


@dataclass(frozen=True)
class CaptionSettings:
    """Profile sections ``caption_cnn`` (02) and ``caption_clip`` (03): the decoder and its training run."""
    image_size: int              # encoder input size
    n_layer: int                 # decoder: layers, heads, width, feed-forward width, dropout
    n_head: int
    n_embd: int
    d_ff: int
    dropout: float
    steps: int                   # train.fit: steps × batch_size, peak lr, linear warm-up
    batch_size: int
    lr: float
    warmup: int
    max_len: int                 # longest token sequence (BOS + words + EOS)
    beam: int                    # beam width of the reported captions
    all_captions: bool           # False: the study's first-caption-only strategy
    clip: WorldCLIPSettings | HubCLIPSettings | None = None   # 03 only: the CLIP it pretrains or loads


@dataclass
class Features:
    split: data.Split
    train: torch.Tensor         # (N_train, T, C) float16 image tokens
    val: torch.Tensor           # (N_val, T, C)
    encoder: str                # encoder name for tables
    encoder_params: int         # parameters of the frozen encoder (all frozen)
    seconds: float              # spent encoding now (0.0 when read from the cache)
    key: dict


def settings(profile: str, kind: str) -> CaptionSettings:
    return getattr(profiles.get(profile), SECTION[kind])


def _file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:16]


def image_encoder(profile: str, kind: str):
    """The frozen encoder of a notebook and a fingerprint of its weights."""
    hub = profiles.get(profile).weights == "hub"
    if kind == "cnn":
        enc = encoders.cnn_encoder(profile)
        return enc, {"encoder": enc.name, "profile_weights": "paper" if hub else "offline"}
    s = settings(profile, kind)
    if hub:
        enc = encoders.clip_encoder(profile, pretrained=s.clip.pretrained, model_name=s.clip.model_name)
        return enc, {"encoder": enc.name}
    enc = encoders.clip_encoder(profile)
    return enc, {"encoder": enc.name, "weights": _file_digest(clip_dir(profile) / "model.safetensors")}


def features(profile: str, kind: str) -> Features:
    """Frozen-encoder tokens of every train and val image, computed once (cached on disk).

    The world CLIP (``kind="clip"`` in smoke/cpu) is the CNN of ``kind="cnn"`` plus a Transformer, so
    its tokens are computed from the CNN grid cached by notebook 02: no image is encoded twice."""
    if kind == "clip" and profiles.get(profile).weights == "offline":
        return _world_clip_features(profile)
    s = settings(profile, kind)
    split = data.load(profile)
    names = [n for n, _ in split.train] + [n for n, _ in split.val]
    enc, fingerprint = image_encoder(profile, kind)
    key = {**fingerprint, "folder": str(split.folder), "size": s.image_size,
           "names": hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]}
    cache = paths.run_dir(profile, NOTEBOOK[kind]) / "features"
    tokens, seconds = encoders.cached_features(enc, lambda: data.images(split.folder, names, s.image_size),
                                               cache, key, batch_size=64)
    n = len(split.train)
    return Features(split, tokens[:n], tokens[n:], enc.name, count_parameters(enc)[0], seconds, key)


def _world_clip_features(profile: str) -> Features:
    """The world CLIP's tokens from notebook 02's cached CNN grid (its image tower is that CNN plus a
    Transformer), cached in ``runs/<profile>/03/features/``."""
    cnn = features(profile, "cnn")
    enc, fingerprint = image_encoder(profile, "clip")
    key = {**fingerprint, "grid": cnn.key}
    tokens, seconds = encoders.cached_tokens(paths.run_dir(profile, "03") / "features", key,
                                             lambda: clip_tokens_from_grid(enc.visual, torch.cat([cnn.train, cnn.val])))
    seconds = seconds and seconds + cnn.seconds         # a cache hit costs nothing
    n = len(cnn.split.train)
    return Features(cnn.split, tokens[:n], tokens[n:], enc.name, count_parameters(enc)[0], seconds, key)


def build_vocab(split: data.Split, all_captions: bool) -> Vocab:
    caps = [c for _, cs in split.train for c in (cs if all_captions else cs[:1])]
    return Vocab.build(caps)


def decoder_config(s, vocab_size: int, d_image: int, n_image_tokens: int) -> XAttnConfig:
    return XAttnConfig(vocab_size=vocab_size, d_image=d_image, n_image_tokens=n_image_tokens, n_layer=s.n_layer,
                       n_head=s.n_head, n_embd=s.n_embd, d_ff=s.d_ff, dropout=s.dropout, block_size=s.max_len)


def training_pairs(split: data.Split, vocab: Vocab, max_len: int, all_captions: bool) -> dict[str, torch.Tensor]:
    """{"idx": (M,) training-image index, "tokens": (M, max_len)}; M = N (first caption) or 5N."""
    per = 5 if all_captions else 1
    caps = [c for _, cs in split.train for c in cs[:per]]
    idx = torch.arange(len(split.train)).repeat_interleave(per)
    return {"idx": idx, "tokens": vocab.encode_batch(caps, max_len)}


def train_captioner(feats: Features, profile: str, kind: str, all_captions: str = "profile",
                    steps: int = 0, seed: int = 0, retrain: bool = False):
    """Build and train the decoder on cached features; returns (model, vocab, FitResult).

    ``all_captions``: "first" (the study's strategy: each image's first caption), "all" (five per image)
    or "profile" (the profile's choice); ``steps`` 0: the profile's."""
    s = settings(profile, kind)
    if all_captions not in ("first", "all", "profile"):
        raise ValueError(f"all_captions={all_captions!r}: choose first, all or profile")
    all_captions = s.all_captions if all_captions == "profile" else all_captions == "all"
    vocab = build_vocab(feats.split, all_captions)
    cfg = decoder_config(s, len(vocab), feats.train.size(-1), feats.train.size(1))
    torch.manual_seed(seed)
    model = XAttnCaptioner(cfg)
    image = feats.train

    def loss_fn(m, batch):  # gathers the image tokens of the batch from the cached features
        return m.loss(image[batch["idx"]].float(), batch["tokens"])

    tcfg = train.TrainConfig(steps=steps or s.steps, batch_size=s.batch_size, lr=s.lr, warmup=s.warmup,
                             weight_decay=0.01, seed=seed)
    out = paths.run_dir(profile, NOTEBOOK[kind])
    key = {"decoder": cfg.to_dict(), "features": feats.key, "all_captions": all_captions, "vocab": vocab.itos}
    fit = train.fit(model, loss_fn, training_pairs(feats.split, vocab, s.max_len, all_captions), tcfg, out, key,
                    restart=retrain)
    return model.eval(), vocab, fit


truncation_rate = decoding.truncation_rate


def decode(model: XAttnCaptioner, feats: torch.Tensor, method: str = "beam", beam: int = 3,
           max_len: int = 31, batch_size: int = 256) -> tuple[list[list[int]], float]:
    """Token ids per image and seconds taken."""
    t0 = time.perf_counter()
    ids = decoding.generate(model, feats, method, beam, max_len, batch_size)
    return ids, time.perf_counter() - t0


def seed_refs(split: data.Split) -> dict[str, list[str]]:
    """References of the val images as the study's BLEU read them (raw captions.txt lines)."""
    raw = metrics.read_seed_refs(find_layout(split.folder)[0])
    return {n: raw[n] for n, _ in split.val}


def score(hyps: dict[str, str], split: data.Split) -> dict[str, float]:
    """Seed-mode BLEU-1..4 and standard BLEU-1..4, CIDEr-D, ROUGE-L against all 5 val references."""
    seed = metrics.seed_scores_from_refs(hyps, seed_refs(split))
    std = metrics.standard_scores(hyps, split.refs("val"))
    return {**{f"seed {k}": v for k, v in seed.items()}, **std}


def ceiling(split: data.Split) -> dict[str, float]:
    seed = metrics.human_ceiling(seed_refs(split), mode="seed")
    std = metrics.human_ceiling(split.refs("val"), mode="standard")
    return {**{f"seed {k}": v for k, v in seed.items()}, **std}


def retrieval_baseline(feats: Features) -> dict[str, str]:
    return retrieval_captions(feats.split.train, feats.train, [n for n, _ in feats.split.val], feats.val)


def data_label(profile: str) -> str:
    """The tables' "profile / data" cell: the profile and the data set it reads (``data.source``)."""
    return f"{profile} / " + {"flickr8k": "Flickr8k", "world8k": "world8k"}[profiles.get(profile).data.source]


def table2(profile: str, kind: str, rows: dict[str, dict[str, float]]) -> list[dict]:
    """Rows of Table 2 for one notebook: seed-mode BLEU beside the study's, then standard metrics."""
    out = []
    for label, sc in rows.items():
        row = {"model": label, "profile / data": data_label(profile)}
        row.update({f"BLEU-{i} (seed)": sc[f"seed BLEU-{i}"] for i in range(1, 5)})
        row.update({k: sc[k] for k in ("BLEU-4", "CIDEr-D", "ROUGE-L")})
        out.append(row)
    study = {"model": f"study: {STUDY_PARAMS[kind][0]} + cross-attn decoder", "profile / data": "paper / Flickr8k"}
    study.update({f"BLEU-{i} (seed)": b for i, b in enumerate(STUDY_BLEU[kind], 1)})
    study.update({"BLEU-4": None, "CIDEr-D": None, "ROUGE-L": None})
    return out + [study]


TABLE2_NOTE = ("BLEU (seed) = the study's BLEU code; BLEU-4, CIDEr-D, ROUGE-L = standard (pycocoevalcap), "
               "all ×100, against all 5 references of every validation image.")


def table2_formats(rows: list[dict]) -> dict[str, str]:
    return {c: ".1f" for c in rows[0] if "BLEU" in c or c in ("CIDEr-D", "ROUGE-L")}


def table2_scores(feats: Features, hyps: dict[str, str], hyps_greedy: dict[str, str],
                  retrieved: dict[str, str]) -> dict[str, dict]:
    """Named scores of Table 2's rows: the model (beam), greedy decoding, the retrieval baseline's captions
    ``retrieved``, the human ceiling (saved as ``NN_scores``; ``mmlib.claims`` reads these names)."""
    return {"model": score(hyps, feats.split), "greedy": score(hyps_greedy, feats.split),
            "retrieval": score(retrieved, feats.split), "ceiling": ceiling(feats.split)}


def save_table2(profile: str, kind: str, feats: Features, scores: dict[str, dict], beam: int) -> list[dict]:
    """Save Table 2 (``NN_table2``) and the named scores (``NN_scores``) of notebook 02 or 03; returns the rows."""
    labels = {"model": f"{feats.encoder} + cross-attn decoder (beam {beam})",
              "greedy": f"{feats.encoder} + cross-attn decoder (greedy)",
              "retrieval": f"retrieval baseline (nearest {feats.encoder} feature)",
              "ceiling": "human ceiling (leave-one-out)"}
    rows = table2(profile, kind, {labels[k]: v for k, v in scores.items()})
    nb = NOTEBOOK[kind]
    results.save_table(profile, f"{nb}_table2", rows, formats=table2_formats(rows), note=TABLE2_NOTE)
    results.save(profile, f"{nb}_scores", scores)
    return rows


def example_figure(split: data.Split, hyps: dict[str, str], others: dict[str, dict[str, str]], n: int = 6,
                   size: int = 128, label: str = "model"):
    """Validation images with the generated caption(s) and two references; ``label`` names the row
    whose captions ``hyps`` are (e.g. "row 4"), each key of ``others`` names its own."""
    names = [nm for nm, _ in split.val[:n]]
    imgs = data.images(split.folder, names, size)
    refs = split.refs("val")
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 4.6))
    for ax, name, im in zip(axes, names, imgs):
        ax.imshow(im.permute(1, 2, 0).numpy())
        ax.axis("off")
        lines = [f"{label}: {hyps[name]}"] + [f"{k}: {v[name]}" for k, v in others.items()]
        lines += [f"ref: {r}" for r in refs[name][:2]]
        ax.set_title("\n".join(_wrap(s) for s in lines), fontsize=7, loc="left")
    fig.tight_layout()
    return fig


def _wrap(text: str, width: int = 44) -> str:
    return "\n".join(textwrap.wrap(text, width))


def attention_figure(model: XAttnCaptioner, vocab: Vocab, split: data.Split, feats: torch.Tensor,
                     index: int = 0, size: int = 128, skip_tokens: int = 0):
    """Cross-attention (mean over heads and layers) over the image grid for each generated word.

    ``skip_tokens`` image tokens that are not grid cells (CLIP's CLS) are left out of the maps; the
    share of attention they took is printed in each title."""
    name = split.val[index][0]
    img = data.images(split.folder, [name], size)[0].permute(1, 2, 0).numpy()
    mem = feats[index:index + 1].float()
    ids = decoding.generate(model, mem, "greedy", max_len=model.cfg.block_size - 1)[0]
    toks = torch.tensor([[model.bos_id] + ids])
    maps = model.cross_attention_maps(mem, toks)[0]               # (T, N): row t predicts token t+1
    n_grid = maps.size(1) - skip_tokens
    g = int(round(n_grid ** 0.5))
    words = [vocab.itos[i] for i in ids] + ["<eos>"]
    cols = min(len(words), 8)
    rows = (len(words) + 1 + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    vmax = float(maps[:, skip_tokens:].max())          # one colour scale for every word: weights comparable
    shown = None
    for t, w in enumerate(words):
        att = maps[t, skip_tokens:].reshape(g, g).numpy()
        ax = axes.flat[t]
        ax.imshow(img)
        shown = ax.imshow(np.kron(att, np.ones((size // g, size // g))), alpha=0.55, cmap="jet", vmin=0.0,
                          vmax=vmax, extent=(0, size, size, 0))
        extra = f" (CLS {100 * maps[t, :skip_tokens].sum():.0f}%)" if skip_tokens else ""
        ax.set_title(f"{w}{extra}", fontsize=8)
    fig.suptitle("cross-attention of each generated word over the image grid", fontsize=9)
    fig.tight_layout()
    fig.subplots_adjust(right=0.9)
    cbar = fig.colorbar(shown, cax=fig.add_axes([0.92, 0.15, 0.012, 0.7]))
    cbar.set_label("attention weight on the cell (mean over heads and layers)", fontsize=7)
    return fig
