"""world8k folders in the Kaggle Flickr8k layout: ``Images/``, ``captions.txt``, ``scenes.jsonl``; generated
deterministically, validated, cached under ``runs/data``."""
from __future__ import annotations

import csv
import functools
import hashlib
import json
import multiprocessing as mp
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image

from ...paths import data_dir
from .captions import describe
from .render import render
from .scene import Scene, sample_scene, scene_attributes


# ---------------------------------------------------------------------------------------------
# data set folders
# ---------------------------------------------------------------------------------------------
def image_name(seed: int, index: int) -> str:
    """Flickr-like, sorted in index order: ``w0000123_1a2b3c4d.jpg``."""
    return f"w{index:07d}_{hashlib.blake2b(f'{seed}:{index}'.encode(), digest_size=4).hexdigest()}.jpg"


def example(seed: int, index: int) -> tuple[Scene, list[tuple[str, dict]]]:
    """The scene and captions of image ``index`` (independent of worker order and style)."""
    rng = np.random.default_rng([seed, index])
    scene = sample_scene(rng)
    return scene, describe(scene, rng)


def _make_image(job: tuple) -> tuple[str, list[str], str]:
    seed, index, size, style, folder = job
    scene, captions = example(seed, index)
    name = image_name(seed, index)
    # 4:4:4 chroma keeps the colour of 3-pixel balls; quality 95 as the issue asks
    Image.fromarray(render(scene, style, size)).save(Path(folder) / name, quality=95, subsampling=0)
    record = {"image": name, "index": index, "style": style, "scene": asdict(scene),
              "attributes": scene_attributes(scene),
              "captions": [{"caption": c, "stated": st} for c, st in captions]}
    return name, [c for c, _ in captions], json.dumps(record, sort_keys=True)


def generate(out_dir: str | Path, n_images: int = 8091, size: int = 128, seed: int = 0,
             style: str = "photo", workers: int = 2) -> Path:
    """Write a world8k folder; the same arguments give the same bytes.

    Built in a temporary sibling folder and renamed at the end, so a crash never leaves a folder
    that looks complete. Cost (8,091 images, 128 px, photo): 65 s of worker CPU (8 ms per image:
    sampling + captions 1, render 4, JPEG 1.5, bookkeeping), i.e. about 35 s with 2 workers on 2
    idle cores; 248 s wall measured while the 2 cores were shared with ~12 busy processes.
    JPEGs are ~13 KB each (106 MB in all).
    """
    out = Path(out_dir)
    if out.exists():
        raise FileExistsError(f"{out} exists; delete it to regenerate")
    tmp = out.parent / f".{out.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "Images").mkdir(parents=True)
    jobs = [(seed, i, size, style, str(tmp / "Images")) for i in range(n_images)]
    try:
        with open(tmp / "captions.txt", "w", newline="") as cap, open(tmp / "scenes.jsonl", "w") as sc:
            writer = csv.writer(cap, lineterminator="\n")
            writer.writerow(["image", "caption"])

            def write(results):  # in index order, whichever worker made them
                for name, captions, record in results:
                    writer.writerows([name, c] for c in captions)
                    sc.write(record + "\n")

            if workers > 1:
                # fork (as torch's DataLoader does): workers inherit the imported modules
                ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
                with ctx.Pool(workers) as pool:
                    write(pool.imap(_make_image, jobs, chunksize=64))
            else:
                write(map(_make_image, jobs))
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def validate(folder: Path, n_images: int) -> None:
    """Raise if the folder is not a complete world8k of ``n_images`` images."""
    n_files = sum(1 for _ in (folder / "Images").glob("*.jpg"))
    with open(folder / "captions.txt") as f:
        n_lines = sum(1 for _ in f) - 1
    with open(folder / "scenes.jsonl") as f:
        n_scenes = sum(1 for _ in f)
    if (n_files, n_lines, n_scenes) != (n_images, 5 * n_images, n_images):
        raise RuntimeError(f"{folder}: {n_files} images, {n_lines} captions, {n_scenes} scenes; expected "
                           f"{n_images}, {5 * n_images}, {n_images}. Delete the folder to regenerate.")


def ensure(n_images: int = 8091, size: int = 128, seed: int = 0, style: str = "photo", workers: int = 2) -> Path:
    """The cached folder ``runs/data/world8k_<style>_<size>px_n<n>_s<seed>``, generated if missing."""
    folder = data_dir() / f"world8k_{style}_{size}px_n{n_images}_s{seed}"
    if not folder.exists():
        try:
            generate(folder, n_images, size, seed, style, workers)
        except OSError:  # another process finished the same folder first
            if not folder.exists():
                raise
    validate(folder, n_images)
    return folder


def read_scenes(folder: Path) -> dict[str, dict]:
    """``scenes.jsonl`` of a world folder: image name -> record (``attributes``, ``captions`` with ``stated``).
    Read once per process and file version (8,091 records take seconds); treat the result as read-only."""
    path = Path(folder) / "scenes.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: prompt fidelity needs the world's scene records "
                                f"(smoke/cpu profiles); real Flickr8k has no ground-truth scenes")
    return _read_scenes(path.resolve(), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=4)
def _read_scenes(path: Path, mtime_ns: int) -> dict[str, dict]:
    with open(path) as f:
        return {r["image"]: r for r in map(json.loads, f)}
