"""Where things live: the repository, git-ignored run folders, and the study's fixtures."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = Path(os.environ.get("MMLIB_RUNS", ROOT / "runs"))
FIGURES = ROOT / "figures"
# the study's text, real Flickr8k captions and split CSVs (read in place, never copied)
SEED_DIR = Path(os.environ.get("MMLIB_SEED_DIR", ROOT.parent / "shared" / "seed"))


def run_dir(profile: str, notebook: str) -> Path:
    """``runs/<profile>/<notebook>/``: checkpoints, caches and results of one notebook."""
    d = RUNS / profile / notebook
    d.mkdir(parents=True, exist_ok=True)
    return d


def data_dir() -> Path:
    """Generated data sets, shared by all profiles (keyed by their own config)."""
    d = RUNS / "data"
    d.mkdir(parents=True, exist_ok=True)
    return d


def seed_file(name: str) -> Path:
    """A fixture of the study; raises FileNotFoundError with the expected location."""
    p = SEED_DIR / name
    if not p.exists():
        raise FileNotFoundError(f"{p} not found: the study's fixtures live in ../shared/seed "
                                f"(set MMLIB_SEED_DIR to point elsewhere)")
    return p
