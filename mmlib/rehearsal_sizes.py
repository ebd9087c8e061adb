"""The sizes of the `paper` rehearsal (``python -m mmlib.rehearse``), merged into the ``paper`` profile by
``mmlib.profiles`` when ``MMLIB_PAPER_SIZES=rehearsal``."""
from __future__ import annotations

import os
from typing import Any

# The `paper` rehearsal (``python -m mmlib.rehearse``): with ``MMLIB_PAPER_SIZES=rehearsal`` the paper profile
# keeps every hub name, loader, tokenizer and code path and only takes these sizes and step counts, merged
# into its sections key by key, so notebooks 01-09 run in seconds on tiny random stand-in weights of the same
# model classes. Dimensions that must match a stand-in (BERT 64 wide, 2 layers; flan-t5 64 wide) say so.
REHEARSAL: dict[str, dict[str, Any]] = {
    "data": dict(image_size=224),
    "caption_cnn": dict(n_layer=1, n_head=2, n_embd=32, d_ff=64, steps=12, batch_size=16, warmup=2),
    "caption_clip": dict(n_layer=1, n_head=2, n_embd=32, d_ff=64, steps=12, batch_size=16, warmup=2),
    "qformer": dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, num_queries=4, embed_dim=32,
                    beam=2, max_len=12, n_val=16,
                    train=dict(steps=6, batch_size=8, warmup=1, log_every=2)),
    "qformer_pretrained": dict(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,  # = BERT stand-in
                               num_queries=4, embed_dim=32, beam=2, max_len=12, n_val=16,
                               train=dict(steps=6, batch_size=8, warmup=1, log_every=2)),
    "qformer_llm": dict(num_beams=2, max_new_tokens=8, n_val=8, n_val_loss=8,
                        train=dict(steps=6, batch_size=4, warmup=1, log_every=2, eval_every=3, patience=2)),
    "t2i_eval": dict(steps=10, batch_size=16, n_prompts=16),
    "pixel_diffusion": dict(model=dict(image_size=16, block_out_channels=(32, 32, 32, 32), layers_per_block=1,
                                       norm_num_groups=8, attention_head_dim=16, cross_attention_dim=32,
                                       text_dim=64),                                  # = BERT stand-in
                            train=dict(steps=4, batch_size=8, warmup=1, ckpt_every=2, log_every=1),
                            sample=dict(steps=3, batch_size=8), figure_samples=2, colour_samples=2, compare_prompts=8),
    "latent_diffusion": dict(vq=dict(image_size=32, block_out_channels=(16, 16, 32, 32), layers_per_block=1,
                                     norm_num_groups=8, num_codes=64, perceptual_size=32, disc_start=3,
                                     disc_channels=8, disc_layers=1),
                             vq_steps=6, vq_batch=8, vq_warmup=1, n_vq_images=64,
                             model=dict(latent_size=4, block_out_channels=(32, 32, 32), layers_per_block=1,
                                        norm_num_groups=8, attention_head_dim=16),
                             train=dict(steps=4, batch_size=8, warmup=1, ckpt_every=2, log_every=1),
                             sample=dict(steps=3, batch_size=8), figure_seeds=2, colour_samples=2),
    "sd_lora": dict(model=dict(image_size=32),
                    finetune=dict(steps=3, batch_size=4, ckpt_every=2),
                    lora=dict(rank=4), sample=dict(steps=3, batch_size=4), lora_images=200),
    "infinity": dict(tokenizer=dict(image_size=16, channels=(16, 16), bits=8, scales=(1, 2, 4)),
                     transformer=dict(d_text=64, d_model=32, n_layer=1, n_head=2),   # d_text = flan-t5 stand-in
                     tokenizer_train=dict(steps=6, batch_size=8, warmup=1, log_every=2, ckpt_every=3),
                     transformer_train=dict(steps=6, batch_size=8, warmup=1, log_every=2, ckpt_every=3),
                     sample_batch=8, speed_batch=2, speed_diffusion_steps=2),
}


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``over``'s keys replaced, recursing into dicts both hold."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def paper_sizes() -> str:
    """``MMLIB_PAPER_SIZES``: "full" (default) or "rehearsal" (``REHEARSAL`` merged into ``paper``)."""
    sizes = os.environ.get("MMLIB_PAPER_SIZES", "full")
    if sizes not in ("full", "rehearsal"):
        raise ValueError(f"MMLIB_PAPER_SIZES={sizes!r}: choose full or rehearsal")
    return sizes
