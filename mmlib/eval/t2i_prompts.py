"""The prompt sets every text-to-image notebook (06–09) scores, and their real reference images.

- **held-out** (``heldout_prompts``): captions of images that no generator trained on
  (``unseen_images``), with the attributes each caption states (the world's ``scenes.jsonl``);
- **compositional** (``compositional_prompts``, world data only): prompts whose (subject, clothing
  colour, background, object) never occurs together in any training caption, each with a fresh
  render of a scene holding exactly those attributes.

A ``Prompts`` carries its real set (the fidelity ceiling and the Fréchet reference) and a disjoint
real set of the same size (the Fréchet floor); ``mean_image`` is the trivial generator's output.
The ``paper`` profile (real Flickr8k) has no scene records: ``available(profile)`` is False, the
held-out captions state nothing, and there is no compositional set.
"""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from .. import data as mdata
from .. import profiles
from ..data import flickr8k, world

SETS = ("heldout", "compositional")
EVAL_SEED = 0            # sampling seed of every scored prompt set (06–09 alike) and of its bootstrap
# every (subject, clothing colour, background) triple occurs in the cpu training captions (224 of 224),
# so a compositional prompt adds the distractor object: 149 of the 480 possible quadruples are novel there
COMPOSITIONAL_KEYS = ("subject", "clothing_colour", "background", "object")


@dataclass
class Prompts:
    """Prompts to generate from, with the attributes each states and two real sets to compare with.

    The real reference (``real_images``) is image ``images[i]`` of ``folder`` or, where ``scenes`` is
    given (compositional prompts), a fresh render of ``scenes[i]``; the Fréchet floor is a second,
    disjoint real set of the same size (``floor_images``: training renders or second renders)."""
    images: list[str]            # the real image each caption describes ("" where a scene is rendered)
    captions: list[str]
    stated: list[dict]           # attribute -> value stated by the caption
    folder: Path
    name: str = "heldout"
    seed: int = EVAL_SEED        # sampling noise of the scored images
    floor: list[str] = field(default_factory=list)            # a disjoint real set (names in ``folder``)
    scenes: list[dict] | None = None                           # compositional: scenes to render
    floor_scenes: list[dict] | None = None
    render_size: int = 128                                     # the data's image size (renders, then resized)

    def __len__(self) -> int:
        return len(self.captions)

    def real_images(self, resolution: int) -> torch.Tensor:
        """The real renders the captions describe, uint8 (N, 3, r, r) (the fidelity ceiling)."""
        if self.scenes is not None:
            return render_scenes(self.scenes, self.render_size, resolution)
        return mdata.images(self.folder, self.images, resolution)

    def floor_images(self, resolution: int) -> torch.Tensor:
        """A second real set of the same size, disjoint from ``real_images`` (the Fréchet floor)."""
        if self.floor_scenes is not None:
            return render_scenes(self.floor_scenes, self.render_size, resolution)
        return mdata.images(self.folder, self.floor, resolution)

    def reference_key(self) -> dict:
        """What determines the real sets (the key of their cached features)."""
        return {"set": self.name, "folder": str(self.folder), "images": self.images, "floor": self.floor,
                "scenes": [s["seed"] for s in self.scenes] if self.scenes else None,
                "floor_scenes": [s["seed"] for s in self.floor_scenes] if self.floor_scenes else None}

    def subset(self, k: int) -> Prompts:
        """The first ``k`` prompts (e.g. 06's sampler comparison)."""
        cut = lambda v: None if v is None else v[:k]   # noqa: E731
        return replace(self, images=self.images[:k], captions=self.captions[:k], stated=self.stated[:k],
                       floor=self.floor[:k], scenes=cut(self.scenes), floor_scenes=cut(self.floor_scenes))


def render_scenes(scenes: Sequence[dict], size: int, resolution: int) -> torch.Tensor:
    """Photo renders of scene dicts, through the data set's JPEG (quality 95, 4:4:4) and its resize,
    so they match ``mdata.images`` of a world folder: uint8 (N, 3, r, r)."""
    out = np.empty((len(scenes), 3, resolution, resolution), dtype=np.uint8)
    for i, s in enumerate(scenes):
        buf = io.BytesIO()
        Image.fromarray(world.render(world.Scene.from_dict(s), "photo", size)).save(buf, "JPEG", quality=95,
                                                                                    subsampling=0)
        with Image.open(buf) as im:
            out[i] = np.asarray(mdata.square(im.convert("RGB"), resolution)).transpose(2, 0, 1)
    return torch.from_numpy(out)


def mean_image(profile: str, resolution: int) -> torch.Tensor:
    """The trivial generator's output: the mean training render, uint8 (3, r, r)."""
    split = mdata.load(profile)
    x = mdata.images(split.folder, [n for n, _ in split.train], resolution)
    return x.float().mean(0).round().to(torch.uint8)


def available(profile: str) -> bool:
    """Whether the profile's data has scene records (world8k), i.e. whether an oracle can judge it."""
    return (mdata.folder_for(profile) / "scenes.jsonl").exists()


def lora_split(folder: Path, lora_images: float | int) -> tuple[dict[str, list[str]], int]:
    """08's LoRA image split, by the study's recipe: the captions of ``folder`` in caption-file order, and
    how many of its first images LoRA trains on (``lora_images``: a count, or a share of all images).
    The one place the rule lives: ``t2i.sdxl.experiment.study_data`` calls it, and ``unseen_images`` below."""
    caps = flickr8k.read_captions(flickr8k.find_layout(folder)[0])
    return caps, lora_images if isinstance(lora_images, int) else round(lora_images * len(caps))


def unseen_images(split: mdata.Split, lora_images: float | int) -> list[mdata.Item]:
    """The val items of ``split`` no generator trained on. 06, 07 and 09 train on the train split; 08's
    LoRA on the first ``lora_images`` images of the caption file (``lora_split``), which reach into the
    val split. Callers pass 08's number in (``profiles.get(profile).sd_lora.lora_images``)."""
    caps, n_lora = lora_split(split.folder, lora_images)
    seen = set(list(caps)[:n_lora])
    return [item for item in split.val if item[0] not in seen]


def heldout_prompts(profile: str, n: int | None = None) -> Prompts:
    """Held-out prompts: ``n`` (default: profile ``t2i_eval.n_prompts``) captions of images no generator
    trained on (``unseen_images``), spread evenly over them and cycling through the five annotators
    so terse and detailed captions both appear. The Fréchet floor: as many training renders, evenly
    spaced. On data without scene records (real Flickr8k) ``stated`` is empty dicts.
    ``n`` is for tests: 06–09 score the profile's number, so they score the same prompts."""
    split = mdata.load(profile)
    unseen = unseen_images(split, profiles.get(profile).sd_lora.lora_images)
    scenes = world.read_scenes(split.folder) if available(profile) else None
    n = min(n or profiles.get(profile).t2i_eval.n_prompts, len(unseen), len(split.train))
    images, captions, stated = [], [], []
    for j, i in enumerate(np.linspace(0, len(unseen) - 1, n).round().astype(int)):
        name, refs = unseen[i]
        cap = scenes[name]["captions"][j % 5] if scenes else {"caption": refs[j % len(refs)], "stated": {}}
        images.append(name), captions.append(cap["caption"]), stated.append(cap["stated"])
    floor = [split.train[i][0] for i in np.linspace(0, len(split.train) - 1, n).round().astype(int)]
    return Prompts(images, captions, stated, split.folder, "heldout", floor=floor,
                   render_size=profiles.get(profile).data.image_size)


def training_combinations(profile: str, keys: Sequence[str] = COMPOSITIONAL_KEYS) -> set[tuple]:
    """Every combination of ``keys`` that some caption of a training image (any image but the
    held-out ones, ``unseen_images``) states together."""
    split = mdata.load(profile)
    held = {name for name, _ in unseen_images(split, profiles.get(profile).sd_lora.lora_images)}
    return {tuple(c["stated"][k] for k in keys) for name, rec in world.read_scenes(split.folder).items() if name not in held
            for c in rec["captions"] if all(k in c["stated"] for k in keys)}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def compositional_prompts(profile: str, n: int | None = None) -> Prompts | None:
    """Prompts "a <subject> in a <colour> <garment> <place> near a <object>" whose (subject, clothing
    colour, background, object) no training caption states together (``training_combinations``),
    cycling through those combinations in a seeded order (objects as the world places them:
    ``world.DISTRACTORS``); each prompt's reference is a fresh photo render of a clean scene with
    exactly these attributes (``world.scene_for_prompt``), its floor a second render.
    ``n`` default: profile ``t2i_eval.n_compositional`` (None: ``n_prompts``). None on data without
    scene records, or when every combination occurs in training."""
    if not available(profile):
        return None
    sec = profiles.get(profile).t2i_eval
    n = n or sec.n_compositional or sec.n_prompts
    seen = training_combinations(profile)
    novel = [c for c in ((s, col, bg, obj) for s in world.PEOPLE for col in world.CLOTHING
                         for bg in world.BACKGROUNDS for obj in world.DISTRACTORS[bg]) if c not in seen]
    if not novel:
        return None
    rng = np.random.default_rng(EVAL_SEED)
    order = rng.permutation(len(novel))
    captions, stated, scenes, floor = [], [], [], []
    for j in range(n):
        subject, colour, background, thing = novel[order[j % len(novel)]]
        garment = "dress" if subject in ("woman", "girl") and (j // len(novel)) % 2 == 1 else "top"
        attrs = dict(subject=subject, clothing_colour=colour, garment=garment, background=background, object=thing)
        place = world.PLACES[background].split("|")[0]          # the first phrase of each place states it
        obj_word = world.OBJECT_WORDS[thing].split("|")[0]
        captions.append(f"{_article(subject)} {subject} in {_article(colour)} {colour} "
                        f"{'dress' if garment == 'dress' else 'shirt'} {place} near a {obj_word}")
        stated.append({"category": "person", "count": 1, **attrs})
        scenes.append(asdict(world.scene_for_prompt(seed=int(rng.integers(2 ** 31)), **attrs)))
        floor.append(asdict(world.scene_for_prompt(seed=int(rng.integers(2 ** 31)), **attrs)))
    return Prompts([""] * n, captions, stated, mdata.folder_for(profile), "compositional", scenes=scenes,
                   floor_scenes=floor, render_size=profiles.get(profile).data.image_size)


def prompt_sets(profile: str) -> dict[str, Prompts]:
    """The prompt sets 06–09 all score: ``heldout`` and (world data only) ``compositional``."""
    sets = {"heldout": heldout_prompts(profile)}
    comp = compositional_prompts(profile)
    if comp is not None:
        sets["compositional"] = comp
    return sets
