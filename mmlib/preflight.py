"""What a notebook needs, checked in its first code cell (``preflight.check``): a run stops within
seconds, naming the variable to set, instead of after minutes of training.

Two kinds of input:

- **required**: without it a notebook cannot run at all. In ``paper`` every notebook reads the real
  Flickr8k folder (``FLICKR8K_DIR``: ``captions.txt`` + ``Images/``, or the original layout); when it is
  missing :func:`require` raises :class:`MissingInput` naming the variable. ``smoke`` and ``cpu`` generate
  world8k and need nothing.
- **optional: the study's fixtures** in ``$MMLIB_SEED_DIR`` (default ``../shared/seed``, ``paths.SEED_DIR``),
  which a user outside CI may not have. Only the seed-exact comparison rows need them (:data:`USES`):
  without them the notebook still runs to the end, and saves those rows marked :data:`NOT_RUN`, or the
  whole result with ``results.save_not_run(profile, key, FIXTURES_ABSENT)``; the report renders both as
  ``(not run: study fixtures absent, set MMLIB_SEED_DIR)``.

The runner (``python -m mmlib.runner``) calls :func:`require` once before it starts a kernel, and puts the
absent fixtures a notebook uses into its stamp, so a notebook run without them reruns once they appear.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import paths, profiles
from .data import flickr8k

SEED_ENV = "MMLIB_SEED_DIR"
FLICKR8K_ENV = "FLICKR8K_DIR"
FIXTURES_ABSENT = f"study fixtures absent, set {SEED_ENV}"
NOT_RUN = f"(not run: {FIXTURES_ABSENT})"    # the cell text of a table row that needs an absent fixture

FIXTURES: dict[str, str] = {
    "flickr8k_captions.txt": "the real Flickr8k captions",
    "qformer_tinyllama_generated_captions.txt": "the study's Q-former + TinyLlama captions, its Table 2 row 4",
}

# notebook -> fixture -> the results left out (marked) without it. A notebook asks ``Inputs.have`` only for
# the fixtures listed here, so this table is what the notebooks actually read.
USES: dict[str, dict[str, list[str]]] = {
    "01_data": {
        "flickr8k_captions.txt": [
            "data_caption_stats: the real Flickr8k row", "data_summary: top25_overlap_with_real",
            "human_ceiling: the real Flickr8k rows (profiles with data.real_ceiling)",
            "seed_captions_metrics (profiles with data.real_ceiling)",
            "figures data_caption_lengths, data_word_frequency: drawn without the real Flickr8k captions"],
        "qformer_tinyllama_generated_captions.txt": ["seed_captions_metrics (profiles with data.real_ceiling)"],
    },
    "02_caption_cnn": {"flickr8k_captions.txt": ["02_table1: the paper-sizes row (its vocabulary)",
                                                 "02_paper_breakdown"]},
    "03_caption_clip": {"flickr8k_captions.txt": ["03_table1: the paper-sizes row (its vocabulary)",
                                                  "03_paper_breakdown"]},
}


# notebook -> (notebook, file under its run folder) whose saved model it loads in smoke/cpu (paper reads hub
# weights instead): 07's text encoder is 03's world CLIP (captioning.clip_pretrain.clip_dir; not imported
# here, so that a notebook's inputs stamp does not take in the captioning models)
NEEDS_RUN: dict[str, tuple[str, str]] = {"07_latent_diffusion": ("03_caption_clip", "clip/model.safetensors")}


class MissingInput(FileNotFoundError):
    """A required input of a notebook is missing; the message names the variable to set."""


@dataclass(frozen=True)
class Inputs:
    """What ``check`` found for one notebook: the study's fixtures it uses, present or not."""
    profile: str
    notebook: str
    seed_dir: Path
    fixtures: dict[str, bool] = field(default_factory=dict)   # fixture this notebook uses -> present

    def have(self, name: str) -> bool:
        """Whether the fixture ``name`` was present when the notebook started (declared in ``USES``)."""
        if name not in self.fixtures:
            raise KeyError(f"{self.notebook} does not declare the fixture {name!r} in mmlib.preflight.USES")
        return self.fixtures[name]

    @property
    def absent(self) -> list[str]:
        return [name for name, ok in self.fixtures.items() if not ok]


def seed_dir() -> Path:
    return paths.SEED_DIR


def absent_fixtures(notebook: str) -> list[str]:
    """The fixtures ``notebook`` uses that are absent from ``$MMLIB_SEED_DIR`` (sorted)."""
    return sorted(name for name in USES.get(notebook, {}) if not (seed_dir() / name).is_file())


def require(profile: str, cwd: Path | None = None) -> str:
    """Check the inputs every notebook of ``profile`` needs; a line saying what the data are, or
    :class:`MissingInput` naming the variable to set. ``cwd``: the notebooks' working directory, against
    which a relative ``FLICKR8K_DIR`` is read (default: this process's)."""
    source = profiles.SECTIONS["data"][profiles.check(profile)]["source"]
    if source != "flickr8k":                 # generated here: nothing to set
        return f"data: {source}, generated under {paths.RUNS / 'data'} on first use"
    cfg = profiles.get(profile).data         # builds every settings section: imports the model modules
    folder = Path(cfg.flickr8k_dir)
    if cwd is not None and not folder.is_absolute():
        folder = Path(cwd) / folder
    where = (f"{FLICKR8K_ENV}={os.environ[FLICKR8K_ENV]}" if os.environ.get(FLICKR8K_ENV)
             else f"{FLICKR8K_ENV} is not set, so the default {cfg.flickr8k_dir!r}")
    how = (f"set {FLICKR8K_ENV} to the real Flickr8k folder (the Kaggle layout: captions.txt and Images/; "
           f"or Flickr8k.token.txt and Flicker8k_Dataset/)")
    if not folder.is_dir():
        raise MissingInput(f"profile {profile} reads the real Flickr8k images, but {where} is not a folder "
                           f"({folder.resolve()}): {how}")
    try:
        captions, images = flickr8k.find_layout(folder)
    except flickr8k.ImageFolderError as e:
        raise MissingInput(f"profile {profile}: {where} has no Flickr8k layout ({e}): {how}") from None
    return (f"data: Flickr8k folder {folder.resolve()} ({captions.name}, {images.name}/), "
            + (f"from {FLICKR8K_ENV}" if os.environ.get(FLICKR8K_ENV) else f"the default ({FLICKR8K_ENV} not set)"))


def check(profile: str, notebook: str, out: Callable[[str], None] = print) -> Inputs:
    """The first code cell of every notebook: raise :class:`MissingInput` when a required input is
    missing (see :func:`require`); print whether the study's fixtures this notebook uses are present,
    and which results it leaves out (marked) when they are not."""
    data_line = require(profile)
    if notebook in NEEDS_RUN and profiles.get(profile).weights == "offline":
        before, rel = NEEDS_RUN[notebook]
        path = paths.RUNS / profile / before[:2] / rel
        if not path.exists():
            raise MissingInput(f"{notebook} ({profile}) loads {path}, saved by notebooks/{before}.ipynb: run that "
                               f"first (./run_all.sh --profile {profile} --only {before[:2]})")
    uses = USES.get(notebook, {})
    d = seed_dir()
    inputs = Inputs(profile, notebook, d, {name: (d / name).is_file() for name in uses})
    lines = [f"{notebook}, profile {profile}: required inputs present", f"  {data_line}"]
    if not uses:
        lines.append(f"  study fixtures ({SEED_ENV}): none used by this notebook")
    elif not inputs.absent:
        lines.append(f"  study fixtures in {d}: {', '.join(uses)} present; the seed-exact rows will run")
    else:
        lines.append(f"  study fixtures ABSENT from {d} ({SEED_ENV}"
                     + (f"={os.environ[SEED_ENV]}" if os.environ.get(SEED_ENV) else " not set") + "):")
        for name in inputs.absent:
            lines.append(f"    {name} ({FIXTURES.get(name, 'a study fixture')})")
        left_out = list(dict.fromkeys(r for name in inputs.absent for r in uses[name]))
        lines.append(f"  {notebook} runs to the end without them and leaves out (the report says {NOT_RUN}):")
        lines += [f"    {r}" for r in left_out]
    out("\n".join(lines))
    return inputs
