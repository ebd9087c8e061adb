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
A result that is missing renders as ``(not run: KEY)`` — never as a stale or typed number. A marker
that does not parse, or a path that a saved result does not have, is an error naming the template
file and line (``TemplateError``): the report never hides its own gaps.
Every saved result the report read is also written to ``report/results-<profile>.json`` (committed
with the cpu report): ``tests/test_report.py`` rebuilds ``report.md`` from it and, where the run
folder exists, checks it against the notebooks' saved results.

    python -m mmlib.report --profile cpu
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path
from typing import Any, Callable

from . import results
from .paths import FIGURES, ROOT

SECTIONS = ROOT / "report"
TABLE = re.compile(r"<!-- table:(?P<key>[\w.-]+) -->.*?<!-- /table -->", re.S)
VALUE = re.compile(r"<!-- value:(?P<key>[\w-]+)(?P<path>(?:\.[^.:<>]*[^.:<> ])*)(?::(?P<fmt>[^ ]*))? -->.*?<!-- /value -->",
                   re.S)
ANY_MARKER = re.compile(r"<!-- (?:value|table):")
FIGURE = re.compile(r"\(figures/(?P<name>[\w.-]+)\.png\)")


class TemplateError(ValueError):
    """A report template marker that cannot be parsed or filled."""


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
        if saved is None:
            missing.append(key)
            body = f"(not run: {key})"
        else:
            body = markdown_table(saved)
        return f"<!-- table:{key} -->\n{body}\n<!-- /table -->"

    def value(m: re.Match) -> str:
        key, path, spec = m["key"], m["path"] or "", m["fmt"]
        saved = load(key)
        if saved is None:
            missing.append(key + path)
            body = f"(not run: {key}{path})"
        else:
            try:
                body = fmt_cell(lookup(saved, path), spec)
            except (KeyError, IndexError, TypeError, ValueError) as e:
                raise TemplateError(f"{line(m)}: the saved result {key!r} has no {path[1:]!r} "
                                    f"({type(e).__name__}: {e})") from None
        marker = f"value:{key}{path}" + (f":{spec}" if spec else "")
        return f"<!-- {marker} -->{body}<!-- /value -->"

    text = TABLE.sub(table, text)
    return VALUE.sub(value, text), missing


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
          snapshot: Path | None = None) -> list[str]:
    """Write the report for ``profile`` and the snapshot of the results it read; returns the result
    keys that are still missing."""
    used: dict[str, Any] = {}
    text, missing = render(profile, used=used)
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
    args = ap.parse_args()
    figures = FIGURES if args.profile == "cpu" else results.figures_dir(args.profile).parent / "report_figures"
    missing = build(args.profile, Path(args.out), figures)
    print(f"wrote {args.out} for profile {args.profile}"
          + (f"; {len(missing)} results not run yet: {', '.join(missing[:12])}" if missing else ""))


if __name__ == "__main__":
    main()
