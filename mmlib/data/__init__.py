"""Data for every notebook: the real Flickr8k folder (``paper``) or the embedded world8k (``smoke``/``cpu``).

Both are folders in the Kaggle Flickr8k layout, read by the same loader and split by the study's
rule (images sorted by name; first 80 % train, last 20 % validation with all five references).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .. import ckpt, profiles
from ..paths import data_dir
from . import flickr8k, world
from .flickr8k import find_layout

Item = tuple[str, list[str]]  # (image file name, its 5 captions)


@dataclass(frozen=True)
class DataSettings:
    """Profile section ``data`` (notebook 01)."""
    source: str                          # "world8k" (generated here) or "flickr8k" (a local Kaggle-layout folder)
    image_size: int                      # world8k: rendered size; flickr8k: the size images are read at
    n_images: int = 8091                 # world8k: images generated (Flickr8k has 8,091)
    seed: int = 0                        # world8k: generator seed
    real_ceiling: bool = False           # also score the real Flickr8k val references against each other (~100 s)
    flickr8k_dir: str = "data/flickr8k"  # paper: the folder with captions.txt and Images/


@dataclass
class Split:
    folder: Path
    train: list[Item]
    val: list[Item]
    source: str                 # "world8k" or "flickr8k"

    @property
    def image_dir(self) -> Path:
        return image_dir(self.folder)

    def refs(self, part: str = "val") -> dict[str, list[str]]:
        return dict(getattr(self, part))


def image_dir(folder: Path) -> Path:
    return find_layout(folder)[1]


def folder_for(profile: str) -> Path:
    """The data folder of a profile, generating world8k on first use."""
    cfg = profiles.get(profile).data
    if cfg.source == "flickr8k":
        folder = Path(cfg.flickr8k_dir)
        if not folder.exists():
            raise FileNotFoundError(f"Flickr8k folder {folder} not found: set FLICKR8K_DIR to a folder "
                                    f"with captions.txt and Images/ (the Kaggle layout)")
        return folder
    return world.ensure(n_images=cfg.n_images, size=cfg.image_size, seed=cfg.seed)


def load(profile: str) -> Split:
    cfg = profiles.get(profile).data
    folder = folder_for(profile)
    captions = flickr8k.load_folder(folder)
    train, val = flickr8k.seed_split(captions)
    return Split(folder=folder, train=train, val=val, source=cfg.source)


def images(folder: Path, names: list[str], size: int) -> "torch.Tensor":
    """uint8 tensor (N, 3, size, size) of the named images, resized (centre crop to square first).

    Cached as a .npy next to the generated data (keyed by folder, names and size), so frozen
    encoders and diffusion models never decode the JPEGs twice.
    """

    key = hashlib.sha256(("\n".join(names) + f"|{size}|{Path(folder).resolve()}").encode()).hexdigest()[:12]
    cache = data_dir() / "image_cache" / f"{Path(folder).name}_{size}px_{key}.npy"
    if cache.exists():
        return torch.from_numpy(np.load(cache))
    src = image_dir(folder)
    out = np.empty((len(names), 3, size, size), dtype=np.uint8)
    for i, name in enumerate(names):
        with Image.open(src / name) as im:
            out[i] = np.asarray(square(im.convert("RGB"), size)).transpose(2, 0, 1)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:      # a file object: np.save would append ".npy" to a path
            np.save(f, out)
    ckpt.atomic_write(cache, write)
    return torch.from_numpy(out)


def square(im: Image.Image, size: int) -> Image.Image:
    """Centre crop to a square, then resize with antialiasing."""
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return im if s == size else im.resize((size, size), Image.BICUBIC)
