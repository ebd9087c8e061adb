"""Notebooks 04 and 05, stage 1: the Q-former's data, training run, retrieval, figure and Table 2 rows.

The model and its losses live in :mod:`.model`; this module ties them to a profile: the frozen
image tokens (03's world CLIP in smoke/cpu, BLIP-2's EVA ViT-g/14 in paper), the caption tensors,
``train.fit``, and the rows the report shows.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch

from ... import data, paths, pretrained, profiles, results, train
from ...nets import count_parameters
from ...train import TrainConfig
from .. import encoders, xattn_experiment
from ..clip_step import ensure_world_clip
from .model import QFormer, QFormerConfig, TextCodec, init_from_text_encoder, qformer_loss, retrieval_recall
from .pretrained import BLIP2_HUB, EVATokens, blip2_vision


@dataclass(frozen=True)
class QFormerSettings:
    """Profile section ``qformer`` (04): the stage-1 Q-former, its training run and decoding."""
    hidden_size: int                 # BERT layers: width, depth, heads, feed-forward width
    num_layers: int
    num_heads: int
    intermediate_size: int
    num_queries: int                 # learned queries (BLIP-2: 32)
    cross_attention_freq: int        # queries cross-attend to the image every k-th layer
    embed_dim: int                   # ITC embedding
    max_text_len: int                # caption tokens
    dropout: float
    init: str                        # "scratch" (the study's row 3) or "text_encoder" (BLIP-2's BERT init)
    text_pool: str                   # ITC's text embedding: "cls" (BLIP-2) or "mean" (MiniLM's sentence pooling)
    text_layers: int | None          # init "text_encoder": copy the encoder's first k layers (None: all)
    vocab_subset: bool               # keep only the word pieces of the training captions
    captions_per_image: int          # 1: the study's single-annotation strategy
    train: TrainConfig               # train.fit's run: steps, batch, lr, warm-up, weight decay, seed (also the init's)
    beam: int                        # decoding of the reported captions
    max_len: int
    n_val: int | None                # validation images scored (None: all)
    n_figure: int                    # examples in the figure


def image_features(profile: str):
    """Frozen image tokens of every train and val image (an ``xattn_experiment.Features``), computed once.

    smoke/cpu: the CLIP pretrained on world8k by 03 (its whole ViT token sequence, CLS included) —
    the very cache 03 wrote, so nothing is re-encoded; pretrained first if 03 has not run.
    paper: BLIP-2's EVA ViT-g/14 (all 257 tokens, as BLIP-2 feeds its Q-former), cached here."""
    if profiles.get(profile).weights == "offline":
        ensure_world_clip(profile)
        return xattn_experiment.features(profile, "clip")
    split = data.load(profile)
    names = [n for n, _ in split.train] + [n for n, _ in split.val]
    enc = EVATokens(blip2_vision(BLIP2_HUB))
    key = {"encoder": enc.name, "weights": BLIP2_HUB, "folder": str(split.folder), "size": 224,
           "names": hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]}
    tokens, seconds = encoders.cached_features(enc, lambda: data.images(split.folder, names, 224),
                                               paths.run_dir(profile, "04") / "features", key, batch_size=32)
    n = len(split.train)
    return xattn_experiment.Features(split, tokens[:n], tokens[n:], enc.name, count_parameters(enc)[0], seconds, key)


def captions_per_image(items: list, n: int) -> tuple[list[int], list[str]]:
    """(image index, caption) pairs: the first ``n`` captions of each image (n=1: the study's
    single-annotation strategy)."""
    idx, caps = [], []
    for i, (_, refs) in enumerate(items):
        for c in refs[:n]:
            idx.append(i)
            caps.append(c)
    return idx, caps


STAGE1 = ("qformer", "qformer_pretrained")   # profile sections of row 3's and row 4's stage-1 Q-formers


def build(profile: str, feats, section: str = "qformer") -> tuple[QFormer, TextCodec, dict, dict]:
    """Model, codec, training tensors and checkpoint key of one stage-1 Q-former (profile section
    ``qformer``: row 3's, from scratch; ``qformer_pretrained``: row 4's, from the text encoder's
    weights); used by 04, and by 05 to reload 04's pretrained Q-former from its checkpoint."""
    if section not in STAGE1:
        raise ValueError(f"stage-1 section must be one of {STAGE1}, not {section!r}")
    p = getattr(profiles.get(profile), section)
    split = feats.split
    tok, bert = pretrained.text_encoder(profile)
    idx, caps = captions_per_image(split.train, p.captions_per_image)
    codec = TextCodec.build(tok, caps, subset=p.vocab_subset)
    sizes = dict(hidden_size=p.hidden_size, num_layers=p.num_layers, num_heads=p.num_heads,
                 intermediate_size=p.intermediate_size)
    if p.init == "text_encoder":   # the encoder's own widths (MiniLM 384 in cpu, BERT-base in paper), its first k layers
        c = bert.config
        k = p.text_layers or c.num_hidden_layers
        if not 1 <= k <= c.num_hidden_layers:
            raise ValueError(f"profiles.{section}[{profile!r}].text_layers={k}: the text encoder has "
                             f"{c.num_hidden_layers} layers")
        sizes = dict(hidden_size=c.hidden_size, num_layers=k, num_heads=c.num_attention_heads,
                     intermediate_size=c.intermediate_size)
    cfg = QFormerConfig(vocab_size=codec.vocab_size, **sizes, num_queries=p.num_queries, text_pool=p.text_pool,
                        cross_attention_freq=p.cross_attention_freq, d_image=feats.train.size(-1),
                        embed_dim=p.embed_dim, max_text_len=p.max_text_len, dropout=p.dropout,
                        pad_id=codec.pad_id, cls_id=codec.cls_id, eos_id=codec.eos_id, dec_id=codec.dec_id)
    torch.manual_seed(p.train.seed)
    model = QFormer(cfg)
    if p.init == "text_encoder":
        init_from_text_encoder(model, bert, codec)
    ids, mask = codec.encode(caps, p.max_text_len)
    tensors = {"ids": ids, "mask": mask, "image_id": torch.tensor(idx)}
    key = {"model": cfg.to_dict(), "init": p.init, "text_layers": p.text_layers, "captions_per_image": p.captions_per_image,
           "n_train": len(split.train), "features": feats.key}
    return model, codec, tensors, key


def train_config(profile: str, section: str = "qformer") -> train.TrainConfig:
    """The training run of the ``qformer`` / ``qformer_pretrained`` (04) or ``qformer_llm`` (05) section."""
    return getattr(profiles.get(profile), section).train


def loss_on(feats: torch.Tensor):
    """``qformer_loss`` reading image tokens from a bank by ``image_id`` (no per-caption copies)."""
    def loss_fn(model: QFormer, batch: dict):
        return qformer_loss(model, {**batch, "image": feats[batch["image_id"]]})
    return loss_fn


def train_stage1(profile: str, feats, retrain: bool = False, progress: bool = True, section: str = "qformer"):
    """Build and train (or reload, when a finished checkpoint exists) one stage-1 Q-former (``section``:
    see :func:`build`) -> (model, codec, FitResult)."""
    model, codec, tensors, key = build(profile, feats, section)
    result = train.fit(model, loss_on(feats.train), tensors, train_config(profile, section),
                       paths.run_dir(profile, "04"), key, progress=progress, restart=retrain)
    return model.eval(), codec, result   # a finished run is reloaded from its checkpoint, not retrained


def val_retrieval(model: QFormer, codec: TextCodec, feats, max_len: int) -> dict[str, float]:
    """ITC retrieval R@1/R@5 on the validation split, all five captions of every image."""
    caps = [c for _, cs in feats.split.val for c in cs[:5]]
    owner = torch.arange(len(feats.split.val)).repeat_interleave(5)
    ids, mask = codec.encode(caps, max_len)
    return retrieval_recall(model, feats.val, ids, mask, owner)


def loss_figure(history: list[dict], keys=("itc", "itm", "itg"), title: str = "BLIP-2 stage-1 losses",
                val_history: list[dict] | None = None):
    """One panel per loss, against the training step; ``val_history`` (early stopping's validation
    loss) is drawn on the first panel."""
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3), squeeze=False)
    steps = [h["step"] for h in history]
    for ax, k in zip(axes[0], keys):
        ax.plot(steps, [h[k] for h in history], label="training")
        ax.set_title(k.upper() if k != "loss" else "caption loss")
        ax.set_xlabel("training step")
        ax.set_ylabel("loss (nats, cross-entropy)" if k != "itc" else "loss (nats, InfoNCE)")
        ax.grid(alpha=0.3)
    if val_history:
        axes[0][0].plot([v["step"] for v in val_history], [v["val_loss"] for v in val_history], "o-", label="validation")
        axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------- tables
STUDY_BLEU = {3: (52.3, 36.7, 24.7, 15.8), 4: (72.2, 50.9, 36.1, 25.9)}   # Table 2, seed-mode BLEU, Flickr8k
STUDY_ROWS = {1: "ResNet-18 + cross-attn decoder", 2: "CLIP ViT-B/32 + cross-attn decoder",
              3: "EVA ViT-g/14 + Q-former (BERT, [DEC])", 4: "EVA ViT-g/14 + pretrained Q-former + TinyLlama-1.1B"}


def table2_row(profile: str, label: str, sc: dict[str, float]) -> dict:
    """One row of Table 2 in the columns 02/03 use: seed-mode BLEU-1..4, then standard BLEU-4, CIDEr-D, ROUGE-L."""
    row = {"model": label, "profile / data": xattn_experiment.data_label(profile)}
    row.update({f"BLEU-{i} (seed)": sc[f"seed BLEU-{i}"] for i in range(1, 5)})
    row.update({k: sc[k] for k in ("BLEU-4", "CIDEr-D", "ROUGE-L")})
    return row


def study_row(row: int) -> dict:
    out = {"model": f"study row {row}: {STUDY_ROWS[row]}", "profile / data": "paper / Flickr8k"}
    out.update({f"BLEU-{i} (seed)": b for i, b in enumerate(STUDY_BLEU[row], 1)})
    return {**out, "BLEU-4": None, "CIDEr-D": None, "ROUGE-L": None}


def save_table2(profile: str, feats, scores: dict[str, dict], beam: int) -> list[dict]:
    """Notebook 04's Table 2 (``04_table2``) from named scores (model, greedy, retrieval, ceiling), with
    the study's row 3 beside them; ``04_scores`` keeps model, retrieval and ceiling. Returns the rows."""
    rows = [table2_row(profile, f"{feats.encoder} + Q-former (scratch, [DEC], beam {beam})", scores["model"]),
            table2_row(profile, f"{feats.encoder} + Q-former (scratch, [DEC], greedy)", scores["greedy"]),
            table2_row(profile, "retrieval baseline (nearest image feature)", scores["retrieval"]),
            table2_row(profile, "human ceiling (leave-one-out)", scores["ceiling"]), study_row(3)]
    results.save_table(profile, "04_table2", rows, formats={c: ".1f" for c in rows[0] if c not in ("model", "profile / data")},
                       note=xattn_experiment.TABLE2_NOTE)
    results.save(profile, "04_scores", {k: scores[k] for k in ("model", "retrieval", "ceiling")})
    return rows


def reference_scores(profile: str, feats) -> tuple[dict, dict]:
    """(retrieval baseline, human ceiling) scores: 03's saved ones when 03 ran on the same features
    (the same CLIP tokens give the same baseline), else computed here."""
    saved = results.load(profile, "03_scores", default=None)
    if saved and profiles.get(profile).weights == "offline":
        return saved["retrieval"], saved["ceiling"]
    return xattn_experiment.score(xattn_experiment.retrieval_baseline(feats), feats.split), xattn_experiment.ceiling(feats.split)
