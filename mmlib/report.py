"""Build ``report.md`` and ``figures/`` from saved results.

The report is assembled from hand-written section templates ``report/*.md`` (in file-name order).
Prose stays as written; every number comes from ``runs/<profile>/results/*.json`` through markers:

- ``<!-- table:KEY -->`` … ``<!-- /table -->``: replaced by the markdown table saved with
  ``results.save_table(profile, KEY, rows)``;
- ``<!-- value:KEY.path.to.field:FORMAT -->`` … ``<!-- /value -->``: one number or string
  (``FORMAT`` a Python format spec such as ``.1f``; path parts index dicts or lists and may contain
  spaces, e.g. ``03_clip_retrieval.i2t R@1:.1f``, but not ``.``, ``:`` or ``>``);
- ``figures/NAME.png`` links: the figure saved by ``results.save_figure`` is copied to ``figures/``.

Markers are kept in the output, so the built report can be diffed against a rebuild.
A result that is missing renders as ``(not run: KEY)`` — never as a stale or typed number; one saved with
``results.save_not_run(profile, KEY, reason)`` (e.g. the seed-exact rows when the study's fixtures are absent,
see ``mmlib.preflight``) renders as ``(not run: reason)``, for its table and for every value read from it. A marker
that does not parse, or a path that a saved result does not have, is an error naming the template
file and line (``TemplateError``): the report never hides its own gaps.
Every saved result the report read is also written to ``report/results-<profile>.json`` (committed
with the cpu report): ``tests/test_report.py`` rebuilds ``report.md`` from it (never from ``runs/``);
``python -m mmlib.compare_run`` compares a local run's saved results with it.

Provenance: the report also reads the ``KEY.meta.json`` sidecar of every result it shows and fills
the entry ``provenance`` (not a saved result; it goes into the snapshot like one): a table with one
line per notebook and run (``<!-- table:provenance -->``) and a banner (``<!-- value:provenance.banner
-->``). Results of several commits, of a dirty tree or of an unknown commit (no sidecar, no git) make
the report *mixed*: ``build`` then refuses (``MixedProvenanceError``, naming the notebooks and their
commits) unless ``allow_mixed=True``, and the banner says in bold which commits and run ids it mixes.

    python -m mmlib.report --profile cpu [--allow-mixed]
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable

from . import results
from .paths import FIGURES, ROOT

SECTIONS = ROOT / "report"
TABLE = re.compile(r"<!-- table:(?P<key>[\w.-]+) -->.*?<!-- /table -->", re.S)
VALUE = re.compile(r"<!-- value:(?P<key>[\w-]+)(?P<path>(?:\.[^.:<>]*[^.:<> ])*)(?::(?P<fmt>[^ ]*))? -->.*?<!-- /value -->",
                   re.S)
ANY_MARKER = re.compile(r"<!-- (?:value|table):")
FIGURE = re.compile(r"\(figures/(?P<name>[\w.-]+)\.png\)")
# The templates are written around the embedded world8k run: in these profiles a field that a saved result
# lacks (scene truth, the attribute oracle, world-only tables) renders "(not in the <profile> profile: …)"
# instead of stopping the build; in smoke/cpu it stays a TemplateError.
PARTIAL_PROFILES = ("paper",)
COMMITTED_PROFILE = "cpu"   # its report.md and figures/ are the committed ones; other profiles' go under runs/
PROVENANCE = "provenance"   # the report's own entry: who computed the results it read
NO_NOTEBOOK = "not recorded"


class TemplateError(ValueError):
    """A report template marker that cannot be parsed or filled."""


class MixedProvenanceError(ValueError):
    """The results a report would show come from several commits, a dirty tree or an unknown commit."""


def fmt_cell(x: Any, spec: str | None = None) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return format(x, spec or (".1f" if abs(x) >= 10 else ".3g"))
    if isinstance(x, int) and spec:
        return format(x, spec)
    return str(x)


def markdown_table(saved: dict[str, Any]) -> str:
    cols, rows = saved["columns"], saved["rows"]
    formats = saved.get("formats", {})
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt_cell(r.get(c), formats.get(c)) for c in cols) + " |" for r in rows]
    if saved.get("note"):
        lines += ["", f"*{saved['note']}*"]
    return "\n".join(lines)


def lookup(obj: Any, path: str) -> Any:
    for part in filter(None, path.split(".")):
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    return obj


def snapshot_path(profile: str) -> Path:
    return SECTIONS / f"results-{profile}.json"


def fill(text: str, profile: str, source: Callable[[str], Any] | None = None,
         used: dict[str, Any] | None = None, where: str = "<text>") -> tuple[str, list[str]]:
    """Fill every marker of ``text``; returns the text and the keys that had no saved result.

    ``source(key)`` gives a saved result or None (default: ``results.load`` of ``profile``);
    every result read is recorded in ``used`` when given; ``where`` names the template in errors."""
    missing: list[str] = []

    def line(m: re.Match) -> str:
        return f"{where}:{text.count(chr(10), 0, m.start()) + 1}"

    parsed = {m.start() for rx in (TABLE, VALUE) for m in rx.finditer(text)}
    for m in ANY_MARKER.finditer(text):
        if m.start() not in parsed:
            bad = text[m.start():text.find("-->", m.start()) + 3]
            raise TemplateError(f"{line(m)}: cannot parse the marker {bad!r} "
                                f"(<!-- value:KEY.path:FMT -->…<!-- /value --> or <!-- table:KEY -->…<!-- /table -->)")

    def load(key: str) -> Any:
        saved = source(key) if source else results.load(profile, key, default=None)
        if used is not None and saved is not None:
            used[key] = saved
        return saved

    def table(m: re.Match) -> str:
        key = m["key"]
        saved = load(key)
        if saved is None or results.not_run(saved):
            missing.append(key)
            body = f"(not run: {results.not_run(saved) or key})"
        else:
            body = markdown_table(saved)
        return f"<!-- table:{key} -->\n{body}\n<!-- /table -->"

    def value(m: re.Match) -> str:
        key, path, spec = m["key"], m["path"] or "", m["fmt"]
        saved = load(key)
        if saved is None or results.not_run(saved):
            missing.append(key + path)
            body = f"(not run: {results.not_run(saved) or key + path})"
        else:
            try:
                body = fmt_cell(lookup(saved, path), spec)
            except (KeyError, IndexError, TypeError, ValueError) as e:
                if profile not in PARTIAL_PROFILES:
                    raise TemplateError(f"{line(m)}: the saved result {key!r} has no {path[1:]!r} "
                                        f"({type(e).__name__}: {e})") from None
                missing.append(key + path)          # a world8k-only field: say so in place
                body = f"(not in the {profile} profile: {key}{path})"
        marker = f"value:{key}{path}" + (f":{spec}" if spec else "")
        return f"<!-- {marker} -->{body}<!-- /value -->"

    text = TABLE.sub(table, text)
    return VALUE.sub(value, text), missing


def _commit(meta: dict[str, Any] | None) -> str:
    if meta is None:
        return "unknown (no .meta.json)"
    if not meta.get("commit"):
        return "unknown (no git checkout)"
    return meta["commit"][:10] + (" (dirty)" if meta.get("dirty") else "")


def _count(items: list, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _started(meta: dict[str, Any]) -> str | None:
    started = meta.get("started")     # "2026-11-29T05:59:15+0000" -> "2026-11-29 05:59"
    return started[:16].replace("T", " ") if started else None


def provenance(profile: str, keys: Iterable[str],
               meta: Callable[[str], dict[str, Any] | None] | None = None) -> dict[str, Any]:
    """Who computed the results ``keys``: a saved-table dict with one row per notebook and run, plus
    ``reasons`` why they are mixed (several commits, a dirty tree, an unknown commit; empty: not
    mixed), the ``commits`` and the ``run_ids`` found, and an empty ``banner`` (``build`` fills it).

    ``meta(key)`` gives a result's sidecar (default: ``results.load_provenance`` of ``profile``)."""
    meta = meta or (lambda key: results.load_provenance(profile, key))
    groups: dict[tuple, list[str]] = {}
    commits, run_ids, unknown, dirty = set(), set(), [], []
    for key in sorted(keys):
        m = meta(key) or {}
        if m.get("commit"):
            commits.add(m["commit"][:10])
            if m.get("dirty"):
                dirty.append(key)
        else:
            unknown.append(key)
        if m.get("run_id"):
            run_ids.add(m["run_id"])
        cpu = m.get("cpu") if m.get("device") in (None, "cpu") else f"{m['device']}; {m.get('cpu')}"
        row = (m.get("notebook") or NO_NOTEBOOK, _commit(m or None), m.get("profile"), m.get("precision"),
               m.get("threads"), cpu, _started(m), m.get("run_id"))
        groups.setdefault(row, []).append(key)
    columns = ["notebook", "commit", "profile", "precision", "threads", "CPU", "started", "run id", "results"]
    rows = []
    for row, names in sorted(groups.items(), key=lambda g: (g[0][0] == NO_NOTEBOOK, g[0][0], g[0][6] or "")):
        shown = str(len(names)) if row[0] != NO_NOTEBOOK else ", ".join(names[:4]) + (
            f" (+{len(names) - 4})" if len(names) > 4 else "")
        rows.append(dict(zip(columns, (*row, shown))))
    reasons = [f"{len(commits)} commits ({', '.join(sorted(commits))})"] if len(commits) > 1 else []
    if dirty:
        reasons.append(f"a dirty tree (tracked files differed from the commit) for {_count(dirty, 'result')}")
    if unknown:
        reasons.append(f"no recorded commit for {_count(unknown, 'result')}")
    return {"columns": columns, "rows": rows, "formats": {},
            "note": "One line per notebook and run, from the .meta.json beside every result this report shows. "
                    "commit: the checkout's commit when the notebook ran, (dirty) when tracked files differed from it; "
                    "results: how many of the report's results that run saved.",
            "reasons": reasons, "commits": sorted(commits), "run_ids": sorted(run_ids), "banner": ""}


def mixed_message(profile: str, prov: dict[str, Any]) -> str:
    """Why ``prov`` is mixed, naming every notebook with its commit and run."""
    lines = [f"  {r['notebook']}: commit {r['commit']}, run {r['run id'] or '–'}, {r['results']} "
             f"result{'' if r['results'] == '1' else 's'}"
             if r["notebook"] != NO_NOTEBOOK else
             f"  results saved outside a known notebook ({r['results']}): commit {r['commit']}, run {r['run id'] or '–'}"
             for r in prov["rows"]]
    return (f"the report for profile {profile!r} would show results that are not all from one clean commit: "
            f"{'; '.join(prov['reasons'])}:\n"
            + "\n".join(lines) + "\nRerun those notebooks from one clean commit (./run_all.sh --force --only NN), "
            "or build with --allow-mixed: the report then says so at the top.")


def mixed_banner(prov: dict[str, Any]) -> str:
    """The bold line at the top of a report built with ``allow_mixed`` from mixed results."""
    def some(xs: list[str]) -> str:
        return ", ".join(xs[:8]) + (f" and {len(xs) - 8} more" if len(xs) > 8 else "") if xs else "none recorded"
    return (f"**Mixed provenance (built with `--allow-mixed`): the results shown are not all from one clean "
            f"commit: {'; '.join(prov['reasons'])}. Commits: {some(prov['commits'])}. Run ids: "
            f"{some(prov['run_ids'])}. The table under \"Provenance\" says which notebook ran where.**")


def templates() -> list[Path]:
    return sorted(SECTIONS.glob("*.md"))


def render(profile: str, source: Callable[[str], Any] | None = None,
           used: dict[str, Any] | None = None) -> tuple[str, list[str]]:
    """The report: every template filled (in file-name order), and the keys still missing."""
    parts, missing = [], []
    for path in templates():
        text, miss = fill(path.read_text(), profile, source, used, where=str(path.relative_to(ROOT)))
        parts.append(text)
        missing += miss
    return "\n\n".join(parts).replace("{{profile}}", profile), missing


def build(profile: str, out: Path = ROOT / "report.md", figures_out: Path = FIGURES,
          snapshot: Path | None = None, allow_mixed: bool = False) -> list[str]:
    """Write the report for ``profile`` and the snapshot of the results it read; returns the result
    keys that are still missing. Raises ``MixedProvenanceError`` (and writes nothing) when those
    results are mixed (see the module docstring), unless ``allow_mixed``."""
    used: dict[str, Any] = {}
    render(profile, source=lambda key: None if key == PROVENANCE else results.load(profile, key, default=None),
           used=used)                                  # first pass: which results the report shows
    prov = provenance(profile, used)
    if prov["reasons"]:
        if not allow_mixed:
            raise MixedProvenanceError(mixed_message(profile, prov))
        prov["banner"] = mixed_banner(prov)
    used[PROVENANCE] = prov
    text, missing = render(profile, source=used.get)   # the same results, with their provenance
    if snapshot is None:        # the committed report's snapshot lives beside its templates
        snapshot = snapshot_path(profile) if Path(out) == ROOT / "report.md" else Path(out).with_suffix(".results.json")
    results.atomic_write_text(snapshot,
                              json.dumps(used, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    figures_out.mkdir(parents=True, exist_ok=True)
    for name in sorted(set(FIGURE.findall(text))):
        src = results.figures_dir(profile) / f"{name}.png"
        if src.exists():
            shutil.copyfile(src, figures_out / f"{name}.png")
        else:
            missing.append(f"figure {name}")
    out.write_text(text)
    return missing


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--out", default=str(ROOT / "report.md"))
    ap.add_argument("--allow-mixed", action="store_true",
                    help="build from results of several commits or a dirty tree (the report says so at the top)")
    args = ap.parse_args()
    figures = FIGURES if args.profile == COMMITTED_PROFILE else results.figures_dir(args.profile).parent / "report_figures"
    try:
        missing = build(args.profile, Path(args.out), figures, allow_mixed=args.allow_mixed)
    except MixedProvenanceError as e:
        raise SystemExit(f"not written: {e}") from None
    print(f"wrote {args.out} for profile {args.profile}"
          + (f"; {len(missing)} results not run yet: {', '.join(missing[:12])}" if missing else ""))


if __name__ == "__main__":
    main()
