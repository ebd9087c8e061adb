"""Tests, thresholds and models of the claims that changed after a result was seen (old, new, why, date,
and the commit where one names it). ``affects``: the claims-table sections (without the metric suffix)
whose verdict the change touches; ``kind``: "rule" (the test or its margin) or "model" (what is judged).
``mmlib.claims`` flags every verdict a change touches and shows this list under the claims table."""
from __future__ import annotations

THRESHOLD_CHANGES: list[dict] = [
    {"claim": "2.3", "affects": ("2.3",), "kind": "rule", "old": "06 asserted that more than 3/8 of the colour-word samples read as the prompted colour; "
                            "the claims table judged more than twice chance",
     "new": "one-sided binomial test of the hits against chance (1/8), p < 0.01, 16 samples per colour",
     "why": "3/8 and 2× chance had no test behind them; with the same noise for every colour a generator that ignores "
            "the colour word hits 1/8 in expectation whatever the oracle's biases, so the binomial test is exact",
     "date": "2026-11-27"},
    {"claim": "2.4 (07 first stage)", "affects": ("2.4",), "kind": "rule", "old": "07 asserted a held-out VQ-VAE PSNR above 20 dB (5 dB in smoke)",
     "new": "PSNR above that of a flat image in each image's mean colour (an invariant: the first stage carries "
            "spatial information)",
     "why": "the cpu first stage after 400 steps reached 16.3 dB against 14.4 dB for the flat image; 20 dB was a guess",
     "date": "2026-11-27"},
    {"claim": "2.1", "affects": ("2.1",), "kind": "rule", "old": "photo-style share after LoRA above the base's by more than 10 points (point estimates); "
                            "earlier 08 asserted +30 points, at most 10 points of fidelity lost and style accuracy >= 0.9",
     "new": "lower bound of the paired 95 % interval of the rise above 10 points, judged only by a calibrated classifier "
            "(held-out accuracy >= 90 %, every control read as its true style in >= 90 % of its images), else not testable",
     "why": "tightened after the cpu result (34 % -> 99 %) was seen: a point difference ignores prompt sampling, and a "
            "classifier never shown VAE-decoded or blurred cartoons may call decoding artefacts 'photo'",
     "date": "2026-11-29"},
    {"claim": "2.2", "affects": ("2.2",), "kind": "rule", "old": "Infinity at least 2× as many images per second as 06 (direction only)",
     "new": "every measured speed-up (vs 06 and 07) within a factor 2 of the study's 3.6× (1.8×–7.2×), with the "
            "network passes per image of every model stated; not testable when the diffusion steps were cut (smoke)",
     "why": "the study claims a size ('about 3×'), not only a direction; changed after the cpu result (22.5× vs 06) was seen",
     "date": "2026-11-29"},
    {"claim": "2.3", "affects": ("2.3",), "kind": "rule", "old": "binomial test whatever the oracle reads",
     "new": "the same test; not testable when the oracle cannot read clothing colour (held-out accuracy not above its "
            "majority prior by READABLE_MARGIN, see below)",
     "why": "added after the cpu results were seen: an oracle at its prior cannot tell a colour-blind generator from one "
            "that follows the colour word",
     "date": "2026-11-29"},
    {"claim": "2.4", "affects": ("2.4",), "kind": "rule", "old": "micro-averaged prompt fidelity above the mean-image baseline by 5 points (point estimates, "
                            "every attribute)",
     "new": "lower bound of the 95 % interval of the macro fidelity over readable attributes above the upper bound of "
            "the prior baseline's (real render of another prompt's scene), held-out prompts; not testable when no "
            "attribute is readable",
     "why": "changed after the cpu result was seen: heads at or below their majority prior (count, ball, garment, hair "
            "and ball colour, second subject) inflated the micro average (every generated image was read as count 1), "
            "and the mean image is a weaker baseline than the prior",
     "date": "2026-11-29"},
    {"claim": "2.3, 2.4 (readable attributes)", "affects": ("2.3", "2.4"), "kind": "rule", "old": "READABLE_MARGIN = 0.10 (accuracy above the majority prior)",
     "new": "READABLE_MARGIN = 0.15",
     "why": "changed after the oracle was retrained with seeds 0, 1, 2 (no generator scored yet): action sat 8.6–10.9 "
            "points above its prior, readable or not depending on the seed; at 0.15 every attribute is on the same "
            "side for all three seeds",
     "date": "2026-11-29"},
    {"claim": "2.1 (style classifier)", "affects": ("2.1",), "kind": "model", "old": "the style classifier trains on the train split's clean renders of both "
                                               "styles (blur / noise / shift / flip augmentation)",
     "new": "the same, plus the same train renders through 08's VAE round trip (both styles, labels unchanged); "
            "controls (held-out renders) and their thresholds unchanged",
     "why": "changed after the cpu run of 7d19fcb was seen: real cartoons through the VAE were read as cartoon in 85 % "
            "< 90 %, so 2.1 was not testable; the classifier had keyed on the VAE's artefacts, which now occur in both "
            "classes",
     "date": "2026-11-29"},
    {"claim": "1.3.3, (1), (2)", "affects": ("1.3.3", "1.3.3 (1)", "1.3.3 (2)"), "kind": "rule", "commit": "a99a1fa",
     "old": "C1: row 4 best on every seed BLEU-1…4; C2: row 2 above row 1 on seed BLEU-4 and CIDEr-D; C3: row 3 above rows "
            "1 and 2 on seed BLEU-4 and CIDEr-D (point estimates)",
     "new": "row A beats row B when A's bootstrap 95 % interval lies above B's, on seed BLEU-4 and on attribute F1 "
            "separately; overlapping intervals are 'not separable'; C1 needs a pretrained Q-former, C2 a CLIP that wins "
            "the linear probe, C3 rows 2 and 3 on the same image tokens (else 'not testable here'); C3 compares row 3 "
            "with row 2 only",
     "why": "a point difference ignores the sampling of the validation images, and C1–C3 compare models, not encoders "
            "or initialisations; written after the earlier cpu captioning results were seen, and it softened C2 from "
            "'does not hold' (row 2 below row 1 on the point estimates) to 'not separable'",
     "date": "2026-11-29"},
    {"claim": "1.3.3 (2) (probe precondition)", "affects": ("1.3.3 (2)",), "kind": "rule", "commit": "86173e4",
     "old": "C2 testable when the world CLIP's linear-probe macro accuracy is above the CNN's",
     "new": "… above the CNN's by PROBE_MARGIN = 0.01 (one point)",
     "why": "added with the text-to-image scoring after the probe results were seen: a CLIP tied with the CNN on the "
            "probe is not the better encoder that C2 presupposes",
     "date": "2026-11-29"},
    {"claim": "2.1 (which LoRA row)", "affects": ("2.1",), "kind": "rule", "commit": "c9d6452",
     "old": "the first LoRA row of 08's table (weight 0.5) against the base",
     "new": "the LoRA at full weight (1.0) against the base",
     "why": "set with the first committed cpu report, after 08's rows at both weights were seen; the study's LoRA is "
            "applied at full weight",
     "date": "2026-11-27"},
    {"claim": "2.4 (07 first stage)", "affects": ("2.4",), "kind": "model", "commit": "9600710",
     "old": "07's cpu first stage with the perceptual term (weight 1 at 64 px) at batch 16: 16.7 dB held-out PSNR",
     "new": "the perceptual term dropped (weight 0, L1 + codebook + PatchGAN) at batch 32: 22 dB",
     "why": "the LDM's first stage was too blurry to carry the scene; changed after the cpu results of the earlier "
            "first stage were seen, where 2.4 did not hold; with the new first stage it holds (in bf16)",
     "date": "2026-11-29"},
    {"claim": "2.4 (training seeds)", "affects": ("2.4",), "kind": "rule",
     "old": "one training run, against the strongest baseline on the 200 held-out prompts; 'needs seeds' when the "
            "margin was below a stated spread (the bf16 − fp32 difference of one earlier run)",
     "new": "the second stage trained with 3 seeds, each sampling the first 100 held-out prompts: holds when every "
            "seed's lower bound lies above the strongest baseline's upper bound, does not hold when none does, "
            "otherwise not decided (seeds disagree); the spread over seeds is stated",
     "why": "the earlier verdict flipped with the training precision, so the run-to-run spread was larger than the "
            "margin; set before the run that judges it, after the single-seed results were seen",
     "date": "2026-12-08"},
]


def changes_for(section: str) -> list[dict]:
    """The changes that touch the claims-table row ``section`` (e.g. "1.3.3 (2) [F1]" or "2.4")."""
    base = section.split(" [")[0]
    return [c for c in THRESHOLD_CHANGES if base in c["affects"]]


def flag(section: str) -> str:
    """'rule ×2, model changed after a result was seen' for the row ``section``; '' when none did."""
    kinds = [c["kind"] for c in changes_for(section)]
    if not kinds:
        return ""
    parts = [f"{k}{f' ×{kinds.count(k)}' if kinds.count(k) > 1 else ''}" for k in ("rule", "model") if k in kinds]
    return " and ".join(parts) + " changed after a result was seen"


def table_rows() -> list[dict[str, str]]:
    return [{"claim": c["claim"], "kind": c["kind"], "old test": c["old"], "new test": c["new"], "why": c["why"],
             "date": c["date"]} for c in THRESHOLD_CHANGES]
