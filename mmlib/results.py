"""Saved results: the only channel from notebooks to ``report.md``.

A notebook calls ``save(profile, key, obj)`` for every number or table the report shows and
``save_figure(fig, profile, name)`` for every figure; ``mmlib.report`` reads them back. Nothing
in the report is typed by hand.

Every saved result ``KEY.json`` gets a sidecar ``KEY.meta.json`` with its provenance: the precision
it was computed in, the profile, threads, the CPU kind, the git commit (and whether the tree was
dirty), the kernel's start time, the run id (``$MMLIB_RUN_ID``, set by ``mmlib.runner``) and the
notebook that saved it (``$MMLIB_NOTEBOOK``, set by the runner for each kernel; in JupyterLab the
session's notebook, ``$JPY_SESSION_NAME``; None elsewhere). ``mmlib.report`` prints them per notebook.
"""
from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import torch

from . import ckpt, device
from .paths import ROOT, RUNS

_STARTED = time.strftime("%Y-%m-%dT%H:%M:%S%z")


def results_dir(profile: str) -> Path:
    d = RUNS / profile / "results"
    d.mkdir(parents=True, exist_ok=True)
    return d


def figures_dir(profile: str) -> Path:
    d = RUNS / profile / "figures"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _plain(x: Any) -> Any:
    """JSON-safe copy: numpy/torch scalars become Python numbers, NaN becomes None."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "item") and getattr(x, "ndim", 1) == 0:
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def atomic_write_text(path: Path, text: str) -> None:
    ckpt.atomic_write(path, lambda tmp: Path(tmp).write_text(text))


RUN_OUTPUTS = ("figures", "report.md", "report/results-*.json")


@functools.lru_cache(maxsize=1)
def git_state() -> dict[str, Any]:
    """The checkout's commit and whether tracked files differ from it (None outside a git checkout).
    The run's own outputs (``figures/``, ``report.md``, ``report/results-*.json``) do not count: a run
    rewrites them as it goes, and they are what it produces, not what it ran."""
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True,
                                  timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", *(f":(exclude){p}" for p in RUN_OUTPUTS))
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def notebook_name() -> str | None:
    """The notebook this process runs (``02_caption_cnn``): set by the runner, or by JupyterLab."""
    if os.environ.get("MMLIB_NOTEBOOK"):
        return os.environ["MMLIB_NOTEBOOK"]
    session = os.environ.get("JPY_SESSION_NAME")    # jupyter_server: the notebook's path under its root
    return Path(session).stem if session and session.endswith(".ipynb") else None


def provenance(profile: str) -> dict[str, Any]:
    """Where and how a result was computed (see the module docstring)."""
    return {"profile": profile, "precision": device.precision(), "threads": torch.get_num_threads(),
            "cpu": device.cpu_kind(), "device": device.device().type, **git_state(), "started": _STARTED,
            "run_id": os.environ.get("MMLIB_RUN_ID") or _PROCESS_RUN_ID, "notebook": notebook_name()}


_PROCESS_RUN_ID = f"adhoc-{uuid.uuid4().hex[:8]}"


def save(profile: str, key: str, obj: Any) -> Path:
    path = results_dir(profile) / f"{key}.json"
    atomic_write_text(path.with_name(f"{key}.meta.json"), json.dumps(provenance(profile), indent=1, sort_keys=True) + "\n")
    atomic_write_text(path, json.dumps(_plain(obj), indent=1, sort_keys=True) + "\n")
    return path


NOT_RUN = "not_run"   # the only field of a result saved by ``save_not_run``: why it was not computed


def save_not_run(profile: str, key: str, reason: str) -> Path:
    """Save ``key`` as deliberately not computed in this run: ``reason`` says why and what to set (e.g.
    ``preflight.FIXTURES_ABSENT``). The report renders ``(not run: <reason>)`` in its place, and a result of
    an earlier run under the same key is replaced rather than shown stale."""
    return save(profile, key, {NOT_RUN: reason})


def not_run(saved: Any) -> str | None:
    """The reason of a result saved by ``save_not_run``; None for a computed result (or none at all)."""
    return saved[NOT_RUN] if isinstance(saved, dict) and set(saved) == {NOT_RUN} else None


def load_provenance(profile: str, key: str) -> dict[str, Any] | None:
    """The provenance sidecar of a saved result (None for results saved before sidecars existed)."""
    path = RUNS / profile / "results" / f"{key}.meta.json"
    return json.loads(path.read_text()) if path.exists() else None


def load(profile: str, key: str, default: Any = KeyError) -> Any:
    path = RUNS / profile / "results" / f"{key}.json"
    if not path.exists():
        if default is KeyError:
            raise KeyError(f"no saved result {key!r} for profile {profile!r} ({path}); run its notebook first")
        return default
    return json.loads(path.read_text())


def save_figure(fig, profile: str, name: str, dpi: int = 110) -> Path:
    """Save a matplotlib figure as ``runs/<profile>/figures/<name>.png`` (copied to figures/ by the report)."""
    path = figures_dir(profile) / f"{name}.png"
    return ckpt.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png",
                                                           metadata={"Software": None}))


def save_table(profile: str, key: str, rows: list[dict[str, Any]], columns: list[str] | None = None,
               formats: dict[str, str] | None = None, note: str | None = None) -> Path:
    """Save a table for the report: ``rows`` are dicts; ``columns`` fixes order (default: first row's keys);
    ``formats`` maps a column to a format spec (e.g. ``".1f"``); ``note`` is printed under the table."""
    columns = columns or list(rows[0]) if rows else (columns or [])
    return save(profile, key, {"columns": columns, "rows": rows, "formats": formats or {}, "note": note})
