"""The study's claims, checked against our saved results.

Each check reads results saved by the notebooks and returns our number and a verdict. A claim
whose results are missing says so ("not run"); one whose stated precondition fails (the stand-in
too weak to test it) is "not testable here" and names the precondition; nothing is typed by hand.

A verdict never stops a run: notebooks assert invariants only (shapes, finite values, falling
losses), and the claims are judged here, after the run. Each test and its margin were written
before the ``cpu`` run that judges it; a threshold or model changed after a result was seen is listed in
``threshold_changes.THRESHOLD_CHANGES`` (old, new, why), shown in the report under the claims table, and
flagged in the claims table's ``flags`` column beside every verdict it touches. A verdict is worded by
what the numbers say where "does not hold" would hide it (2.2: "faster than claimed"), and a decided
verdict whose margin is smaller than a stated run-to-run spread says that one run cannot decide it
(``verdicts.NeedsSeeds``); 2.4 is judged on several training seeds (``verdicts.SeedsDisagree`` when they
disagree), and every row states its spread over training seeds or that one seed ran. The verdict types live in :mod:`mmlib.verdicts`, the captioning claims in
:mod:`mmlib.claims_captioning`.

    python -m mmlib.claims --profile cpu     # saves the table ``claims`` for report.md
"""
from __future__ import annotations

import argparse
from typing import Any, Callable

from . import profiles, results
from .eval.t2i_fidelity import BASELINE_NAMES
from .claims_captioning import (CAPTION_METRICS, PROBE_MARGIN, ROW_NOTEBOOK, caption_claim,  # noqa: F401
                                clip_is_the_better_encoder, pretrained_qformer, same_encoder, stage1_itm)
from .threshold_changes import THRESHOLD_CHANGES, flag  # noqa: F401
from .threshold_changes import table_rows as threshold_rows
from .verdicts import (FAILS, HOLDS, NOT_RUN, NOT_SEPARABLE, NOT_TESTABLE, NotSeparable,  # noqa: F401
                       NotTestable, Says, SeedsDisagree, beats, decided, verdict, within_spread)

CLAIM_COL = "study's claim"

# Margins of the text-to-image verdicts (2.1–2.4), fixed before the cpu run that judges them.
STYLE_RISE = 0.10            # 2.1: lower bound of the paired interval of the LoRA − base photo-style share
STUDY_SPEEDUP = 180 / 50     # 2.2: 1000 images in ≈ 3 h (SDXL) vs ≈ 50 min (Infinity-2B), one A6000
SPEEDUP_FACTOR = 2.0         # 2.2: the size reproduces when every speed-up is within [3.6 / 2, 3.6 × 2]
COLOUR_P = 0.01              # 2.3: one-sided binomial test of the colour-word hits against chance
# 2.4 is judged on every training seed of 07's second stage (``07_seeds``): it holds when every seed beats the
# strongest baseline on the seeds' prompts, does not hold when none does; seeds that disagree leave it undecided.


def _get(profile: str, key: str) -> Any:
    return results.load(profile, key, default=None)


def _iv(d: dict | None, scale: float = 100, digits: int = 0) -> str:
    """An interval dict (``eval.bootstrap.Interval.as_dict``) as 'value [lo, hi]'."""
    if d is None:
        return "–"
    return f"{scale * d['value']:.{digits}f} [{scale * d['lo']:.{digits}f}, {scale * d['hi']:.{digits}f}]"


def lora_style(profile: str) -> tuple[str, bool | None | NotTestable]:
    """Holds when the lower bound of the paired 95 % interval of the photo-style share's rise (LoRA weight 1
    − base, same prompts and noise) exceeds ``STYLE_RISE``; not testable with an uncalibrated classifier."""
    s = _get(profile, "08_eval")
    if not s:
        return "08 not run", None
    rows, rise = s["rows"], s["photo_share_change"]
    base, lora = rows[s["base"]], rows[s["lora"]]
    text = (f"photo-style share {_iv(base['photo_share'])} % → {_iv(lora['photo_share'])} % (rise {_iv(rise)} points; "
            f"needs > {100 * STYLE_RISE:.0f}); fidelity {_iv(base['fidelity'])} % → {_iv(lora['fidelity'])} %; "
            f"Fréchet distance to real photos {_iv(base['frechet'], 1)} → {_iv(lora['frechet'], 1)}"
            + (" (worse: farther from real photos)" if lora["frechet"]["value"] > base["frechet"]["value"] else
               " (closer to real photos)"))
    cal = s["classifier"]
    if not cal["calibrated"]:
        return text, NotTestable("style classifier not calibrated: " + "; ".join(cal["failures"]))
    return text, rise["lo"] > STYLE_RISE


def infinity_speed(profile: str) -> tuple[str, bool | None | NotTestable]:
    """Holds when every measured speed-up of 09 over the diffusion samplers (06, 07) lies within a factor
    ``SPEEDUP_FACTOR`` of the study's ≈ 3.6×: the size of the gap, not only its direction."""
    s = _get(profile, "09_speed")
    if not s or s.get("ratio_vs_06") is None:
        return "09 speed comparison not run", None
    ratios = {nb: s[f"ratio_vs_{nb}"] for nb in ("06", "07") if s.get(f"ratio_vs_{nb}")}
    passes = {r["notebook"]: r["network_evals"] for r in s["rows"]}   # one per step or scale, two with CFG
    lo, hi = STUDY_SPEEDUP / SPEEDUP_FACTOR, STUDY_SPEEDUP * SPEEDUP_FACTOR
    text = (", ".join(f"{r:.1f}× vs {nb}" for nb, r in ratios.items())
            + f" (batch {s['batch_size']}, {s['device']}; network passes per image: "
            + ", ".join(f"{nb} {n}" for nb, n in sorted(passes.items()))
            + f"); study ≈ {STUDY_SPEEDUP:.1f}×, its size is reproduced within {lo:.1f}×–{hi:.1f}×")
    if s.get("diffusion_steps_override"):
        return text, NotTestable(f"diffusion steps cut to {s['diffusion_steps_override']} for a quick run")
    if all(lo <= r <= hi for r in ratios.values()):
        return text, True
    shown = ", ".join(f"{r:.0f}×" for r in ratios.values())
    if all(r > hi for r in ratios.values()):
        return text, Says(f"faster than claimed ({shown}, outside {lo:.1f}×–{hi:.1f}×)")
    if all(r < lo for r in ratios.values()):
        return text, Says(f"slower than claimed ({shown}, outside {lo:.1f}×–{hi:.1f}×)")
    return text, False


def colour_words(profile: str) -> tuple[str, bool | None | NotTestable]:
    """Holds when the prompted dress colour is read significantly more often than chance (one-sided
    binomial, p < ``COLOUR_P``); not testable when the oracle cannot read clothing colour."""
    c = _get(profile, "06_colour_words")
    if not c:
        return "06 not run", None
    p = c.get("p_value")
    share = _iv(c["interval"]) if c.get("interval") else f"{100 * c['clothing_colour']:.0f}"
    text = (f"oracle reads the prompted dress colour in {share} % of {c.get('n', 'the')} samples "
            f"(chance {100 * c['chance']:.1f} %" + (f", binomial p = {p:.2g})" if p is not None else ")"))
    if not c.get("readable"):
        return text, NotTestable("oracle calibration not recorded (rerun 06)" if c.get("readable") is None else
                                 "the oracle cannot read clothing colour (accuracy not above its prior by the margin)")
    return text, p is not None and p < COLOUR_P and c["clothing_colour"] > c["chance"]


def strongest_baseline(fid: dict) -> tuple[str, dict]:
    """The baseline row (of ``BASELINE_NAMES`` present in a fidelity record) with the highest upper bound."""
    rows = {k: fid[k]["macro"] for k in BASELINE_NAMES if fid.get(k) and fid[k].get("macro")}
    name = max(rows, key=lambda k: rows[k]["hi"])
    return name, rows[name]


def ldm_semantics(profile: str) -> tuple[str, object]:
    """Holds when, on the held-out prompts, the lower bound of 07's macro fidelity (readable attributes)
    lies above the upper bound of the strongest baseline's: a real render of another prompt's scene, the
    mean image, or the majority value of every attribute (whichever scores highest)."""
    r = _get(profile, "t2i_eval_07")
    if not r:
        return "07 not run", None
    h = r["sets"]["heldout"]
    if h["fidelity"] is None:
        return "no oracle for this data", NotTestable("no scene records, so no attribute oracle")
    if not h["attributes"]:
        return "no readable attribute", NotTestable("no attribute the oracle reads above its prior by the margin "
                                                    "is stated by enough held-out prompts")
    f = h["fidelity"]
    name, best = strongest_baseline(f)
    others = ", ".join(f"{BASELINE_NAMES[k]} {_iv(f[k]['macro'])} %" for k in BASELINE_NAMES
                       if k != name and f.get(k) and f[k].get("macro"))
    text = (f"macro fidelity over {len(h['attributes'])} readable attributes {_iv(f['model']['macro'])} % vs the "
            f"strongest baseline, {BASELINE_NAMES[name]}, {_iv(best)} % ({others}; real ceiling "
            f"{_iv(f['ceiling']['macro'])} %)")
    comp = r["sets"].get("compositional")
    if comp and comp["fidelity"] and comp["fidelity"]["model"]["macro"]:
        cf = comp["fidelity"]
        cname, cbest = strongest_baseline(cf)
        text += (f"; compositional prompts {_iv(cf['model']['macro'])} % vs {BASELINE_NAMES[cname]} {_iv(cbest)} %")
    seeds = _get(profile, "07_seeds")
    if not seeds:
        return text + "; one training seed", f["model"]["macro"]["lo"] > best["hi"]
    return seeds_verdict(text, seeds)


def seeds_verdict(text: str, seeds: dict) -> tuple[str, object]:
    """2.4 over training seeds: holds when every seed's lower bound lies above the strongest baseline's upper
    bound (on the seeds' prompts), does not hold when no seed's does, else ``SeedsDisagree``."""
    wins = [s for s, r in seeds["seeds"].items() if r["margin"] > 0]
    n = len(seeds["seeds"])
    text += (f"; {n} training seeds on the first {seeds['n_prompts']} held-out prompts: "
             + ", ".join(f"seed {s} {_iv(r['macro'])} %" for s, r in seeds["seeds"].items())
             + f" vs {BASELINE_NAMES[seeds['strongest_baseline']]} {_iv(seeds['baseline'])} %")
    if len(wins) == n:
        return text, True
    if not wins:
        return text, False
    return text, SeedsDisagree(len(wins), n)


def seed_spread(profile: str, section: str) -> str:
    """The claims table's seed-spread column: the measured spread over training seeds, or that one seed ran."""
    if section == "2.4":
        s = _get(profile, "07_seeds")
        if s:
            return (f"{100 * s['spread']:.1f} points over {len(s['seeds'])} seeds "
                    f"({100 * s['min']:.1f}–{100 * s['max']:.1f} %)")
    if section == "2.2":
        return "timing: median of repeated calls (no training seeds involved)"
    return "one training seed (not measured)"


# The study's evidence for each claim, quoted from its text (Table 2; §2's samples were judged by eye).
STUDY_EVIDENCE = {
    "1.3.3": "Table 2, seed BLEU-4: row 4 25.9 vs rows 1–3 5.2, 6.2, 15.8 (one run, no intervals)",
    "1.3.3 (2)": "Table 2, seed BLEU-4: row 2 6.2 vs row 1 5.2",
    "1.3.3 (1)": "Table 2, seed BLEU-4: row 3 15.8 vs row 2 6.2 (different encoders: ViT-g/14 vs ViT-B/32)",
    "2.1": "LoRA samples look closer to Flickr8k's photos (by eye)",
    "2.2": "1,000 images: ≈ 3 h with SDXL vs ≈ 50 min with Infinity-2B on one A6000 (≈ 3.6×)",
    "2.3": "'a girl in pink / black / green dress' samples show the colours (by eye)",
    "2.4": "the same prompts show some semantics after limited training (by eye, Fig. 11)",
}

CLAIMS: list[tuple[str, str, Callable[[str], tuple[str, object]]]] = [
    *[(f"1.3.3 [{m}]", "Q-former + LLM (row 4) beats rows 1–3",
       (lambda p, m=m: caption_claim(p, 4, [1, 2, 3], m, pretrained_qformer))) for m in CAPTION_METRICS],
    *[(f"1.3.3 (2) [{m}]", "CLIP beats the ImageNet CNN (row 2 > row 1)",
       (lambda p, m=m: caption_claim(p, 2, [1], m, clip_is_the_better_encoder))) for m in CAPTION_METRICS],
    *[(f"1.3.3 (1) [{m}]", "Q-former beats cross-attention on the same image tokens (row 3 > row 2)",
       (lambda p, m=m: caption_claim(p, 3, [2], m, same_encoder))) for m in CAPTION_METRICS],
    ("2.1", "LoRA moves the style toward the target data", lora_style),
    ("2.2", "Infinity is about 3× faster than diffusion (≈ 3.6×)", infinity_speed),
    ("2.3", "pixel diffusion learns colour words", colour_words),
    ("2.4", "the latent diffusion model learns some semantics", ldm_semantics),
]


def check(profile: str) -> list[dict[str, str]]:
    """One row per claim: §, the claim, the study's evidence, our numbers (95 % intervals), the verdict, the
    spread over training seeds (``seed_spread``) and ``flags`` (a rule or model of the verdict changed after a
    result was seen; see ``threshold_changes``)."""
    rows, world8k = [], profiles.get(profile).data.source == "world8k"
    for section, claim, fn in CLAIMS:
        try:
            ours, ok = fn(profile)
        except (KeyError, TypeError, IndexError, ValueError) as e:  # a result with another layout: say so, never guess
            ours, ok = f"result unreadable ({type(e).__name__}: {e})", None
        rows.append({"§": section, CLAIM_COL: claim, "study's evidence": STUDY_EVIDENCE.get(section.split(" [")[0]),
                     "ours": ours,
                     "verdict": verdict(ok) + (" on world8k" if decided(ok) and world8k else ""),
                     "seed spread": seed_spread(profile, section.split(" [")[0]), "flags": flag(section)})
    return rows


def save(profile: str) -> list[dict[str, str]]:
    rows = check(profile)
    results.save_table(profile, "claims", rows, note=f"profile {profile}; verdicts computed from saved results")
    results.save_table(profile, "threshold_changes", threshold_rows(),
                       note="tests, thresholds and models changed after a result was seen")
    itm = stage1_itm(profile)
    if itm:
        results.save(profile, "stage1_itm", itm)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu")
    rows = save(ap.parse_args().profile)
    for r in rows:
        print(f"{r['§']:>10}  {r['verdict']:<28} {r[CLAIM_COL]}: {r['ours']}")


if __name__ == "__main__":
    main()
