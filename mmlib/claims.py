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

from . import results

HOLDS, FAILS, NOT_RUN, NOT_TESTABLE = "holds", "does not hold", "not run", "not testable here"
CLAIM_COL = "study's claim"


class NotTestable:
    """A verdict for a claim whose stated precondition failed; ``why`` names the precondition."""

    def __init__(self, why: str):
        self.why = why

    def __repr__(self) -> str:
        return f"NotTestable({self.why!r})"


# Thresholds changed after a result was seen: (claim §, old test, new test, why, date).
THRESHOLD_CHANGES: list[dict[str, str]] = []


def _get(profile: str, key: str) -> Any:
    return results.load(profile, key, default=None)


def _verdict(ok: bool | None | NotTestable) -> str:
    if isinstance(ok, NotTestable):
        return f"{NOT_TESTABLE} ({ok.why})"
    return NOT_RUN if ok is None else HOLDS if ok else FAILS


def _scores(profile: str, nb: str) -> dict | None:
    s = _get(profile, f"{nb}_scores")
    return s.get("model") if s else None


def qformer_llm_best(profile: str) -> tuple[str, bool | None]:
    s = {nb: _scores(profile, nb) for nb in ("02", "03", "04", "05")}
    if any(v is None for v in s.values()):
        return "rows 1–4 not all run", None
    keys = [f"seed BLEU-{n}" for n in range(1, 5)]
    best = all(s["05"][k] >= max(s[nb][k] for nb in ("02", "03", "04")) for k in keys)
    text = "; ".join(f"B{k[-1]}: " + " / ".join(f"{s[nb][k]:.1f}" for nb in ("02", "03", "04", "05")) for k in keys)
    return f"rows 1/2/3/4, seed BLEU — {text}", best


def pairwise(profile: str, better: str, worse: list[str], metric: str = "seed BLEU-4") -> tuple[str, bool | None]:
    a = _scores(profile, better)
    bs = [_scores(profile, w) for w in worse]
    if a is None or any(b is None for b in bs):
        return "not all rows run", None
    b = max(x[metric] for x in bs)
    cider = a["CIDEr-D"] > max(x["CIDEr-D"] for x in bs)
    return (f"{metric} {a[metric]:.1f} vs {b:.1f}; CIDEr-D {a['CIDEr-D']:.1f} vs "
            f"{max(x['CIDEr-D'] for x in bs):.1f}"), a[metric] > b and cider


def lora_style(profile: str) -> tuple[str, bool | None]:
    s = _get(profile, "sd_lora")
    if not s or s.get("photo_share_lora") is None:
        return "08 not run", None
    return (f"photo-style share {s['photo_share_base']:.0f} % → {s['photo_share_lora']:.0f} %; "
            f"fidelity {s['fidelity_base']:.0f} % → {s['fidelity_lora']:.0f} %"), \
        s["photo_share_lora"] > s["photo_share_base"] + 10


def infinity_speed(profile: str) -> tuple[str, bool | None]:
    s = _get(profile, "infinity_speed")
    if not s or s.get("ratio_vs_06") is None:
        return "09 speed comparison not run", None
    r6, r7 = s["ratio_vs_06"], s.get("ratio_vs_07")
    text = f"{r6:.1f}× vs 06" + (f", {r7:.1f}× vs 07" if r7 else "") + f" (batch {s['batch_size']}, {s['device']})"
    return text, r6 >= 2.0


def colour_words(profile: str) -> tuple[str, bool | None]:
    c = _get(profile, "06_colour_words")
    if not c:
        return "06 not run", None
    # holds when the colour asked for is read significantly more often than chance (one-sided binomial)
    p = c.get("p_value")
    return (f"oracle reads the prompted dress colour in {100 * c['clothing_colour']:.0f} % of "
            f"{c.get('n', 'the')} samples (chance {100 * c['chance']:.1f} %"
            + (f", binomial p = {p:.2g})" if p is not None else ")")), \
        (p is not None and p < 0.01 and c["clothing_colour"] > c["chance"])


def ldm_semantics(profile: str) -> tuple[str, bool | None]:
    r = _get(profile, "t2i_row_07")
    if not r:
        return "07 not run", None
    return (f"prompt fidelity {100 * r['fidelity']:.0f} % vs mean-image baseline {100 * r['baseline']:.0f} % "
            f"(real ceiling {100 * r['ceiling']:.0f} %)"), r["fidelity"] > r["baseline"] + 0.05


CLAIMS: list[tuple[str, str, Callable[[str], tuple[str, bool | None]]]] = [
    ("1.3.3", "Q-former + LLM (row 4) is best on every BLEU", qformer_llm_best),
    ("1.3.3 (2)", "CLIP beats the ImageNet CNN (row 2 > row 1)", lambda p: pairwise(p, "03", ["02"])),
    ("1.3.3 (1)", "Q-former beats plain cross-attention (row 3 > rows 1–2)", lambda p: pairwise(p, "04", ["02", "03"])),
    ("2.1", "LoRA moves the style toward the target data", lora_style),
    ("2.2", "Infinity is about 3× faster than diffusion", infinity_speed),
    ("2.3", "pixel diffusion learns colour words", colour_words),
    ("2.4", "the latent diffusion model learns some semantics", ldm_semantics),
]


def check(profile: str) -> list[dict[str, str]]:
    rows = []
    for section, claim, fn in CLAIMS:
        try:
            ours, ok = fn(profile)
        except (KeyError, TypeError, IndexError) as e:  # a result with another layout: say so, never guess
            ours, ok = f"result unreadable ({type(e).__name__}: {e})", None
        decided = isinstance(ok, bool)
        rows.append({"§": section, CLAIM_COL: claim, "ours": ours,
                     "verdict": _verdict(ok) + (" on world8k" if decided and profile != "paper" else "")})
    return rows


def save(profile: str) -> list[dict[str, str]]:
    rows = check(profile)
    results.save_table(profile, "claims", rows, note=f"profile {profile}; verdicts computed from saved results")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu")
    rows = save(ap.parse_args().profile)
    for r in rows:
        print(f"{r['§']:>10}  {r['verdict']:<28} {r[CLAIM_COL]}: {r['ours']}")


if __name__ == "__main__":
    main()
