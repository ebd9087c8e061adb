"""Run the notebooks in order with papermill, skipping those whose inputs have not changed.

    python -m mmlib.runner --profile cpu [--only 02 [--only 03]] [--force] [--no-report]

A notebook is skipped when its executed copy under ``runs/<profile>/executed/`` carries the
stamp of its current inputs (the notebook, the ``mmlib`` files it imports, the requirements, the
precision). The stamp is removed before a notebook runs and the executed copy is written under a
temporary name, renamed at success, so an interrupted run is never taken for a finished one. The
run stops at the first failure, naming the notebook and the cell. Wall times (with the precision)
go to the saved result ``runtime`` (the report's run-time table); finally ``report.md`` is rebuilt.
All notebooks of one invocation share one run id (``$MMLIB_RUN_ID``, recorded in every result).
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import os
import platform
import re
import sys
import time
from pathlib import Path

import nbformat
import papermill as pm

from . import claims, device, profiles, report, results
from .paths import ROOT, RUNS

NOTEBOOKS = ROOT / "notebooks"


def notebooks(only: list[str] | None = None) -> list[Path]:
    found = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if only:
        wanted = {o.zfill(2) for o in only}
        unknown = wanted - {p.name[:2] for p in found}
        if unknown:
            raise SystemExit(f"no notebook numbered {', '.join(sorted(unknown))} in {NOTEBOOKS}")
        found = [p for p in found if p.name[:2] in wanted]
    return found


def _module_file(name: str) -> Path | None:
    """``mmlib.a.b`` -> its source file (module or package ``__init__``), None if it is not a module."""
    base = ROOT.joinpath(*name.split("."))
    for p in (base.with_suffix(".py"), base / "__init__.py"):
        if p.is_file():
            return p
    return None


def _imports(tree: ast.AST, package: str) -> set[str]:
    """Every ``mmlib`` module named by the imports of ``tree`` (relative ones resolved against
    ``package``), plus string literals such as ``importlib.import_module("mmlib.t2i.x")``."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(parts + ([mod] if mod else []))
            found.add(mod)
            found |= {f"{mod}.{a.name}" for a in node.names}      # ``from pkg import module``
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"mmlib(\.\w+)+", node.value):
            found.add(node.value)
    out = set()
    for name in found:
        if name == "mmlib" or name.startswith("mmlib."):
            parts = name.split(".")
            out |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}   # parent packages run too
    return out


def dependencies(nb: Path) -> list[Path]:
    """The ``mmlib`` source files a notebook can execute: the closure of its imports."""

    cells = [c.source for c in nbformat.read(str(nb), as_version=4).cells if c.cell_type == "code"]
    code = "\n".join(line for cell in cells for line in cell.splitlines() if not line.lstrip().startswith(("%", "!")))
    todo, seen = _imports(ast.parse(code), "mmlib"), set()
    while todo:
        name = todo.pop()
        path = _module_file(name)
        if name in seen or path is None:
            continue
        seen.add(name)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        todo |= _imports(ast.parse(path.read_text()), package) - seen
    return sorted({_module_file(n) for n in seen})


def inputs_stamp(nb: Path, profile: str) -> str:
    """Hash of what decides a notebook's outputs: the notebook, the requirements and the ``mmlib``
    files it imports (directly or not), so an edit elsewhere does not rerun it."""
    h = hashlib.sha256(f"{profile}|{device.precision()}".encode())
    for p in [nb, ROOT / "requirements.txt", *dependencies(nb)]:
        h.update(p.relative_to(ROOT).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def save_runtime_table(profile: str, times: dict) -> None:
    m = times["machine"]
    rows = [{"notebook": name.split("|")[0], "precision": t.get("precision", "fp32"), "first run (s)": t.get("seconds"),
             "load at start": t.get("load"), "rerun, checkpoints cached (s)": t.get("cached_run"),
             "rerun load": t.get("cached_load")}
            for name, t in sorted(times["notebooks"].items())]   # keys "NN_name|precision" (older runs: "NN_name", fp32)
    results.save_table(profile, "runtime_table", rows, formats={"first run (s)": ".0f", "rerun, checkpoints cached (s)": ".0f",
                                                               "load at start": ".1f", "rerun load": ".1f"},
                       note=f"{m['cores']} cores, {m['cpu']}, Python {m['python']}, profile {profile}; load = the 1-minute load "
                            "average when the notebook started (above 1: other work shared the cores)")


def run(profile: str, only: list[str] | None = None, force: bool = False) -> int:

    out_dir = RUNS / profile / "executed"
    out_dir.mkdir(parents=True, exist_ok=True)
    times = results.load(profile, "runtime", default={"notebooks": {}})
    times.update(machine={"cpu": device.cpu_kind(), "cores": os.cpu_count(), "python": platform.python_version()})
    os.environ.setdefault("MMLIB_RUN_ID", time.strftime("%Y%m%d-%H%M%S-") + os.urandom(3).hex())
    if profile != "paper":   # the kernels inherit it: any hub access in smoke/cpu fails fast
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    for nb in notebooks(only):
        out, stamp_file = out_dir / nb.name, out_dir / f"{nb.stem}.stamp"
        stamp = inputs_stamp(nb, profile)
        if not force and out.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
            print(f"[run_all] {nb.name}: up to date (cached), skipped")
            continue
        print(f"[run_all] {nb.name} (profile {profile}, {device.precision()}) ...", flush=True)
        t0, load = time.perf_counter(), os.getloadavg()[0]
        stamp_file.unlink(missing_ok=True)         # an interrupted run leaves no stamp behind
        partial = out.with_name(f".{out.stem}.partial.ipynb")
        try:
            pm.execute_notebook(str(nb), str(partial), parameters={"profile": profile}, kernel_name="mmlib",
                                cwd=str(NOTEBOOKS), progress_bar=False, log_output=False)
        except pm.PapermillExecutionError as e:
            os.replace(partial, out)
            print(f"[run_all] FAILED: {nb.relative_to(ROOT)}, cell {e.exec_count} (cell index {e.cell_index}): "
                  f"{e.ename}: {e.evalue}\n  executed copy with the traceback: {out}", file=sys.stderr)
            return 1
        seconds = time.perf_counter() - t0
        os.replace(partial, out)
        results.atomic_write_text(stamp_file, stamp)
        # re-read: another runner (a second queue) may have saved its notebooks' times meanwhile
        times = {**results.load(profile, "runtime", default={"notebooks": {}}), "machine": times["machine"]}
        entry = times["notebooks"].setdefault(f"{nb.stem}|{device.precision()}", {})   # one row per precision
        # the first successful run trains; later runs find its checkpoints and features (keyed by config)
        first = "seconds" not in entry
        entry["seconds" if first else "cached_run"] = round(seconds, 1)
        entry["load" if first else "cached_load"] = round(load, 1)    # other work on the cores when it started
        entry["stamp"] = stamp
        entry["precision"] = device.precision()
        results.save(profile, "runtime", times)
        save_runtime_table(profile, times)
        print(f"[run_all] {nb.name}: {seconds:.0f} s", flush=True)
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default=os.environ.get("MMLIB_PROFILE", profiles.DEFAULT_PROFILE))
    ap.add_argument("--only", action="append", help="notebook number, e.g. 02 (repeatable)")
    ap.add_argument("--force", action="store_true", help="re-run notebooks even when cached")
    ap.add_argument("--no-report", action="store_true", help="do not rebuild report.md at the end")
    args = ap.parse_args()
    profiles.check(args.profile)
    code = run(args.profile, args.only, args.force)
    if code == 0 and not args.no_report:
        claims.save(args.profile)
        figures = report.FIGURES if args.profile == "cpu" else RUNS / args.profile / "report_figures"
        out = ROOT / "report.md" if args.profile == "cpu" else RUNS / args.profile / "report.md"
        missing = report.build(args.profile, out, figures)
        print(f"[run_all] wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}"
              + (f" ({len(missing)} results missing: {', '.join(missing[:8])})" if missing else ""))
    sys.exit(code)


if __name__ == "__main__":
    main()
