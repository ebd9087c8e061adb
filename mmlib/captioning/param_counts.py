"""Table 1 (rows 1–2): architecture, hidden size, total and trainable parameters, counted from
instantiated models — for the profile that ran, and for the ``paper`` sizes by building the
models on the meta device (shapes only: no weights, no download, no memory).

The study reports 34.2M total / 21.5M trainable (ResNet-18 row) and 108M / 21.5M (CLIP ViT-B/32
row). Our counts and the arithmetic behind the difference are in report/02_caption_cnn.md.
"""
from __future__ import annotations

import open_clip
import torch
from torchvision.models import resnet18

from .. import preflight, profiles, results
from ..data.flickr8k import read_captions, seed_split
from ..nets import count_parameters
from ..paths import seed_file
from .vocab import Vocab
from .xattn import XAttnCaptioner, XAttnConfig


def millions(n: int) -> str:
    return f"{n / 1e6:.1f}M"


def paper_vocab_size(min_count: int = 1, all_captions: bool = False) -> int:
    """Word vocabulary of the study's training split of the real Flickr8k captions (seed fixture).

    Raises FileNotFoundError (naming MMLIB_SEED_DIR) without the fixture: notebooks ask
    ``preflight.check(...).have("flickr8k_captions.txt")`` first (:func:`paper_sizes_row`)."""
    train, _ = seed_split(read_captions(seed_file("flickr8k_captions.txt")))
    return len(Vocab.build([c for _, cs in train for c in (cs if all_captions else cs[:1])], min_count))


def paper_models(kind: str, vocab_size: int) -> tuple[torch.nn.Module, XAttnCaptioner]:
    """(frozen encoder, decoder) at the paper profile's sizes, on the meta device."""
    s = profiles.get("paper").caption_cnn if kind == "cnn" else profiles.get("paper").caption_clip
    with torch.device("meta"):
        if kind == "cnn":
            net = resnet18(weights=None)
            encoder = torch.nn.Sequential(*list(net.children())[:-2])  # conv layers only, as in the study
            d_image, n_tok = 512, 49
        else:
            encoder = open_clip.create_model(s.clip.model_name, pretrained=None, device="meta").visual
            d_image, n_tok = encoder.ln_post.normalized_shape[0], 50
        cfg = XAttnConfig(vocab_size=vocab_size, d_image=d_image, n_image_tokens=n_tok, n_layer=s.n_layer,
                          n_head=s.n_head, n_embd=s.n_embd, d_ff=s.d_ff, block_size=s.max_len)
        decoder = XAttnCaptioner(cfg)
    return encoder, decoder


def row(architecture: str, profile_data: str, encoder: torch.nn.Module | int, decoder: XAttnCaptioner,
        study: tuple[str, int, str, str]) -> dict:
    """One Table 1 row; ``encoder`` is the frozen encoder module or its parameter count."""
    enc_total = encoder if isinstance(encoder, int) else count_parameters(encoder)[0]
    dec_total = count_parameters(decoder)[0]   # all trainable; the encoder is frozen
    return {"model": architecture, "profile / data": profile_data, "hidden": decoder.cfg.n_embd,
            "decoder layers": decoder.cfg.n_layer, "vocab": decoder.cfg.vocab_size,
            "frozen encoder": millions(enc_total), "total": millions(enc_total + dec_total),
            "trainable": millions(dec_total), "study hidden": study[1], "study total": study[2],
            "study trainable": study[3]}


def not_run_row(architecture: str, profile_data: str, study: tuple[str, int, str, str], why: str) -> dict:
    """A Table 1 row that was not counted: ``why`` (e.g. ``preflight.NOT_RUN``) in its first counted
    column, the study's numbers beside it, every other count left empty."""
    return {"model": architecture, "profile / data": profile_data, "hidden": why, "study hidden": study[1],
            "study total": study[2], "study trainable": study[3]}


def paper_sizes_row(profile: str, kind: str, study: tuple[str, int, str, str], have_captions: bool) -> dict:
    """Table 1's row at the ``paper`` sizes (meta device) for ``kind`` "cnn" (02) or "clip" (03), and its
    decoder breakdown saved as ``NN_paper_breakdown``. Its vocabulary needs the study's real captions:
    without them (``have_captions`` False) the row and the breakdown are saved as not run."""
    label, notebook = f"{study[0]} + cross-attn decoder", {"cnn": "02", "clip": "03"}[kind]
    if not have_captions:
        results.save_not_run(profile, f"{notebook}_paper_breakdown", preflight.FIXTURES_ABSENT)
        return not_run_row(label, "paper sizes (meta device)", study, preflight.NOT_RUN)
    encoder, decoder = paper_models(kind, paper_vocab_size())
    results.save(profile, f"{notebook}_paper_breakdown", breakdown(decoder))
    return row(label, "paper sizes (meta device)", encoder, decoder, study)


def breakdown(decoder: XAttnCaptioner) -> dict[str, int]:
    """Decoder parameters by part: embeddings (tied head), per-block attention/MLP, image projection."""
    parts = {"token+position embeddings (head tied)": 0, "self-attention": 0, "cross-attention": 0,
             "MLP": 0, "LayerNorms": 0, "image projection + image positions": 0}
    for name, p in decoder.named_parameters():
        if name.startswith(("tok_emb", "pos_emb")):
            parts["token+position embeddings (head tied)"] += p.numel()
        elif ".self_attn." in name:
            parts["self-attention"] += p.numel()
        elif ".cross_attn." in name:
            parts["cross-attention"] += p.numel()
        elif ".mlp." in name:
            parts["MLP"] += p.numel()
        elif name.startswith("img_"):
            parts["image projection + image positions"] += p.numel()
        else:
            parts["LayerNorms"] += p.numel()
    return parts
