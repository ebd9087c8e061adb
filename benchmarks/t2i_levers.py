"""Text-to-image training levers, one at a time: held-out fidelity per minute of 06's pixel diffusion.

Usage: python benchmarks/t2i_levers.py [--profile cpu] [--steps 1200] [--only NAME]... [--prompts 200]

Sampling levers (``SAMPLING_VARIANTS``: guidance scale, sampler steps) change nothing in training: they
sample 06's own trained model (the notebook's checkpoint under ``runs/<profile>/06``, reused, not
retrained, when 06 has run with the profile's settings) with one sampler setting changed.

Every variant trains the ``pixel_diffusion`` section's model from the same seed on the same data for
the same number of steps (``--steps``), changing one thing (``VARIANTS``); it is then sampled on the
first ``--prompts`` held-out prompts with the section's sampler (seed 0, the evaluation's prompts) and
scored by the attribute oracle: macro fidelity over the held-out set's readable attributes, subject
present and clothing colour, next to the real-render ceiling. Training minutes are wall time in the
process's precision (``MMLIB_PRECISION``); runs are cached under ``runs/<profile>/levers/<name>`` by
config, so an interrupted sweep resumes. Rows append to the table ``t2i_levers`` (one per variant,
replaced when rerun), which the report's appendix shows.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time

from mmlib import device, profiles, results, train
from mmlib.eval import oracle as orc
from mmlib.eval import t2i_fidelity, t2i_prompts
from mmlib.paths import run_dir
from mmlib.t2i import pixel_diffusion as pd

# name -> (model overrides, train overrides, paper each lever comes from)
VARIANTS: dict[str, tuple[dict, dict, str]] = {
    "base": (dict(snr_gamma=0.0), {}, "the cpu profile before this sweep (plain ε-MSE)"),
    "min_snr5": (dict(snr_gamma=5.0), {}, "min-SNR-γ, Hang et al. 2023"),
    "v_pred": (dict(prediction="v_prediction", snr_gamma=0.0), {}, "v-prediction, Salimans & Ho 2022"),
    "v_min_snr5": (dict(prediction="v_prediction", snr_gamma=5.0), {}, "v + min-SNR-γ"),
    "pooled_text": (dict(pooled_text=True, snr_gamma=0.0), {}, "pooled text in the timestep embedding (SDXL, Imagen)"),
    "attn16": (dict(snr_gamma=0.0, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")), {},
               "cross-attention at 16x16 too"),
    "offset_noise": (dict(offset_noise=0.1, snr_gamma=0.0), {}, "offset noise (dark scenes)"),
    "lr2e-3": (dict(snr_gamma=0.0), dict(lr=2e-3, warmup=100), "higher lr with warm-up"),
    "wide": (dict(snr_gamma=0.0, block_out_channels=(64, 128, 128), norm_num_groups=32), {}, "the probe's widths"),
    # second round, on top of the first round's winner (min-SNR-γ 5)
    "min_snr5+attn16": (dict(snr_gamma=5.0, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D",
                                                               "CrossAttnDownBlock2D"),
                             up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D")), {},
                        "min-SNR-γ + cross-attention at 16x16"),
    "min_snr5+lr2e-3": (dict(snr_gamma=5.0), dict(lr=2e-3, warmup=100), "min-SNR-γ + higher lr with warm-up"),
    "min_snr5+offset": (dict(snr_gamma=5.0, offset_noise=0.1), {}, "min-SNR-γ + offset noise"),
}

# name -> (sampler overrides, what it changes): 06's trained model, one sampler setting changed
SAMPLING_VARIANTS: dict[str, tuple[dict, str]] = {
    "profile_sampler": ({}, "06's model and sampler as the profile sets them (the reference row)"),
    "cfg2": (dict(guidance=2.0), "classifier-free guidance scale 2 (Ho & Salimans 2022)"),
    "cfg7": (dict(guidance=7.0), "classifier-free guidance scale 7"),
    "ddim50": (dict(steps=50), "DDIM with 50 steps (Song et al. 2021)"),
    "dpm20": (dict(sampler="dpm"), "DPM-Solver++ (Lu et al. 2022), the profile's steps"),
}


def run(profile: str, name: str, steps: int, n_prompts: int, overrides: tuple[dict, dict, str] | None = None) -> dict:
    S = profiles.get(profile).pixel_diffusion
    sampling = name in SAMPLING_VARIANTS and overrides is None
    if sampling:                    # 06's own model (its checkpoint), one sampler setting changed
        sample_over, source = SAMPLING_VARIANTS[name]
        model_over, tcfg, out_dir = {}, S.train, run_dir(profile, "06")
    else:
        model_over, train_over, source = overrides or VARIANTS[name]
        sample_over, out_dir = {}, run_dir(profile, "levers") / name
        tcfg = dataclasses.replace(S.train, steps=steps, ckpt_every=max(100, steps // 6), **train_over)
    cfg = dataclasses.replace(pd.config_from_profile(S), **model_over)
    oracle = orc.oracle(profile, cfg.image_size)
    encoder = pd.TextEncoder.for_profile(profile, cfg.max_tokens)
    data, bank = pd.prepare(profile, encoder, cfg, S.captions_per_image)
    model = pd.new_model(cfg, seed=tcfg.seed)
    fit = train.fit(model, pd.diffusion_loss(bank, cfg), data, tcfg, out_dir, cfg.key())
    if tcfg.ema:
        train.load_ema(model, fit.ema)
    prompts = t2i_prompts.heldout_prompts(profile).subset(n_prompts)
    sc = dataclasses.replace(S.sample, **sample_over)
    t0 = time.perf_counter()
    images = pd.generate(model, encoder, prompts.captions, sc, seed=prompts.seed)
    sample_seconds = time.perf_counter() - t0
    heldout = t2i_prompts.heldout_prompts(profile)
    attrs = t2i_fidelity.prompt_fidelity(oracle, heldout.real_images(cfg.image_size), heldout.stated).macro_attributes
    fid = t2i_fidelity.prompt_fidelity(oracle, images, prompts.stated, over=attrs, min_stated=1)
    ceil = t2i_fidelity.prompt_fidelity(oracle, prompts.real_images(cfg.image_size), prompts.stated, over=attrs,
                                        min_stated=1)
    per, per_c = fid.per_attribute, ceil.per_attribute
    return {"variant": name, "lever": source, "steps": fit.steps, "precision": fit.mixed_precision,
            "sampler": f"{sc.sampler} {sc.steps}, CFG {sc.guidance:g}",
            "train minutes": fit.train_seconds / 60, "s/step": fit.train_seconds / max(1, fit.steps),
            "fidelity %": 100 * fid.macro, "ceiling %": 100 * ceil.macro, "of ceiling": fid.macro / ceil.macro,
            "subject %": 100 * per.get("subject", float("nan")),
            "subject of ceiling": per.get("subject", float("nan")) / per_c["subject"],
            "clothing colour %": 100 * per.get("clothing_colour", float("nan")),
            "background %": 100 * per.get("background", float("nan")),
            "sample s/image": sample_seconds / len(prompts), "load": os.getloadavg()[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default=os.environ.get("MMLIB_PROFILE", "cpu"))
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--prompts", type=int, default=200)
    ap.add_argument("--only", action="append", help="variant name (repeatable); default: all")
    args = ap.parse_args()
    device.set_threads()
    key = "t2i_levers"
    rows = {r["variant"]: r for r in results.load(args.profile, key, default={}).get("rows", [])}
    for name in args.only or list(VARIANTS):
        if name not in VARIANTS and name not in SAMPLING_VARIANTS:
            raise SystemExit(f"unknown variant {name!r}; known: {', '.join([*VARIANTS, *SAMPLING_VARIANTS])}")
        row = run(args.profile, name, args.steps, args.prompts)
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
        rows[name] = row
        results.save_table(args.profile, key, list(rows.values()),
                           formats={k: ".2f" if "of" in k or "s/" in k else ".1f" for k in row
                                    if isinstance(row[k], float)},
                           note=f"profile {args.profile}, 06's model, one change per row, {device.cpu_kind()}, {device.precision()}")


if __name__ == "__main__":
    main()
