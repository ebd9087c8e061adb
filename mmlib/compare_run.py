"""Compare this machine's saved results (``runs/<profile>/results``, or ``$MMLIB_RUNS``) with the
committed report's snapshot ``report/results-<profile>.json``: which results are the same, which
differ and why they may (another commit, precision, CPU kind, profile or thread count than the
report's, read from each result's ``.meta.json``; wall times differ on every run), which were not run.

A local run may legitimately differ from the committed report (partial, another CPU, another
precision), so this is a command, not a unit test; it exits 0 unless ``--strict`` (then 1 when any
result differs or is missing).

    python -m mmlib.compare_run [--profile cpu] [--strict]
"""
from __future__ import annotations

import argparse
import json
import re
from typing import Any

from . import report, results

FIELDS = ("commit", "precision", "CPU", "profile", "threads")   # provenance columns that change numbers
LABELS = {"CPU": "CPU kind", "threads": "thread count"}
WALL_TIMES = re.compile(r"timing|speed|runtime|budget")          # results holding wall times
NOT_RUN_CELL = "(not run: "       # a table row left out of this run, e.g. preflight.NOT_RUN (study fixtures absent)


def why(profile: str, key: str, committed_rows: list[dict[str, Any]]) -> str:
    """Why the local result ``key`` may differ from the report's: its provenance against the report's
    rows of the same notebook (all rows when the notebook is not in the report)."""
    if results.load_provenance(profile, key) is None:
        return "no .meta.json here: provenance unknown"
    here = report.provenance(profile, [key])["rows"][0]
    rows = [r for r in committed_rows if r["notebook"] == here["notebook"]] or committed_rows
    reasons = []
    for field in FIELDS:
        theirs = sorted({str(r.get(field)) for r in rows})
        if str(here.get(field)) not in theirs:
            reasons.append(f"other {LABELS.get(field, field)} "
                           f"(here {here.get(field)}, report {', '.join(theirs) or 'unknown'})")
    if WALL_TIMES.search(key):
        reasons.append("holds wall times, which differ on every run")
    return "; ".join(reasons) or "same commit, precision, CPU, profile and threads as the report: not expected to differ"


def compare(profile: str = "cpu") -> dict[str, Any]:
    """``{"same": [keys], "differ": {key: reason}, "missing": [keys]}`` for every result of the
    committed snapshot (its ``provenance`` entry aside)."""
    snap = json.loads(report.snapshot_path(profile).read_text())
    rows = (snap.pop(report.PROVENANCE, None) or {}).get("rows", [])
    out: dict[str, Any] = {"same": [], "differ": {}, "missing": []}
    for key, committed in sorted(snap.items()):
        local = results.load(profile, key, default=None)
        if local is None:
            out["missing"].append(key)
        elif local == committed:
            out["same"].append(key)
        elif results.not_run(local):                  # saved as not computed here (results.save_not_run)
            out["differ"][key] = f"not run here: {results.not_run(local)}"
        elif NOT_RUN_CELL in json.dumps(local, ensure_ascii=False):    # rows marked "(not run: …)"
            out["differ"][key] = "some rows marked \"(not run: …)\" here; " + why(profile, key, rows)
        else:
            out["differ"][key] = why(profile, key, rows)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--strict", action="store_true", help="exit 1 when any result differs or was not run here")
    args = ap.parse_args(argv)
    snapshot = report.snapshot_path(args.profile)
    if not snapshot.exists():
        print(f"no committed snapshot {snapshot.relative_to(report.ROOT)}: nothing to compare")
        return 1 if args.strict else 0
    c = compare(args.profile)
    print(f"{results.RUNS / args.profile / 'results'} against {snapshot.relative_to(report.ROOT)}: "
          f"{len(c['same'])} same, {len(c['differ'])} differ, {len(c['missing'])} not run here")
    for key, reason in c["differ"].items():
        print(f"  differs  {key}: {reason}")
    if c["missing"]:
        print(f"  not run  {', '.join(c['missing'])}")
    return 1 if args.strict and (c["differ"] or c["missing"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
