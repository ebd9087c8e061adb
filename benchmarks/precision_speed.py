"""Does bf16 autocast pay on this CPU? One training step of 06's and 07's UNets, fp32 against bf16.

Usage: python benchmarks/precision_speed.py [--profile cpu] [--steps 8] [--threads 2]

``MMLIB_PRECISION=auto`` picks bf16 wherever the CPU has bf16 units (``device.fast_bf16``). That says the
matrix units exist, not that a given model runs faster with them: small convolutions and attention over
few tokens may pay more for the casts than they gain. This times forward + backward + AdamW of the
``cpu`` profile's pixel-diffusion UNet (06, batch 32 at 32 px) and latent UNet (07, batch 32 on 8×8×4
latents) with random inputs, median over ``--steps`` steps after two warm-up steps, in each precision,
plus a 2048² matmul; it prints one table row per model with the bf16 / fp32 time ratio.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from mmlib import device, profiles
from mmlib.t2i import latent_diffusion as ldm
from mmlib.t2i import pixel_diffusion as pd


def step_seconds(model: torch.nn.Module, batch: dict, bf16: bool, steps: int) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        with device.autocast("cpu", bf16=bf16):
            out = model(**batch)
        out.float().pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_seconds(bf16: bool, n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    if bf16:
        a, b = a.bfloat16(), b.bfloat16()
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return (time.perf_counter() - t0) / reps


def models(profile: str, batch_size: int = 32) -> dict[str, tuple[torch.nn.Module, dict]]:
    P = profiles.get(profile)
    c6 = pd.config_from_profile(P.pixel_diffusion)
    c7 = ldm.config_from_profile(P.latent_diffusion)
    b, g = batch_size, torch.Generator().manual_seed(0)
    t = lambda: torch.randint(0, 1000, (b,), generator=g)   # noqa: E731
    return {
        "06 pixel UNet": (pd.new_model(c6, seed=0),
                          dict(x=torch.randn(b, 3, c6.image_size, c6.image_size, generator=g), t=t(),
                               text=torch.randn(b, c6.max_tokens, c6.text_dim, generator=g))),
        "07 latent UNet": (ldm.LatentDiffusion(c7),
                           dict(z=torch.randn(b, c7.latent_channels, c7.latent_size, c7.latent_size, generator=g),
                                t=t(), text=torch.randn(b, c7.max_tokens, c7.text_dim, generator=g))),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    device.set_threads(args.threads)
    print(f"{device.cpu_kind()}, {torch.get_num_threads()} threads, fast_bf16={device.fast_bf16()}")
    print("| workload | fp32 (s) | bf16 (s) | bf16 / fp32 |\n|---|---|---|---|")
    f, h = matmul_seconds(False), matmul_seconds(True)
    print(f"| 2048² matmul | {f:.4f} | {h:.4f} | {h / f:.2f} |")
    for name, (model, batch) in models(args.profile).items():
        f, h = (step_seconds(model, batch, bf16, args.steps) for bf16 in (False, True))
        print(f"| {name}, train step | {f:.3f} | {h:.3f} | {h / f:.2f} |", flush=True)


if __name__ == "__main__":
    main()
