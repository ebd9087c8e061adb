"""The shared text-to-image tables of the report: the saved rows of 06–09 side by side.

``evaluate`` (``mmlib.eval.t2i``) saves one row per notebook (result ``t2i_eval_<NN>``, ``row_key``)
and calls ``tables``, which rebuilds ``t2i_fidelity_table``, ``t2i_attributes_<set>``,
``t2i_frechet_table`` and ``t2i_budget`` from every saved row, each with its note. ``headline`` gives
a prompt set's numbers as formatted strings under fixed keys, for the report's ``value`` markers.
"""
from __future__ import annotations

from .. import results
from . import frechet
from .bootstrap import Interval
from .oracle import READABLE_MARGIN
from .t2i_fidelity import MIN_STATED
from .t2i_prompts import EVAL_SEED, SETS

ROW_NOTEBOOKS = ("06", "07", "08", "09")
HEADLINE_ATTRS = ("background", "subject", "clothing_colour", "dog_colour", "count")   # always in a headline
REFERENCE_ROWS = {"ceiling": "real render of the prompt's scene (ceiling)",
                  "prior": "real render of another prompt's scene (prior baseline)",
                  "mean_image": "mean training image",
                  "majority": "majority value of every attribute, read perfectly (text-blind best guess)"}


def row_key(notebook: str) -> str:
    return f"t2i_eval_{notebook}"


def fmt(iv: dict | None, scale: float = 100, digits: int = 1) -> str | None:
    """An interval dict as 'value [lo, hi]' (None stays None)."""
    return None if iv is None else Interval.from_dict(iv).fmt(digits, scale)


def headline(record: dict) -> dict:
    """A prompt set's record as formatted strings ('value [lo, hi]', %, or None) under fixed keys, for the
    report's ``value`` markers (a missing number renders as '–' instead of breaking the template)."""
    f, fd = record["fidelity"], record["frechet"]
    macro = lambda k: fmt(f[k]["macro"]) if f else None                          # noqa: E731
    attr = lambda k, a: fmt(f[k]["per_attribute"].get(a)) if f else None         # noqa: E731
    return {"fidelity": macro("model"), "ceiling": macro("ceiling"), "prior": macro("prior"),
            "mean_image": macro("mean_image"), "majority": macro("majority") if f and f.get("majority") else None,
            "strongest_baseline": record.get("strongest_baseline"),
            "model_minus_strongest": fmt(record.get("model_minus_strongest")),
            "model_minus_prior": fmt(record["model_minus_prior"]),
            "attributes": ", ".join(record["attributes"]) or None, "n": record["n_prompts"],
            "frechet": fmt(fd["model"], 1), "frechet_floor": fmt(fd["real_floor"], 1),
            "frechet_mean_image": fmt(fd["mean_image"], 1),
            "per_attribute": {a: {k: attr(k, a) if not f or f.get(k) else None
                                  for k in ("model", "ceiling", "prior", "mean_image", "majority")}
                              for a in HEADLINE_ATTRS}}


def _rows(profile: str) -> dict[str, dict]:
    return {nb: r for nb in ROW_NOTEBOOKS if (r := results.load(profile, row_key(nb), default=None)) is not None}


def tables(profile: str) -> dict[str, list[dict]]:
    """Assemble the saved rows of 06–09 into the report's tables: ``t2i_fidelity_table`` (macro
    fidelity, both prompt sets, three reference rows), ``t2i_attributes_<set>`` (per readable
    attribute), ``t2i_frechet_table`` and ``t2i_budget`` (the sampler budget of every model)."""
    rows = _rows(profile)
    if not rows:
        return {}
    out: dict[str, list[dict]] = {"t2i_fidelity_table": [], "t2i_frechet_table": [], "t2i_budget": []}
    for name in SETS:
        scored = {nb: r["sets"][name] for nb, r in rows.items() if name in r["sets"]}
        if not scored:
            continue
        first_nb, first = next(iter(scored.items()))
        n = first["n_prompts"]
        if first["fidelity"] is not None:
            ref = first["fidelity"]
            best = first.get("strongest_baseline")
            for k, label in REFERENCE_ROWS.items():
                if ref.get(k):          # results saved before the majority row have three reference rows
                    out["t2i_fidelity_table"].append({"prompts": name, "images": label + (" — strongest baseline"
                                                      if k == best else ""), "n": n,
                                                      "fidelity % [95 % CI]": fmt(ref[k]["macro"]),
                                                      "− prior baseline (points)": None,
                                                      "− strongest baseline (points)": None})
            for nb, s in scored.items():
                out["t2i_fidelity_table"].append({"prompts": name, "images": f"{nb} {rows[nb]['model']}", "n": n,
                                                  "fidelity % [95 % CI]": fmt(s["fidelity"]["model"]["macro"]),
                                                  "− prior baseline (points)": fmt(s["model_minus_prior"]),
                                                  "− strongest baseline (points)": fmt(s.get("model_minus_strongest"))})
            attrs = first["attributes"]
            cols = {"ceiling": (first_nb, "ceiling"), "prior baseline": (first_nb, "prior"),
                    "mean image": (first_nb, "mean_image"),
                    **({"majority": (first_nb, "majority")} if ref.get("majority") else {}),
                    **{nb: (nb, "model") for nb in scored}}
            out[f"t2i_attributes_{name}"] = [
                {"attribute": a, "prompts stating it": first["counts"][a],
                 **{col: fmt(scored[src]["fidelity"][k]["per_attribute"].get(a)) for col, (src, k) in cols.items()}}
                for a in attrs]
        f = first["frechet"]
        out["t2i_frechet_table"] += [
            {"prompts": name, "images": "real floor (a disjoint real set)", "n": f["n"], "px": f["resolution"],
             "Fréchet [95 % CI]": fmt(f["real_floor"], 1)},
            {"prompts": name, "images": "mean training image", "n": f["n"], "px": f["resolution"],
             "Fréchet [95 % CI]": fmt(f["mean_image"], 1)}]
        out["t2i_frechet_table"] += [
            {"prompts": name, "images": f"{nb} {rows[nb]['model']}", "n": s["frechet"]["n"],
             "px": s["frechet"]["resolution"], "Fréchet [95 % CI]": fmt(s["frechet"]["model"], 1)}
            for nb, s in scored.items()]
    for nb, r in rows.items():
        c = r.get("cost") or {}
        out["t2i_budget"].append({
            "NB": nb, "model": r["model"], "sampler": r.get("sampler"), "steps (or scales)": c.get("steps"),
            "CFG": c.get("guidance"), "network passes / image": c.get("network_evals"),
            "decoder pass": r.get("decoder"), "batch": c.get("batch_size"), "seed": r["sets"]["heldout"]["seed"],
            **{f"{s} prompts": (r["sets"].get(s) or {}).get("n_prompts") for s in SETS},
            "s/image": c.get("seconds_per_image"), "device": c.get("device")})
    notes = {
        "t2i_fidelity_table": (
            f"Profile {profile}. Macro average over the attributes the oracle can read (accuracy above its majority "
            f"prior by more than {100 * READABLE_MARGIN:.0f} points) and at least {MIN_STATED} prompts state; 95 % "
            "bootstrap intervals over prompts, every row of a prompt set resampled alike; '− prior baseline' and "
            "'− strongest baseline' are paired differences (the strongest of the prior, mean-image and majority "
            "rows on that set). An attribute whose real renders score no better than the mean image or the "
            "majority row on a set is not readable on that set and left out of its average. Reference rows are "
            "the same for every model (same prompts, same oracle)."),
        "t2i_frechet_table": (
            f"Profile {profile}. Fréchet distance to the prompts' real renders in {frechet.FEATURES}; n images per "
            "set; the floor is the distance between two disjoint real sets of the same size (n ≪ 1280 dimensions "
            "biases every distance upwards). Intervals: prompts resampled, shifted by the resampling offset."),
        "t2i_budget": (
            f"Profile {profile}. Every model samples the same prompts with seed {EVAL_SEED}; network passes per "
            "image count a classifier-free-guidance step twice (conditional + unconditional)."),
    }
    for name in SETS:
        notes[f"t2i_attributes_{name}"] = (
            f"Profile {profile}, {name} prompts: share of the prompts stating the attribute whose image the "
            "oracle reads as stated, % [95 % CI]; readable attributes only.")
    for key, table_rows in out.items():
        if table_rows:
            fmts = {"s/image": ".3f"} if key == "t2i_budget" else {}
            results.save_table(profile, key, table_rows, formats=fmts, note=notes[key])
    return out

