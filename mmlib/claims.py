"""The study's claims, checked against our saved results.

Each check reads results saved by the notebooks and returns our number and a verdict. A claim
whose results are missing says so ("not run"); one whose stated precondition fails (the stand-in
too weak to test it) is "not testable here" and names the precondition; nothing is typed by hand.

A verdict never stops a run: notebooks assert invariants only (shapes, finite values, falling
losses), and the claims are judged here, after the run. Each test and its margin were written
before the ``cpu`` run that judges it; a threshold changed after a result was seen is listed in
:data:`THRESHOLD_CHANGES` (old, new, why) and shown in the report under the claims table.

    python -m mmlib.claims --profile cpu     # saves the table ``claims`` for report.md
"""
from __future__ import annotations

import argparse
from typing import Any, Callable

from . import profiles, results
from .eval.bootstrap import Interval

HOLDS, FAILS, NOT_RUN, NOT_TESTABLE = "holds", "does not hold", "not run", "not testable here"
CLAIM_COL = "study's claim"


class NotTestable:
    """A verdict for a claim whose stated precondition failed; ``why`` names the precondition."""

    def __init__(self, why: str):
        self.why = why

    def __repr__(self) -> str:
        return f"NotTestable({self.why!r})"


# Thresholds changed after a result was seen: (claim §, old test, new test, why, date).
THRESHOLD_CHANGES: list[dict[str, str]] = [
    {"claim": "2.3", "old": "06 asserted that more than 3/8 of the colour-word samples read as the prompted colour; "
                            "the claims table judged more than twice chance",
     "new": "one-sided binomial test of the hits against chance (1/8), p < 0.01, 16 samples per colour",
     "why": "3/8 and 2× chance had no test behind them; with the same noise for every colour a generator that ignores "
            "the colour word hits 1/8 in expectation whatever the oracle's biases, so the binomial test is exact",
     "date": "2026-11-27"},
    {"claim": "2.4 (07 first stage)", "old": "07 asserted a held-out VQ-VAE PSNR above 20 dB (5 dB in smoke)",
     "new": "PSNR above that of a flat image in each image's mean colour (an invariant: the first stage carries "
            "spatial information)",
     "why": "the cpu first stage after 400 steps reached 16.3 dB against 14.4 dB for the flat image; 20 dB was a guess",
     "date": "2026-11-27"},
    {"claim": "2.1", "old": "photo-style share after LoRA above the base's by more than 10 points (point estimates); "
                            "earlier 08 asserted +30 points, at most 10 points of fidelity lost and style accuracy >= 0.9",
     "new": "lower bound of the paired 95 % interval of the rise above 10 points, judged only by a calibrated classifier "
            "(held-out accuracy >= 90 %, every control read as its true style in >= 90 % of its images), else not testable",
     "why": "tightened after the cpu result (34 % -> 99 %) was seen: a point difference ignores prompt sampling, and a "
            "classifier never shown VAE-decoded or blurred cartoons may call decoding artefacts 'photo'",
     "date": "2026-11-29"},
    {"claim": "2.2", "old": "Infinity at least 2× as many images per second as 06 (direction only)",
     "new": "every measured speed-up (vs 06 and 07) within a factor 2 of the study's 3.6× (1.8×–7.2×), with the "
            "network passes per image of every model stated; not testable when the diffusion steps were cut (smoke)",
     "why": "the study claims a size ('about 3×'), not only a direction; changed after the cpu result (22.5× vs 06) was seen",
     "date": "2026-11-29"},
    {"claim": "2.3", "old": "binomial test whatever the oracle reads",
     "new": "the same test; not testable when the oracle cannot read clothing colour (held-out accuracy not above its "
            "majority prior by READABLE_MARGIN, see below)",
     "why": "added after the cpu results were seen: an oracle at its prior cannot tell a colour-blind generator from one "
            "that follows the colour word",
     "date": "2026-11-29"},
    {"claim": "2.4", "old": "micro-averaged prompt fidelity above the mean-image baseline by 5 points (point estimates, "
                            "every attribute)",
     "new": "lower bound of the 95 % interval of the macro fidelity over readable attributes above the upper bound of "
            "the prior baseline's (real render of another prompt's scene), held-out prompts; not testable when no "
            "attribute is readable",
     "why": "changed after the cpu result was seen: heads at or below their majority prior (count, ball, garment, hair "
            "and ball colour, second subject) inflated the micro average (every generated image was read as count 1), "
            "and the mean image is a weaker baseline than the prior",
     "date": "2026-11-29"},
    {"claim": "2.3, 2.4 (readable attributes)", "old": "READABLE_MARGIN = 0.10 (accuracy above the majority prior)",
     "new": "READABLE_MARGIN = 0.15",
     "why": "changed after the oracle was retrained with seeds 0, 1, 2 (no generator scored yet): action sat 8.6–10.9 "
            "points above its prior, readable or not depending on the seed; at 0.15 every attribute is on the same "
            "side for all three seeds",
     "date": "2026-11-29"},
    {"claim": "2.1 (style classifier)", "old": "the style classifier trains on the train split's clean renders of both "
                                               "styles (blur / noise / shift / flip augmentation)",
     "new": "the same, plus the same train renders through 08's VAE round trip (both styles, labels unchanged); "
            "controls (held-out renders) and their thresholds unchanged",
     "why": "changed after the cpu run of 7d19fcb was seen: real cartoons through the VAE were read as cartoon in 85 % "
            "< 90 %, so 2.1 was not testable; the classifier had keyed on the VAE's artefacts, which now occur in both "
            "classes",
     "date": "2026-11-29"},
]

# Margins of the text-to-image verdicts (2.1–2.4), fixed before the cpu run that judges them.
STYLE_RISE = 0.10            # 2.1: lower bound of the paired interval of the LoRA − base photo-style share
STUDY_SPEEDUP = 180 / 50     # 2.2: 1000 images in ≈ 3 h (SDXL) vs ≈ 50 min (Infinity-2B), one A6000
SPEEDUP_FACTOR = 2.0         # 2.2: the size reproduces when every speed-up is within [3.6 / 2, 3.6 × 2]
COLOUR_P = 0.01              # 2.3: one-sided binomial test of the colour-word hits against chance


def _get(profile: str, key: str) -> Any:
    return results.load(profile, key, default=None)


def _verdict(ok) -> str:
    if isinstance(ok, NotSeparable):
        return NOT_SEPARABLE
    if isinstance(ok, NotTestable):
        return f"{NOT_TESTABLE} ({ok.why})"
    return NOT_RUN if ok is None else HOLDS if ok else FAILS


def _scores(profile: str, nb: str) -> dict | None:
    s = _get(profile, f"{nb}_scores")
    return s.get("model") if s else None


# ----------------------------------------------------------------------------- captioning (1.3.3)
# The test, fixed before the cpu run that judges it: row A beats row B on a metric when A's 95 %
# bootstrap interval (1,000 resamples of the validation images, the same resamples for every row)
# lies entirely above B's; it "does not hold" when it lies entirely below or when B is above;
# overlapping intervals are "not separable". Each claim is judged on seed BLEU-4 and on attribute F1.
NOT_SEPARABLE = "not separable (intervals overlap)"
PROBE_MARGIN = 0.01           # C2's precondition: the CLIP's probe macro accuracy ≥ the CNN's + 1 point
CAPTION_METRICS = {"BLEU": ("seed BLEU-4", 1.0), "F1": ("f1", 100.0)}
ROW_NOTEBOOK = {1: "02", 2: "03", 3: "04", 4: "05"}


class NotSeparable:
    """Neither row's interval lies above the other's."""


def _caption_iv(profile: str, row: int, metric: str):
    r = (_get(profile, f"{ROW_NOTEBOOK[row]}_truth") or {}).get("model")
    if r is None:
        return None
    key, _ = CAPTION_METRICS[metric]
    d = r.get("facts", {}).get(key) if metric == "F1" else r.get(key)
    return Interval.from_dict(d) if d and None not in (d.get("value"), d.get("lo"), d.get("hi")) else None


def beats(a: Interval, b: Interval) -> bool | NotSeparable:
    """True: a's interval above b's; False: at or below it with no overlap; else NotSeparable."""
    if a.lo > b.hi:
        return True
    if a.hi < b.lo:
        return False
    return NotSeparable()


def caption_claim(profile: str, better: int, worse: list[int], metric: str,
                  precondition=None) -> tuple[str, bool | None | NotTestable | NotSeparable]:
    """Row ``better`` beats every row of ``worse`` on ``metric`` (BLEU or F1), by :func:`beats`."""
    rows = {r: _caption_iv(profile, r, metric) for r in [better, *worse]}
    if any(v is None for v in rows.values()):
        return "rows " + ", ".join(str(r) for r, v in rows.items() if v is None) + " not run", None
    scale = CAPTION_METRICS[metric][1]
    text = "; ".join(f"row {r}: {iv.fmt(1, scale)}" for r, iv in rows.items())
    if precondition is not None:
        why = precondition(profile)
        if why:
            return text, NotTestable(why)
    verdicts = [beats(rows[better], rows[w]) for w in worse]
    if any(v is False for v in verdicts):
        return text, False
    if any(isinstance(v, NotSeparable) for v in verdicts):
        return text, NotSeparable()
    return text, True


def clip_is_the_better_encoder(profile: str) -> str | None:
    """C2's precondition: the world CLIP's features beat the ImageNet CNN's on the linear probe of the
    scene attributes (macro accuracy); None when it holds, else why not (paper: the study's CLIP)."""
    if profiles.get(profile).weights == "hub":
        return None
    p = _get(profile, "03_probe")
    if p is None:
        return "03's encoder probe not run"
    if p["clip_macro"] < p["cnn_macro"] + PROBE_MARGIN:
        return (f"the world CLIP is not the better encoder: linear-probe macro accuracy "
                f"{p['clip_macro']:.3f} vs the CNN's {p['cnn_macro']:.3f} (needs +{PROBE_MARGIN:.2f})")
    return None


def same_encoder(profile: str) -> str | None:
    """C3's precondition: rows 2 and 3 read the same image tokens (the comparison is of the method)."""
    enc = {nb: ((_get(profile, f"{nb}_truth") or {}).get("model") or {}).get("encoder") for nb in ("03", "04")}
    if None in enc.values() or enc["03"] == enc["04"]:
        return None
    return f"rows 2 and 3 use different encoders ({enc['03']} vs {enc['04']})"


def pretrained_qformer(profile: str) -> str | None:
    """C1's precondition: row 4's Q-former is a pretrained one (stage 1 initialised from a BERT-family
    encoder, as BLIP-2's), not the from-scratch row 3."""
    t = _get(profile, "05_training") or {}
    init = t.get("stage1_init")
    if init is None or init == "text_encoder" or profiles.get(profile).weights == "hub":
        return None
    return f"row 4's Q-former is not pretrained as in BLIP-2 (stage 1 init: {init})"


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
            f"Fréchet to real photos {_iv(base['frechet'], 1)} → {_iv(lora['frechet'], 1)}")
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
    return text, all(lo <= r <= hi for r in ratios.values())


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


def ldm_semantics(profile: str) -> tuple[str, bool | None | NotTestable]:
    """Holds when, on the held-out prompts, the lower bound of 07's macro fidelity (readable attributes)
    lies above the upper bound of the prior baseline's (a real render of another prompt's scene)."""
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
    text = (f"macro fidelity over {len(h['attributes'])} readable attributes {_iv(f['model']['macro'])} % vs prior "
            f"baseline {_iv(f['prior']['macro'])} % (mean image {_iv(f['mean_image']['macro'])} %, real ceiling "
            f"{_iv(f['ceiling']['macro'])} %)")
    comp = r["sets"].get("compositional")
    if comp and comp["fidelity"] and comp["fidelity"]["model"]["macro"]:
        cf = comp["fidelity"]
        text += f"; compositional prompts {_iv(cf['model']['macro'])} % vs prior {_iv(cf['prior']['macro'])} %"
    return text, f["model"]["macro"]["lo"] > f["prior"]["macro"]["hi"]


CLAIMS: list[tuple[str, str, Callable[[str], tuple[str, bool | None]]]] = [
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
    world8k = profiles.get(profile).data.source == "world8k"
    rows = []
    for section, claim, fn in CLAIMS:
        try:
            ours, ok = fn(profile)
        except (KeyError, TypeError, IndexError) as e:  # a result with another layout: say so, never guess
            ours, ok = f"result unreadable ({type(e).__name__}: {e})", None
        decided = isinstance(ok, bool)
        rows.append({"§": section, CLAIM_COL: claim, "ours": ours,
                     "verdict": _verdict(ok) + (" on world8k" if decided and world8k else "")})
    return rows


def save(profile: str) -> list[dict[str, str]]:
    rows = check(profile)
    results.save_table(profile, "claims", rows, note=f"profile {profile}; verdicts computed from saved results")
    results.save_table(profile, "threshold_changes",
                       [{"claim": c["claim"], "old test": c["old"], "new test": c["new"], "why": c["why"], "date": c["date"]}
                        for c in THRESHOLD_CHANGES], note="thresholds changed after a result was seen")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu")
    rows = save(ap.parse_args().profile)
    for r in rows:
        print(f"{r['§']:>10}  {r['verdict']:<28} {r[CLAIM_COL]}: {r['ours']}")


if __name__ == "__main__":
    main()
