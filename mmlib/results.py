"""Saved results: the only channel from notebooks to ``report.md``.

A notebook calls ``save(profile, key, obj)`` for every number or table the report shows and
``save_figure(fig, profile, name)`` for every figure; ``mmlib.report`` reads them back. Nothing
in the report is typed by hand.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from .paths import RUNS


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def save(profile: str, key: str, obj: Any) -> Path:
    path = results_dir(profile) / f"{key}.json"
    atomic_write_text(path, json.dumps(_plain(obj), indent=1, sort_keys=True) + "\n")
    return path


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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    os.replace(tmp, path)
    return path


def save_table(profile: str, key: str, rows: list[dict[str, Any]], columns: list[str] | None = None,
               formats: dict[str, str] | None = None, note: str | None = None) -> Path:
    """Save a table for the report: ``rows`` are dicts; ``columns`` fixes order (default: first row's keys);
    ``formats`` maps a column to a format spec (e.g. ``".1f"``); ``note`` is printed under the table."""
    columns = columns or list(rows[0]) if rows else (columns or [])
    return save(profile, key, {"columns": columns, "rows": rows, "formats": formats or {}, "note": note})
