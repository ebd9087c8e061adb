"""ESTIMATES of GPU memory and wall time of the ``paper`` profile, notebooks 02-09, on one GPU.

Usage: python benchmarks/paper_estimates.py [--out runs/paper_estimates.json] [--util 0.35]

No GPU, no weights: every model of a notebook's ``paper`` profile is built on the ``meta`` device (shapes only)
with the project's constructors, or from the hub configs written below where the project loads a model by
name. One training step (forward + loss + backward) runs on meta tensors at a small batch b under
``FlopCounterMode``; FLOPs and activations scale linearly to the paper batch B. Frozen encoders run forward
only; features and text embeddings that the notebooks cache are counted once (rows "once").

Memory (training peak, GB):
    M = P_train * (4 weight + 4 grad + 8 AdamW + 2 bf16 autocast copy [+ 4 fp32 EMA])
        + P_frozen * (4: every frozen model is loaded in fp32 by the code, autocast casts per op)
        + f * S * B / b + 1 GiB (CUDA context, cuBLAS/cuDNN workspaces)
    S: bytes autograd saves for backward (saved_tensors_hooks, parameters excluded) counted as fp32;
    f = 0.5 (all saved in bf16) .. 1 (all fp32): autocast keeps norms, softmax and losses in fp32, so the truth
    lies between (transformers near the low end, GroupNorm-heavy UNets nearer the high one). Attention is
    counted as the fused GPU kernels run it (q, k, v, out saved; the L x S matrix recomputed in backward).
Time:
    T = steps * max(F * B / b / (peak * u), t_min) + F_once / (peak * u)
    F: FLOPs of one step at b; F_once: done once (feature caching, evaluation sampling); peak: bf16 dense
    tensor-core peak; u: assumed utilisation; t_min = 10 ms/step (launches, optimizer, batch copy).
Not counted: data loading and JPEG decoding, allocator fragmentation, inference activations, plotting.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F
from torch.autograd.graph import saved_tensors_hooks
from torch.utils.flop_counter import FlopCounterMode

from mmlib import profiles

GPUS = {"A100-80GB": (312e12, 80e9), "A10-24GB": (125e12, 24e9)}   # bf16 dense FLOP/s, memory (RTX 4090: 165e12)
T_MIN, CONTEXT, N_IMAGES, BERT_VOCAB = 0.010, 2**30, 8091, 30522    # s/step floor, bytes, Flickr8k, bert-base-uncased
META, SDPA = torch.device("meta"), F.scaled_dot_product_attention
# Models the project loads by hub name, from their config.json on the HF hub (no builder in mmlib):
SDXL_UNET = dict(  # stabilityai/stable-diffusion-xl-base-1.0 unet/
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), transformer_layers_per_block=(1, 2, 10),
    attention_head_dim=(5, 10, 20), cross_attention_dim=2048, addition_embed_type="text_time",
    addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816, use_linear_projection=True)
SDXL_TEXT = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 hidden_act="quick_gelu")                           # text_encoder/ (CLIP ViT-L/14 text)
SDXL_TEXT_2 = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                   hidden_act="gelu", projection_dim=1280)          # text_encoder_2/ (OpenCLIP ViT-bigG text)
SDXL_VAE = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)   # vae/
FLAN_T5_BASE = dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12,
                    feed_forward_proj="gated-gelu")                 # google/flan-t5-base (encoder used)


def randn(*shape):
    return torch.randn(*shape, device=META)


def ints(high, *shape):
    return torch.randint(0, high, shape, device=META)


def n_params(*mods, trainable=None):
    return sum(p.numel() for m in mods for p in m.parameters() if trainable is None or p.requires_grad == trainable)


class FusedAttention(torch.autograd.Function):
    """SDPA as flash / memory-efficient kernels run it: saves q, k, v, out and recomputes the attention matrix
    in backward (on meta SDPA takes its math path, which would save L x S: 4096² per head in 06's UNet)."""

    @staticmethod
    def forward(ctx, q, k, v, out, kw):
        ctx.kw = kw
        ctx.save_for_backward(q, k, v, out)
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad):
        q, k, v, _ = (t.detach().requires_grad_() for t in ctx.saved_tensors)
        with torch.enable_grad(), saved_tensors_hooks(lambda t: t, lambda t: t):   # transient: not counted
            return (*torch.autograd.grad(SDPA(q, k, v, **ctx.kw), (q, k, v), grad), None, None)


def fused_sdpa(q, k, v, *args, **kw):
    kw.update(zip(("attn_mask", "dropout_p", "is_causal"), args))
    with torch.no_grad():
        out = SDPA(q, k, v, **kw)
    return FusedAttention.apply(q, k, v, out, kw) if torch.is_grad_enabled() else out


def measure(fn, *mods):
    """(FLOPs, bytes saved for backward counted as fp32, parameters excluded) of ``fn()`` on meta tensors."""
    params, saved = {id(p) for m in mods for p in m.parameters()}, [0]

    def pack(t):
        if id(t) not in params and not (t._base is not None and id(t._base) in params):
            saved[0] += t.numel() * (4 if t.is_floating_point() else t.element_size())
        return t
    with FlopCounterMode(display=False) as fc, saved_tensors_hooks(pack, lambda t: t), \
            mock.patch.object(F, "scaled_dot_product_attention", fused_sdpa):
        fn()
    return fc.get_total_flops(), saved[0]


def fwd_flops(fn):
    with torch.no_grad():
        return measure(fn)[0]


def stage(nb, name, steps, B, b, fn, mods, frozen=0, ema=False, fallback=None, note=""):
    """A training stage: ``fn()`` is one step at batch ``b``; ``frozen``: parameters resident in fp32."""
    try:
        (flops, saved), method = measure(fn, *mods), "FlopCounterMode, meta"
    except Exception as e:                                  # cannot run on meta: 6 N D (transformers)
        flops, saved, method = fallback(), 0, f"6*N*tokens ({type(e).__name__} on meta)"
    p_train, act = n_params(*mods, trainable=True), saved * B / b
    states = p_train * (18 + 4 * ema) + 4 * frozen + CONTEXT
    return dict(nb=nb, stage=name, steps=steps, batch=B, trainable_M=p_train / 1e6, frozen_M=frozen / 1e6,
                tflop_step=flops * B / b / 1e12, act_GB=(act / 2e9, act / 1e9), method=method, note=note,
                mem_GB=((states + act / 2) / 1e9, (states + act) / 1e9))


def once(nb, name, flops, frozen, note, method="FlopCounterMode, meta (forward)"):
    """Work done once (encoding a data set, evaluation sampling): forward only; memory: fp32 weights only."""
    mem = (4 * frozen + CONTEXT) / 1e9
    return dict(nb=nb, stage=name, steps=1, batch=None, trainable_M=0.0, frozen_M=frozen / 1e6, act_GB=None,
                tflop_step=flops / 1e12, mem_GB=(mem, mem), method=method, note=note)


def captioning():   # 02 / 03: frozen encoder (features cached) + cross-attention decoder
    from mmlib.captioning import params
    vocab, rows, b = params.paper_vocab_size(), [], 4
    for nb, kind, enc_name in (("02", "cnn", "ResNet-18"), ("03", "clip", "open_clip ViT-B-32")):
        s = getattr(profiles.get("paper"), "caption_" + kind)
        enc, dec = params.paper_models(kind, vocab)
        c, T = dec.cfg, s.max_len - 1
        f_enc = fwd_flops(lambda: enc(randn(1, 3, s.image_size, s.image_size)))
        rows.append(once(nb, f"encode {N_IMAGES} images ({enc_name})", f_enc * N_IMAGES, n_params(enc), "cached once"))

        def step():
            logits = dec(randn(b, c.n_image_tokens, c.d_image), ints(vocab, b, T))
            F.cross_entropy(logits.flatten(0, 1), ints(vocab, b * T)).backward()
        rows.append(stage(nb, "decoder", s.steps, s.batch_size, b, step, [dec], note=f"vocab {vocab}, {T} tokens "
                          "(upper bound: the code trims padding); step-floor bound"))
    return rows


def blip2():   # 04: two stage-1 Q-formers over cached EVA tokens; 05: BLIP-2 Q-former + frozen TinyLlama
    from transformers import Blip2VisionConfig, LlamaConfig, LlamaForCausalLM
    from transformers.models.blip_2.modeling_blip_2 import Blip2VisionModel
    from mmlib.captioning import qformer as qf
    from mmlib.captioning.qformer.stage2 import TINYLLAMA
    from mmlib.captioning.qformer.llm import QFormerLLM, QFormerLLMConfig
    P, b = profiles.get("paper"), 4
    with META:
        vit = Blip2VisionModel(Blip2VisionConfig()).requires_grad_(False)   # BLIP-2's default = EVA ViT-g/14
    f_vit = fwd_flops(lambda: vit(pixel_values=randn(1, 3, 224, 224)))
    rows = [once("04", "encode images (EVA ViT-g/14, 257 tokens)", f_vit * N_IMAGES, n_params(vit),
                 "cached, reused by 05")]
    for sec in ("qformer", "qformer_pretrained"):
        s = getattr(P, sec)
        cfg = qf.QFormerConfig(vocab_size=BERT_VOCAB + 1, hidden_size=s.hidden_size, num_layers=s.num_layers,
                               num_heads=s.num_heads, intermediate_size=s.intermediate_size, num_queries=s.num_queries,
                               cross_attention_freq=s.cross_attention_freq, embed_dim=s.embed_dim,
                               max_text_len=s.max_text_len, text_pool=s.text_pool)
        with META:
            model = qf.QFormer(cfg)
        ids, mask = torch.arange(b, device=META), torch.ones(b, s.max_text_len, dtype=torch.bool, device=META)

        def step():   # ITC + ITM (3b pairs) + ITG; hard negatives are drawn data-dependently: fixed here
            with mock.patch.object(qf, "hard_negatives", lambda sim, image_id: (ids.roll(1), ids.roll(1))):
                batch = {"image": randn(b, 257, 1408), "ids": ints(cfg.vocab_size, b, s.max_text_len), "mask": mask}
                qf.qformer_loss(model, {**batch, "image_id": ids})[0].backward()
        rows.append(stage("04", f"stage 1 ({sec}, init {s.init})", s.train.steps, s.train.batch_size, b, step, [model],
                          fallback=lambda: 6 * n_params(model) * b * 320))   # tokens/pair: 32 + 32 + 3 x 64 + 64
    s, T = P.qformer_llm, P.qformer_llm.max_caption_tokens

    class Tok:   # what QFormerLLM's constructor reads of a tokenizer; the prompt is ~8 Llama tokens
        eos_token_id, pad_token_id, unk_token_id = 2, 0, 0

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [1] * 8}
    with META:
        llm = LlamaForCausalLM(LlamaConfig(**TINYLLAMA))
        model = QFormerLLM(QFormerLLMConfig(qformer=qf.QFormerConfig(vocab_size=BERT_VOCAB).to_dict(),
                                            max_caption_tokens=T), llm, Tok())

    def step():   # all-ones caption mask: the attention mask changes no cost
        mask = torch.ones(b, T, dtype=torch.bool, device=META)
        x, _, _ = model.build_inputs(randn(b, 257, 1408), ints(32000, b, T), mask)
        logits = model.llm(inputs_embeds=x, logits_to_keep=T + 1).logits[:, :-1].float()
        F.cross_entropy(logits.flatten(0, 1), ints(32000, b * T)).backward()
    rows.append(stage("05", "stage 2 (BLIP-2 Q-former + TinyLlama-1.1B)", s.train.steps, s.train.batch_size, b, step,
                      [model], frozen=n_params(llm), fallback=lambda: 6 * n_params(llm) * b * (8 + 32 + T),
                      note="LLM frozen, loaded fp32 (pretrained.causal_lm's default dtype)"))
    return rows


def unet_step(model, shape, text, b):
    return lambda: F.mse_loss(model(randn(b, *shape), ints(1000, b), randn(b, *text)), randn(b, *shape)).backward()


def diffusion():   # 06: pixel UNet; 07: VQ-GAN, then a latent UNet
    from torchvision.models import vgg16
    from mmlib.t2i import latent_diffusion as ldm, pixel_diffusion as pd, vqvae
    P, b = profiles.get("paper"), 4
    s = P.pixel_diffusion
    r, L, D = s.model.image_size, s.model.max_tokens, s.model.text_dim
    with META:
        model = pd.PixelDiffusion(pd.config_from_profile(s))
    rows = [stage("06", "pixel UNet", s.train.steps, s.train.batch_size, b, unet_step(model, (3, r, r), (L, D), b),
                  [model], ema=True, note="BERT-base token states cached once")]
    f1 = fwd_flops(lambda: model(randn(1, 3, r, r), ints(1000, 1), randn(1, L, D)))
    n = (P.t2i_eval.n_prompts + 8 * s.colour_samples) * s.sample.steps + s.compare_prompts * (50 + s.sample.steps + 20)
    rows.append(once("06", "evaluation sampling", 2 * f1 * n, 2 * n_params(model),
                     f"{n} image-steps x CFG 2 (held-out, colours, sampler table); weights + EMA"))
    s = P.latent_diffusion
    with META:
        gan = vqvae.VQGAN(vqvae.config_from_profile(s), perceptual=None)
        lpips = vgg16().features.requires_grad_(False)   # LPIPS-VGG's trunk (perceptual_for, paper), frozen
    R = s.vq.image_size

    def vq_step():   # L1 + LPIPS + codebook + hinge GAN (counted at every step) + VQGAN's adaptive weight
        x = randn(b, 3, R, R)
        out = vqvae.vq_forward(gan.vq, x)
        with torch.no_grad():
            lpips(x)
        nll, g_loss = (x - out.recon).abs().mean() + lpips(out.recon).mean(), -gan.disc(out.recon).mean()
        for part in (nll, g_loss):
            torch.autograd.grad(part, gan.vq.decoder.conv_out.weight, retain_graph=True)
        d_loss = F.relu(1 - gan.disc(x)).mean() + F.relu(1 + gan.disc(out.recon.detach())).mean()
        (nll + out.qloss + g_loss + d_loss).backward()
    rows.append(stage("07", "VQ-GAN first stage", s.vq_steps, s.vq_batch, b, vq_step, [gan, lpips],
                      frozen=n_params(lpips), note="LPIPS-VGG frozen"))
    h, L, D = s.model.latent_size, s.model.max_tokens, 512   # CLIP ViT-B/32 text width
    with META:
        model = ldm.LatentDiffusion(ldm.dataclasses.replace(ldm.config_from_profile(s), text_dim=D))
    rows.append(stage("07", "latent UNet", s.train.steps, s.train.batch_size, b, unet_step(model, (4, h, h), (L, D), b),
                      [model], ema=True, note="VQ latents + CLIP text tokens cached once"))
    f_enc = fwd_flops(lambda: gan.vq.encode(randn(1, 3, R, R)))
    f_dec = fwd_flops(lambda: gan.vq.decode(randn(1, 4, h, h)))
    f1 = fwd_flops(lambda: model(randn(1, 4, h, h), ints(1000, 1), randn(1, L, D)))
    n = P.t2i_eval.n_prompts + 8 * s.colour_samples + 24 * s.figure_seeds
    rows.append(once("07", "encode latents + evaluation sampling",
                     N_IMAGES * f_enc + n * (2 * s.sample.steps * f1 + f_dec), n_params(gan.vq, model),
                     f"{n} images x {s.sample.steps} DDIM steps x CFG 2 + VQ decode"))
    return rows


def sdxl_lora():   # 08: LoRA on SDXL-base-1.0's UNet; the text encoders run in every step
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    from mmlib.t2i.sdxl import lora, pipeline
    from mmlib.data.world import SEED_PROMPT_SCENES
    P, b = profiles.get("paper"), 1
    s = P.sd_lora
    with META:
        unet, vae = UNet2DConditionModel(**SDXL_UNET), AutoencoderKL(**SDXL_VAE).requires_grad_(False)
        te1 = CLIPTextModel(CLIPTextConfig(**SDXL_TEXT)).requires_grad_(False)
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**SDXL_TEXT_2)).requires_grad_(False)
        n_frozen = n_params(unet, te1, te2, vae)
        lora.add_lora(unet, s.lora)

    def unet_fwd(bb, side, text=True):
        with torch.no_grad():   # text encoders: every training step; once per prompt when sampling
            emb, pooled = (pipeline.encode_prompt(te1, te2, ints(49408, bb, 77), ints(49408, bb, 77)) if text
                           else (randn(bb, 77, 2048), randn(bb, 1280)))
        return unet(randn(bb, 4, side, side), ints(1000, bb), encoder_hidden_states=emb,
                    added_cond_kwargs={"text_embeds": pooled, "time_ids": randn(bb, 6)}).sample
    h, side, R = s.model.image_size // 8, SDXL_UNET["sample_size"], s.model.image_size   # generate(): 128 x 8 = 1024 px
    rows = [stage("08", f"LoRA r{s.lora.rank} on the SDXL UNet @ {R}px", s.finetune.steps, s.finetune.batch_size, b,
                  lambda: F.mse_loss(unet_fwd(b, h), randn(b, 4, h, h)).backward(), [unet, te1, te2], frozen=n_frozen,
                  note="pipeline loaded fp32 (load_pipeline: no dtype); no gradient checkpointing; latents cached")]
    f_enc = fwd_flops(lambda: vae.encode(randn(1, 3, R, R)))
    f_unet = fwd_flops(lambda: unet_fwd(1, side, text=False))
    f_dec = fwd_flops(lambda: vae.decode(randn(1, 4, side, side)))
    n = 3 * P.t2i_eval.n_prompts + 2 * len(SEED_PROMPT_SCENES)    # base, LoRA, LoRA x0.5; seed prompts x2
    rows.append(once("08", "encode latents + sampling @ 1024px",
                     2 * s.lora_images * f_enc + n * (2 * s.sample.steps * f_unet + f_dec), n_frozen,
                     f"{n} images x {s.sample.steps} Euler steps x CFG 2 (UNet fwd {f_unet / 1e12:.1f} TFLOP)"
                     f" + VAE decode ({f_dec / 1e12:.1f} TFLOP)"))
    return rows


def infinity():   # 09: bitwise tokenizer, then the scale transformer (trained twice: the flip ablation)
    from transformers import T5Config, T5EncoderModel
    from mmlib.t2i.infinity import tokenizer as tk, transformer as tr
    s, b = profiles.get("paper").infinity, 4
    tok, model = tk.BitwiseTokenizer(s.tokenizer).to(META), tr.ScaleTransformer(s.transformer).to(META)  # small, and
    with META:                                                    # their index buffers need the CPU to be built
        t5 = T5EncoderModel(T5Config(**FLAN_T5_BASE))
    R, c = s.tokenizer.image_size, s.transformer

    def tok_step():
        rec, q = tok(randn(b, 3, R, R))
        ((rec - randn(b, 3, R, R)).abs().mean() + q.commit + q.entropy).backward()
    text = tr.Text(randn(b, s.max_tokens, c.d_text), torch.ones(b, s.max_tokens, dtype=torch.bool, device=META),
                   randn(b, c.d_text))

    def ar_step():
        logits = model([randn(b, c.bits, r, r) for r in c.scales[1:]], text)
        F.binary_cross_entropy_with_logits(logits, randn(*logits.shape)).backward()
    return [stage("09", "bitwise tokenizer", s.tokenizer_train.steps, s.tokenizer_train.batch_size, b, tok_step, [tok]),
            stage("09", f"scale transformer ({c.seq_len} tokens) x 2 runs (flip {s.flip_prob}, ablation 0)",
                  2 * s.transformer_train.steps, s.transformer_train.batch_size, b, ar_step, [model], ema=True,
                  fallback=lambda: 6 * n_params(model) * b * c.seq_len),
            once("09", "flan-t5-base on 5 captions/image", 2 * n_params(t5) * s.max_tokens * 5 * N_IMAGES, n_params(t5),
                 "sampling (a few hundred 680-token passes) negligible", method="2*N*tokens (forward)")]


def hours(sec):
    return f"{sec / 3600:.2f} h" if sec >= 360 else f"{sec / 60:.1f} min"


def span(lo_hi):
    lo, hi = lo_hi
    return f"{lo:.0f}-{hi:.0f}" if hi - lo >= 1 else f"{hi:.1f}"


def markdown(rows, cols):
    lines = [cols, ["---"] * len(cols), *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/paper_estimates.json")
    ap.add_argument("--util", type=float, default=0.35, help="assumed share of the bf16 dense peak reached")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0, rows = time.perf_counter(), [r for part in (captioning, blip2, diffusion, sdxl_lora, infinity) for r in part()]
    for r in rows:
        for g, (peak, cap) in GPUS.items():
            t = r["tflop_step"] * 1e12 / (peak * args.util)
            r[f"time_s {g}"] = r["steps"] * (max(t, T_MIN) if r["batch"] else t)
            r[f"fits {g}"] = "yes" if r["mem_GB"][1] * 1e9 <= cap else "maybe" if r["mem_GB"][0] * 1e9 <= cap else "no"
    fit = lambda r, g: "" if r[f"fits {g}"] == "yes" else f" ({r[f'fits {g}']} fit)"  # noqa: E731
    table = [[r["nb"], r["stage"], f"{r['steps']} x {r['batch']}" if r["batch"] else "once", f"{r['trainable_M']:.1f}",
              f"{r['frozen_M']:.0f}", f"{r['tflop_step']:.3g}", span(r["act_GB"]) if r["act_GB"] else "",
              span(r["mem_GB"]), *(hours(r[f"time_s {g}"]) + fit(r, g) for g in GPUS), r["method"], r["note"]]
             for r in rows]
    totals = {nb: {"peak_mem_GB": [max(r["mem_GB"][i] for r in rows if r["nb"] == nb) for i in (0, 1)],
                   **{f"time_s {g}": sum(r[f"time_s {g}"] for r in rows if r["nb"] == nb) for g in GPUS}}
              for nb in sorted({r["nb"] for r in rows})}
    print(f"ESTIMATES, not measurements: paper profile, one GPU, bf16 autocast at {args.util:.0%} of the dense bf16 "
          f"peak ({', '.join(f'{g} {p / 1e12:.0f} TFLOP/s' for g, (p, _) in GPUS.items())}), floor {T_MIN * 1e3:.0f} "
          "ms/step; memory as a range (activations saved in bf16 .. fp32); formulas in the module docstring.\n")
    print(markdown(table, ["nb", "stage", "steps x B", "trainable M", "frozen M", "TFLOP/step", "act GB", "mem GB",
                           *GPUS, "method", "note"]))
    print("\n" + markdown([[nb, span(t["peak_mem_GB"]), *(hours(t[f"time_s {g}"]) for g in GPUS)]
                           for nb, t in totals.items()], ["notebook", "peak mem GB", *(f"time {g}" for g in GPUS)]))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"estimate": True, "utilisation": args.util, "gpus": GPUS, "t_min_s": T_MIN,
                               "formulas": __doc__, "stages": rows, "notebooks": totals}, indent=1))
    print(f"\nsaved {out} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
