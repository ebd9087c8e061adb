"""Sampling speed of Infinity against the two diffusion models (06, 07), on one machine in one run.

The study (report sec. 2.2, "一些感受" 1) found Infinity-2B about 3.6x faster than SDXL on one A6000
(1000 images: 50 min vs 3 h). Here the three samplers of this reproduction are timed back to back at
equal batch size: 06 (pixel-space UNet, DDIM steps), 07 (VQ latent UNet + decoder) and 09 (K
next-scale passes + the tokenizer's decoder). 06 and 07 are loaded from their exported weights when
their notebooks have run; otherwise their *untrained* models of the profile's size are timed, which
costs the same per step (sampling never branches on weight values) -- each row says which. A
notebook exports its trained model to this comparison by offering ``load_trained(profile)`` in its
module (06: ``PixelDiffusion``; 07: ``(LatentDiffusion, VQModel)``), read from the exports their notebooks write.
Text inputs are random tensors of the encoder's shape: the text encoder runs once per prompt in all
three and is left out of the timing.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import time
from typing import Callable

import torch

from ... import profiles
from ...eval.t2i import network_evals
from ...images import to_uint8
from ...nets import n_params
from .. import latent_diffusion as ld
from .. import pixel_diffusion as pd
from .. import vqvae
from ..diffusion import SampleConfig
from .sampling import generate
from .transformer import Text

Sampler = Callable[[int], torch.Tensor]     # batch size -> images
REPEATS = 3                                 # timed calls per sampler; the median is reported


def timed(sample: Sampler, batch_size: int, repeats: int = REPEATS, warmup: bool = True) -> list[float]:
    """Images per second of ``sample`` at ``batch_size``, one value per timed call (after one warm-up
    call); the speed reported is their median (``statistics.median``), robust to one slow call."""
    if warmup:
        sample(batch_size)
    speeds = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        sample(batch_size)
        speeds.append(batch_size / (time.perf_counter() - t0))
    return speeds


def _trained(load: Callable, profile: str):
    """The notebook's exported model, or None when its notebook has not run in ``profile`` yet."""
    try:
        return load(profile)
    except FileNotFoundError:
        return None


def _sample_config(sec, steps: int | None, batch_size: int) -> SampleConfig:
    """06/07's sampler settings from their profile section (``steps`` overrides the step count)."""
    return dataclasses.replace(sec.sample, steps=steps or sec.sample.steps, batch_size=batch_size)


def pixel_diffusion_sampler(profile: str, steps: int | None = None) -> tuple[Sampler, dict]:
    """06's sampler (DDIM + CFG) with the profile's UNet (the trained weights once 06 has exported them)."""
    sec = profiles.get(profile).pixel_diffusion
    model = _trained(pd.load_trained, profile)
    trained = model is not None
    if model is None:
        torch.manual_seed(0)
        model = pd.PixelDiffusion(pd.config_from_profile(sec))
    cfg = model.cfg

    def sample(b: int) -> torch.Tensor:
        text = torch.randn(b, cfg.max_tokens, cfg.text_dim)
        mask = torch.ones(b, cfg.max_tokens, dtype=torch.bool)
        return pd.sample(model.eval(), text, mask, text[0], mask[0], _sample_config(sec, steps, b))

    sc = _sample_config(sec, steps, 1)
    return sample, {"model": "06 pixel diffusion", "trained": trained, "steps": sc.steps,
                    "sampler": sc.sampler, "guidance": sc.guidance, "params": n_params(model)}


def latent_diffusion_sampler(profile: str, steps: int | None = None) -> tuple[Sampler, dict]:
    """07's sampler (DDIM + CFG on VQ latents, then the VQ decoder) with the profile's sizes."""
    sec = profiles.get(profile).latent_diffusion
    loaded = _trained(ld.load_trained, profile)            # (model, vq) once 07 has exported them
    if loaded is None:
        torch.manual_seed(0)
        model = ld.LatentDiffusion(ld.config_from_profile(sec))
        vq = vqvae.build_vqmodel(vqvae.config_from_profile(sec)).eval()
    else:
        model, vq = loaded
    cfg = model.cfg

    def sample(b: int) -> torch.Tensor:
        text = torch.randn(b, cfg.max_tokens, cfg.text_dim)
        mask = torch.ones(b, cfg.max_tokens, dtype=torch.bool)
        z = ld.sample_latents(model.eval(), text, mask, text[0], mask[0], _sample_config(sec, steps, b))
        return ld.decode_latents(vq, z)

    sc = _sample_config(sec, steps, 1)
    return sample, {"model": "07 latent diffusion", "trained": loaded is not None, "steps": sc.steps,
                    "sampler": sc.sampler, "guidance": sc.guidance, "params": n_params(model) + n_params(vq)}


def infinity_sampler(model, tokenizer, sc) -> tuple[Sampler, dict]:
    cfg = model.cfg

    def sample(b: int) -> torch.Tensor:
        t = Text(torch.randn(b, 24, cfg.d_text), torch.ones(b, 24, dtype=torch.bool), torch.randn(b, cfg.d_text))
        return to_uint8(generate(model, tokenizer, t, sc, torch.Generator().manual_seed(0)))

    return sample, {"model": "09 Infinity (ours)", "trained": True, "steps": len(cfg.scales),
                    "sampler": "next-scale" + (", KV cache" if sc.use_cache else ""), "guidance": sc.cfg_scale,
                    "params": n_params(model) + n_params(tokenizer)}


def compare(profile: str, model, tokenizer, sc, batch_size: int = 8, repeats: int = REPEATS,
            diffusion_steps: int | None = None, warmup: bool = True) -> dict:
    """Images/s of 06, 07 and 09 at ``batch_size``, in this process, one after the other.

    ``diffusion_steps`` replaces 06/07's step count (smoke only: seconds instead of minutes; the
    rows then say so and the ratio is not the study's comparison).

    Returns ``{"rows": [...], "ratio_vs_06": x, "ratio_vs_07": y, ...}``.
    """
    rows = []
    builders = [("06", lambda: pixel_diffusion_sampler(profile, diffusion_steps)),
                ("07", lambda: latent_diffusion_sampler(profile, diffusion_steps)),
                ("09", lambda: infinity_sampler(model, tokenizer, sc))]
    for nb, build in builders:
        sample, info = build()
        with torch.no_grad():
            speeds = timed(sample, batch_size, repeats, warmup)
        ips = statistics.median(speeds)
        rows.append({"notebook": nb, **info, "network_evals": network_evals(info["steps"], info["guidance"]),
                     "images_per_second": ips, "seconds_per_image": 1 / ips,
                     "images_per_second_range": [min(speeds), max(speeds)]})
    speed = {r["notebook"]: r["images_per_second"] for r in rows}
    out = {"rows": rows, "batch_size": batch_size, "repeats": repeats, "threads": torch.get_num_threads(),
           "diffusion_steps_override": diffusion_steps,
           "device": "cuda" if torch.cuda.is_available() else "cpu", "load_average": os.getloadavg()[0]}
    for nb in ("06", "07"):
        if speed.get(nb) and speed.get("09"):
            out[f"ratio_vs_{nb}"] = speed["09"] / speed[nb]
    return out


def table(profile: str, sp: dict, diffusion_steps_override: int | None = None) -> dict:
    """``compare``'s result as the report's speed table (``results.save_table`` arguments)."""
    rows = [{"model": r["model"], "weights": "trained" if r["trained"] else "untrained (same cost)",
             "steps (or scales)": r["steps"], "CFG": r["guidance"],
             "network passes / image": r["network_evals"],
             "images/s": r["images_per_second"], "s/image": r["seconds_per_image"]}
            for r in sp["rows"]]
    note = (f"Profile {profile}, batch {sp['batch_size']}, {sp['device']}, {sp['threads']} threads, load average "
            f"{sp['load_average']:.1f} (shared CPU)"
            + (f", diffusion steps cut to {diffusion_steps_override} (smoke)" if diffusion_steps_override else "")
            + ". Network passes per image: one per step or scale, two with classifier-free guidance; 07 and 09 add "
              "one decoder pass. Study: ≈3.6× (Infinity-2B vs SDXL, one A6000).")
    return {"rows": rows, "formats": {"images/s": ".2f", "s/image": ".3f"}, "note": note}
