"""Training-seed replicas of a text-to-image model, scored on the same prompts: the run-to-run spread.

A bootstrap interval over prompts says how much a score would move with other prompts, not with another
training run. For a verdict whose margin is small, the compared model is trained again with other seeds
(the seed draws the initial weights and the batch order; data, recipe and sampling noise stay fixed),
each replica samples the same prompts with the same noise, and the oracle reads them. The verdict is
judged on every seed (``mmlib.claims``), and the spread (highest − lowest macro fidelity over seeds) is
stated beside it.

    rec = seed_record(profile, oracle, prompts, {0: imgs0, 1: imgs1, 2: imgs2})
    rec["spread_points"], rec["seeds"]["1"]["margin"]   # max − min macro fidelity in points; seed 1's lower
                                                        # bound − the baseline's upper bound (a share, > 0: passes)
"""
from __future__ import annotations

from typing import Mapping

import torch

from .oracle import AttributeOracle
from .t2i_fidelity import BASELINE_NAMES, fidelity_record, prompt_fidelity, references
from .t2i_prompts import Prompts


def seed_record(profile: str, oracle: AttributeOracle, prompts: Prompts,
                samples: Mapping[int, torch.Tensor]) -> dict:
    """Score each training seed's samples of ``prompts`` (one image per prompt, same noise for every seed).

    Returns ``{"n_prompts", "set", "seeds": {seed: {"macro", "model_minus_strongest", "margin"}},
    "strongest_baseline", "baseline": interval dict, "attributes", "spread", "spread_points", "mean", "min",
    "max"}``:
    ``macro`` is the seed's macro fidelity over the attributes readable on the set (95 % interval over
    prompts), ``margin`` its lower bound minus the strongest baseline's upper bound (> 0: the seed beats the
    baseline on the claim's test), ``spread`` max − min of the seeds' macro values."""
    if len(samples) < 2:
        raise ValueError(f"a seed spread needs at least 2 training seeds, got {sorted(samples)}")
    refs = references(profile, oracle, prompts)
    seeds, best, base, attrs = {}, None, None, None
    for s, imgs in sorted(samples.items()):
        if len(imgs) != len(prompts):
            raise ValueError(f"seed {s}: {len(imgs)} images for {len(prompts)} prompts of set {prompts.name!r}")
        rec = fidelity_record(prompt_fidelity(oracle, imgs, prompts.stated), refs, prompts.seed)
        if not rec["attributes"]:
            raise ValueError(f"no attribute is readable on the {len(prompts)} prompts of set {prompts.name!r}")
        best, attrs = rec["strongest_baseline"], rec["attributes"]
        base = rec["fidelity"][best]["macro"]
        macro = rec["fidelity"]["model"]["macro"]
        seeds[str(s)] = {"macro": macro, "model_minus_strongest": rec["model_minus_strongest"],
                         "margin": macro["lo"] - base["hi"]}
    values = [r["macro"]["value"] for r in seeds.values()]
    return {"set": prompts.name, "n_prompts": len(prompts), "seeds": seeds, "strongest_baseline": best,
            "baseline": base, "attributes": attrs, "spread": max(values) - min(values),
            "spread_points": 100 * (max(values) - min(values)),
            "mean": sum(values) / len(values), "min": min(values), "max": max(values)}


def seed_table(rec: dict, baselines: Mapping[str, str] = BASELINE_NAMES) -> list[dict]:
    """The record as table rows: one per seed, then the strongest baseline on the same prompts."""
    pct = lambda d: f"{100 * d['value']:.1f} [{100 * d['lo']:.1f}, {100 * d['hi']:.1f}]"   # noqa: E731
    rows = [{"training seed": s, "macro fidelity % [95 % CI]": pct(r["macro"]),
             "margin over the baseline (points)": f"{100 * r['margin']:+.1f}",
             "beats the baseline": "yes" if r["margin"] > 0 else "no"} for s, r in rec["seeds"].items()]
    rows.append({"training seed": f"strongest baseline: {baselines.get(rec['strongest_baseline'], rec['strongest_baseline'])}",
                 "macro fidelity % [95 % CI]": pct(rec["baseline"]), "margin over the baseline (points)": "",
                 "beats the baseline": ""})
    return rows
