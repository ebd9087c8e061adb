"""Run the notebooks in order with papermill, skipping those whose inputs have not changed.

    python -m mmlib.runner --profile cpu [--only 02 [--only 03]] [--force] [--threads N] [--no-report] [--allow-mixed]

A notebook is skipped when its executed copy under ``runs/<profile>/executed/`` carries the
stamp of its current inputs (the notebook, the ``mmlib`` files it imports, the requirements, the
precision). The stamp is removed before a notebook runs and the executed copy is written under a
temporary name, renamed at success, so an interrupted run is never taken for a finished one. The
run stops at the first failure, naming the notebook and the cell. Wall times (with the precision)
go to the saved result ``runtime`` (the report's run-time table); finally ``report.md`` is rebuilt.
All notebooks of one invocation share one run id (``$MMLIB_RUN_ID``, recorded in every result); each
kernel also gets its notebook's name (``$MMLIB_NOTEBOOK``), so the report prints one provenance line per
notebook, and refuses results of several commits or of a dirty tree unless ``--allow-mixed``.

Progress: a line when a notebook starts, with the wall time of its last run in this profile and
precision (from ``runtime``); then, every ``$MMLIB_PROGRESS_EVERY`` seconds (default 30) in a log
(redrawn every second on a terminal), the cells done, the time elapsed and the time left by that
estimate; at the end a table of every notebook: status (run / cached / failed / interrupted / not
reached), wall time, precision.

Threads: every kernel gets ``$MMLIB_THREADS`` (``--threads N``; default: every core this process may
use, right when the runner has the machine to itself). ``device.set_threads()`` in the notebooks reads
it, and ``$OMP_NUM_THREADS`` (set to the same number unless already set) covers the code that does not
call it. Give fewer when the cores are shared, e.g. ``MMLIB_THREADS=1`` for each of two runners on two
cores: two threads on two busy cores ran up to 15x slower than one.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import os
import platform
import re
import sys
import threading
import time
from pathlib import Path
from typing import Callable, TextIO

import nbformat
import papermill as pm
from papermill.engines import NBClientEngine, papermill_engines

from . import claims, device, preflight, profiles, report, results
from .paths import ROOT, RUNS

NOTEBOOKS = ROOT / "notebooks"
PROGRESS_EVERY = float(os.environ.get("MMLIB_PROGRESS_EVERY", 30))   # seconds between progress lines in a log
RUNNER = "mmlib.runner"   # the "notebook" of the results the runner saves itself (runtime, claims)


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
    files it imports (directly or not), so an edit elsewhere does not rerun it; and the study's fixtures
    it uses that are absent (``preflight.USES``), so a run without them reruns once they are there."""
    h = hashlib.sha256(f"{profile}|{device.precision()}".encode())
    for p in [nb, ROOT / "requirements.txt", *dependencies(nb)]:
        h.update(p.relative_to(ROOT).as_posix().encode())
        h.update(p.read_bytes())
    absent = preflight.absent_fixtures(nb.stem)
    if absent:              # nothing added when they are all present: the stamp of a complete run is unchanged
        h.update(("|fixtures absent: " + ",".join(absent)).encode())
    return h.hexdigest()[:16]


def save_runtime_table(profile: str, times: dict) -> None:
    m = times["machine"]
    rows = [{"notebook": name.split("|")[0], "precision": t.get("precision", "fp32"), "first run (s)": t.get("seconds"),
             "load at start": t.get("load"), "rerun, checkpoints cached (s)": t.get("cached_run"),
             "rerun load": t.get("cached_load")}
            for name, t in sorted(times["notebooks"].items())]   # keys "NN_name|precision" (older runs: "NN_name", fp32)
    for precision in sorted({r["precision"] for r in rows}):       # the whole run: the sum of the first runs
        first = [r["first run (s)"] for r in rows if r["precision"] == precision and r["first run (s)"] is not None]
        rows.append({"notebook": f"all {len(first)} (sum)", "precision": precision, "first run (s)": sum(first),
                     "load at start": None, "rerun, checkpoints cached (s)": None, "rerun load": None})
    results.save_table(profile, "runtime_table", rows, formats={"first run (s)": ".0f", "rerun, checkpoints cached (s)": ".0f",
                                                               "load at start": ".1f", "rerun load": ".1f"},
                       note=f"{m['cores']} cores, {m['cpu']}, Python {m['python']}, profile {profile}; load = the 1-minute load "
                            "average when the notebook started (above 1: other work shared the cores)")


def duration(seconds: float | None) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``; ``–`` when unknown."""
    if seconds is None:
        return "–"
    s = int(round(max(0.0, seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class Progress:
    """One notebook's progress: cells done, time elapsed and, where the wall time of its last run is
    known (``last``), the time left by that estimate. A context: while open, a thread shows the line
    every ``every`` seconds (a terminal redraws it in place every second); ``cell`` is papermill's
    callback after each cell."""

    def __init__(self, name: str, last: float | None = None, every: float = PROGRESS_EVERY,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.perf_counter):
        self.name, self.last, self.every, self.clock = name, last, every, clock
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.done, self.total, self.t0 = 0, None, clock()
        self._stop, self._lock, self._thread = threading.Event(), threading.Lock(), None

    def line(self) -> str:
        elapsed = self.clock() - self.t0
        parts = [f"cell {self.done}/{self.total}" if self.total else "starting the kernel",
                 f"{duration(elapsed)} elapsed"]
        if self.last is not None:
            parts.append(f"≈ {duration(self.last - elapsed)} left (last run {duration(self.last)})"
                         if elapsed < self.last else f"longer than the last run ({duration(self.last)})")
        return f"[run_all] {self.name}: " + ", ".join(parts)

    def cell(self, done: int, total: int) -> None:
        self.done, self.total = done, total
        if self.tty:
            self.show()

    def show(self) -> None:
        with self._lock:
            self.stream.write(f"\r\033[K{self.line()}" if self.tty else f"{self.line()}\n")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        def tick() -> None:
            while not self._stop.wait(1.0 if self.tty else self.every):
                self.show()
        self._thread = threading.Thread(target=tick, name=f"progress {self.name}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self.tty:
            with self._lock:
                self.stream.write("\r\033[K")
                self.stream.flush()


class ProgressEngine(NBClientEngine):
    """papermill's nbclient engine, calling ``on_cell(cells done, cells)`` after every cell."""

    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, on_cell: Callable[[int, int], None] | None = None,
                                 **kwargs):
        if on_cell is not None:
            complete = nb_man.cell_complete

            def cell_complete(cell, cell_index=None, **kw):
                complete(cell, cell_index=cell_index, **kw)
                on_cell(cell_index + 1, len(nb_man.nb.cells))
            nb_man.cell_complete = cell_complete
        return super().execute_managed_notebook(nb_man, kernel_name, **kwargs)


papermill_engines.register("mmlib", ProgressEngine)


@contextlib.contextmanager
def environ(**values: str):
    """Set environment variables (inherited by the kernels started inside), restored on exit."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def summary_table(rows: list[dict]) -> str:
    """The end-of-run table: notebook, status, wall time, precision (plain text, aligned)."""
    header = ("notebook", "status", "wall time", "precision")
    body = [(r["notebook"], r["status"], duration(r.get("seconds")), r.get("precision") or "–") for r in rows]
    widths = [max(len(row[i]) for row in (header, *body)) for i in range(len(header))]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in (header, *body))


def threads_for_kernels(threads: int | None = None) -> int:
    """Threads per notebook: ``threads``, else ``$MMLIB_THREADS``, else every available core; exported
    to the kernels as ``MMLIB_THREADS`` (and ``OMP_NUM_THREADS`` unless set)."""
    n = min(threads or int(os.environ.get("MMLIB_THREADS") or 0) or device.available_cores(), device.available_cores())
    os.environ["MMLIB_THREADS"] = str(n)
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    return n


def run(profile: str, only: list[str] | None = None, force: bool = False, threads: int | None = None,
        every: float = PROGRESS_EVERY) -> int:
    """Run the notebooks (see the module docstring); 0 when all ran or were up to date, 1 at a failure."""
    out_dir = RUNS / profile / "executed"
    out_dir.mkdir(parents=True, exist_ok=True)
    precision = device.precision()
    times = results.load(profile, "runtime", default={"notebooks": {}})
    times.update(machine={"cpu": device.cpu_kind(), "cores": os.cpu_count(), "python": platform.python_version()})
    os.environ.setdefault("MMLIB_RUN_ID", time.strftime("%Y%m%d-%H%M%S-") + os.urandom(3).hex())
    os.environ["MMLIB_NOTEBOOK"] = RUNNER    # the kernels get their own notebook's name
    if profiles.get(profile).weights == "offline":   # the kernels inherit it: any hub access fails fast
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    n_threads, cores, load = threads_for_kernels(threads), device.available_cores(), os.getloadavg()[0]
    print(f"[run_all] profile {profile}, {precision}, {n_threads} thread{'s' * (n_threads > 1)} per notebook "
          f"({'all the ' * (n_threads == cores)}{cores} cores available; --threads N or MMLIB_THREADS=N to change), "
          f"run id {os.environ['MMLIB_RUN_ID']}", flush=True)
    if n_threads > 1 and load >= 1:
        print(f"[run_all] load average {load:.1f}: other work shares the cores; when it lasts, fewer threads "
              f"(MMLIB_THREADS=1) can be much faster", flush=True)
    todo = notebooks(only)
    done: list[dict] = []

    started = time.perf_counter()

    def finish(code: int) -> int:
        done.extend({"notebook": nb.stem, "status": "not reached", "precision": precision} for nb in todo[len(done):])
        print(f"[run_all] summary, profile {profile}:\n{summary_table(done)}", flush=True)
        if code == 0:       # this invocation as a whole (a rerun with nothing changed: every notebook cached)
            saved = results.load(profile, "runtime", default={"notebooks": {}})
            saved["last_invocation"] = {"seconds": round(time.perf_counter() - started, 1), "precision": precision,
                                        "ran": sum(d["status"] == "run" for d in done),
                                        "cached": sum(d["status"] == "cached" for d in done)}
            results.save(profile, "runtime", {**saved, "machine": times["machine"]})
        return code

    for nb in todo:
        out, stamp_file = out_dir / nb.name, out_dir / f"{nb.stem}.stamp"
        stamp = inputs_stamp(nb, profile)
        row = {"notebook": nb.stem, "status": "run", "seconds": None, "precision": precision}
        if not force and out.exists() and stamp_file.exists() and stamp_file.read_text() == stamp:
            print(f"[run_all] {nb.name}: up to date (cached), skipped")
            done.append({**row, "status": "cached"})
            continue
        previous = times["notebooks"].get(f"{nb.stem}|{precision}", {})
        last = next((previous[k] for k in ("last_seconds", "cached_run", "seconds") if previous.get(k) is not None), None)
        print(f"[run_all] {nb.name} (profile {profile}, {precision}) ..."
              + (f" last run {duration(last)}" if last is not None else ""), flush=True)
        t0, load = time.perf_counter(), os.getloadavg()[0]
        stamp_file.unlink(missing_ok=True)         # an interrupted run leaves no stamp behind
        partial = out.with_name(f".{out.stem}.partial.ipynb")
        try:
            with Progress(nb.stem, last, every) as progress, environ(MMLIB_NOTEBOOK=nb.stem):
                pm.execute_notebook(str(nb), str(partial), parameters={"profile": profile}, kernel_name="mmlib",
                                    engine_name="mmlib", on_cell=progress.cell, cwd=str(NOTEBOOKS),
                                    progress_bar=False, log_output=False)
        except pm.PapermillExecutionError as e:
            os.replace(partial, out)
            done.append({**row, "status": "failed", "seconds": time.perf_counter() - t0})
            print(f"[run_all] FAILED: {nb.relative_to(ROOT)}, cell {e.exec_count} (cell index {e.cell_index}): "
                  f"{e.ename}: {e.evalue}\n  executed copy with the traceback: {out}", file=sys.stderr, flush=True)
            return finish(1)
        except KeyboardInterrupt:
            done.append({**row, "status": "interrupted", "seconds": time.perf_counter() - t0})
            finish(130)
            raise
        seconds = time.perf_counter() - t0
        os.replace(partial, out)
        results.atomic_write_text(stamp_file, stamp)
        # re-read: another runner (a second queue) may have saved its notebooks' times meanwhile
        times = {**results.load(profile, "runtime", default={"notebooks": {}}), "machine": times["machine"]}
        entry = times["notebooks"].setdefault(f"{nb.stem}|{precision}", {})   # one row per precision
        # the first successful run trains; later runs find its checkpoints and features (keyed by config)
        first = "seconds" not in entry
        entry["seconds" if first else "cached_run"] = round(seconds, 1)
        entry["load" if first else "cached_load"] = round(load, 1)    # other work on the cores when it started
        entry["last_seconds"] = round(seconds, 1)                      # the next run's estimate
        entry["stamp"] = stamp
        entry["precision"] = precision
        results.save(profile, "runtime", times)
        save_runtime_table(profile, times)
        done.append({**row, "seconds": seconds})
        print(f"[run_all] {nb.name}: {duration(seconds)}", flush=True)
    return finish(0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default=os.environ.get("MMLIB_PROFILE", profiles.DEFAULT_PROFILE))
    ap.add_argument("--only", action="append", help="notebook number, e.g. 02 (repeatable)")
    ap.add_argument("--force", action="store_true", help="re-run notebooks even when cached")
    ap.add_argument("--threads", type=int, help="threads of every notebook (default: $MMLIB_THREADS, else all "
                                                "available cores; fewer when the cores are shared)")
    ap.add_argument("--no-report", action="store_true", help="do not rebuild report.md at the end")
    ap.add_argument("--allow-mixed", action="store_true", help="build the report even from results of several "
                                                               "commits or a dirty tree (it says so at the top)")
    args = ap.parse_args()
    profiles.check(args.profile)
    try:                    # seconds, before any kernel: a missing required input (paper: FLICKR8K_DIR)
        print(f"[run_all] {preflight.require(args.profile, cwd=NOTEBOOKS)}", flush=True)
    except preflight.MissingInput as e:
        raise SystemExit(f"[run_all] not started: {e}") from None
    code = run(args.profile, args.only, args.force, args.threads)
    if code == 0 and not args.no_report:
        claims.save(args.profile)
        committed = args.profile == report.COMMITTED_PROFILE
        figures = report.FIGURES if committed else RUNS / args.profile / "report_figures"
        out = ROOT / "report.md" if committed else RUNS / args.profile / "report.md"
        try:
            missing = report.build(args.profile, out, figures, allow_mixed=args.allow_mixed)
        except report.MixedProvenanceError as e:
            print(f"[run_all] report not written: {e}", file=sys.stderr)
            sys.exit(1)
        print(f"[run_all] wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}"
              + (f" ({len(missing)} results missing: {', '.join(missing[:8])})" if missing else ""))
    sys.exit(code)


if __name__ == "__main__":
    main()
