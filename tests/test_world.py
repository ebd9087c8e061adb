"""world8k: determinism, Kaggle format, attribute bookkeeping, styles, caption statistics, atomicity."""
import csv
import json
from dataclasses import asdict

import numpy as np
import pytest
from PIL import Image

from mmlib import paths
from mmlib.data import world


def folder_bytes(folder):
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in files}


def test_generate_is_deterministic_by_seed(tmp_path):
    a = world.generate(tmp_path / "a", n_images=10, size=32, seed=0, workers=1)
    b = world.generate(tmp_path / "b", n_images=10, size=32, seed=0, workers=2)  # worker order must not matter
    c = world.generate(tmp_path / "c", n_images=10, size=32, seed=1, workers=1)
    fa, fb, fc = folder_bytes(a), folder_bytes(b), folder_bytes(c)
    assert fa == fb
    assert fa["captions.txt"] != fc["captions.txt"]
    assert not (set(fa) & set(fc)) - {"captions.txt", "scenes.jsonl"}  # image names depend on the seed


def test_kaggle_format_and_csv_round_trip(tmp_path):
    folder = world.generate(tmp_path / "w", n_images=40, size=32, seed=0, workers=1)
    lines = (folder / "captions.txt").read_text().splitlines()
    assert lines[0] == "image,caption" and len(lines) == 1 + 5 * 40
    rows = list(csv.DictReader(open(folder / "captions.txt", newline="")))
    records = [json.loads(line) for line in open(folder / "scenes.jsonl")]
    names = sorted((folder / "Images").iterdir())
    assert [p.name for p in names] == [r["image"] for r in records] == [world.image_name(0, i) for i in range(40)]
    assert [r["caption"] for r in rows] == [c["caption"] for r in records for c in r["captions"]]
    assert [r["image"] for r in rows] == [r["image"] for r in records for _ in range(5)]
    assert any("," in r["caption"] for r in rows)                 # quoting is exercised ...
    assert any(line.count('"') >= 2 for line in lines)            # ... and written as CSV quotes
    with Image.open(names[0]) as im:
        assert im.format == "JPEG" and im.size == (32, 32) and im.mode == "RGB"


def test_stated_attributes_are_canonical_and_true():
    for i in range(300):
        scene, captions = world.example(0, i)
        truth = world.scene_attributes(scene)
        assert all(v in world.ATTRIBUTES[k] for k, v in truth.items())
        assert len(captions) == 5 and len({c for c, _ in captions}) >= 3
        for text, stated in captions:
            for k, v in stated.items():
                assert k in world.ATTRIBUTES and v in world.ATTRIBUTES[k], (text, k, v)
                assert truth[k] == v, (text, k, v, truth)
            for k in ("dog_colour", "clothing_colour", "second_clothing_colour", "second_dog_colour"):
                if k in stated:
                    assert stated[k] in text.split(), (text, k)
            if "background" in stated and stated["background"] == "snow":
                assert "snow" in text
        assert world.Scene.from_dict(json.loads(json.dumps(asdict(scene)))) == scene


def test_every_attribute_value_occurs_and_is_sometimes_stated():
    seen, said = set(), set()
    for i in range(600):
        scene, captions = world.example(3, i)
        seen |= {(k, v) for k, v in world.scene_attributes(scene).items()}
        said |= {(k, v) for _, st in captions for k, v in st.items()}
    every = {(k, v) for k, vs in world.ATTRIBUTES.items() for v in vs}
    assert seen == every
    never_said = {("ball", False), ("object", "none"), ("second_subject", "none")}
    assert said == every - never_said


def test_sample_scene_keeps_fixed_attributes_and_rejects_impossible_ones():
    rng = np.random.default_rng(0)
    for _ in range(20):
        s = world.sample_scene(rng, subject="girl", garment="dress", clothing_colour="green", background="snow")
        a = world.scene_attributes(s)
        assert (a["subject"], a["garment"], a["clothing_colour"], a["background"]) == ("girl", "dress", "green", "snow")
    with pytest.raises(ValueError):
        world.sample_scene(rng, subject="man", garment="dress")
    with pytest.raises(ValueError):
        world.sample_scene(rng, colour_of_sky="green")


def test_styles_render_the_same_scene_differently():
    for i in range(10):
        scene, _ = world.example(0, i)
        for size in (32, 64):
            photo, cartoon = world.render(scene, "photo", size), world.render(scene, "cartoon", size)
            assert photo.shape == cartoon.shape == (size, size, 3) and photo.dtype == np.uint8
            n_photo = len(np.unique(photo.reshape(-1, 3), axis=0))
            n_cartoon = len(np.unique(cartoon.reshape(-1, 3), axis=0))
            assert n_cartoon * 10 < n_photo                               # flat colours vs texture and noise
            flat = lambda x: (np.abs(np.diff(x.astype(int), axis=1)).sum(-1) == 0).mean()
            assert flat(cartoon) > 0.6 > 0.1 > flat(photo)
        assert np.array_equal(world.render(scene, "photo", 64), world.render(scene, "photo", 64))


def test_attributes_are_visible():
    """Clothing is a solid region of its colour; night is dark with bright stars; snow is bright."""
    for i in range(40):
        scene = world.scene_for_prompt(seed=i, subject="woman", background="park")
        img = world.render(scene, "cartoon", 64)
        colour = world.cartoon_rgb(world.RGB[scene.main.colour])
        assert (img == colour).all(-1).sum() >= 25                        # px of the clothing colour
    night = world.render(world.scene_for_prompt(background="night"), "photo", 32).astype(float)
    snow = world.render(world.scene_for_prompt(background="snow"), "photo", 32).astype(float)
    assert night.mean() < 60 < 170 < snow.mean()
    sky = night[: int(32 * world.LAYOUT["night"][0]) - 2].mean(-1)
    assert (sky > 150).sum() >= 10                                        # stars survive 32 px


def test_caption_statistics_near_flickr8k():
    captions = [c for i in range(500) for c, _ in world.example(0, i)[1]]
    stats = world.caption_stats(captions)
    assert 9 <= stats["mean_words"] <= 14 and 9 <= stats["median_words"] <= 13
    assert 150 <= stats["vocab_size"] <= 2000
    assert np.mean([c.endswith(" .") for c in captions]) > 0.8
    assert np.mean([c[0].isupper() for c in captions]) > 0.85
    try:
        real_file = paths.seed_file("flickr8k_captions.txt")
    except FileNotFoundError:
        pytest.skip("real Flickr8k captions not available")
    real = world.caption_stats([row[1] for row in list(csv.reader(open(real_file)))[1:]])
    assert real["n_captions"] == 40455 and real["median_words"] == 11
    overlap = set(stats["top_content_words"]) & set(real["top_content_words"])
    assert len(overlap) >= 12, overlap


def test_seed_prompt_scenes_render():
    assert len(world.SEED_PROMPT_SCENES) == 8
    for prompt, scene in world.SEED_PROMPT_SCENES.items():
        attrs = world.scene_attributes(scene)
        assert all(attrs[k] == v for k, v in world.SEED_PROMPT_SCENES_ATTRS[prompt].items())
        assert attrs["second_subject"] == "none" and attrs["count"] == 1
        for style in ("photo", "cartoon"):
            assert world.render(scene, style, 32).shape == (32, 32, 3)
    dog = world.SEED_PROMPT_SCENES["a small white dog jumping to catch a tennis ball"]
    assert dog.ball is not None and dog.ball.y < dog.main.y - 0.5 * dog.main.height  # the ball is up in the air


def test_generate_is_atomic(tmp_path, monkeypatch):
    real_render, calls = world.render, []

    def failing_render(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("simulated crash")
        return real_render(*args, **kwargs)

    monkeypatch.setattr(world.dataset, "render", failing_render)   # where generate looks it up
    with pytest.raises(RuntimeError, match="simulated"):
        world.generate(tmp_path / "w", n_images=10, size=32, workers=1)
    assert list(tmp_path.iterdir()) == []                                  # no folder, no leftovers


def test_ensure_caches_and_validates(tmp_path, monkeypatch):
    monkeypatch.setattr(world.dataset, "data_dir", lambda: tmp_path)
    folder = world.ensure(n_images=6, size=32, seed=0, workers=1)
    assert folder.name == "world8k_photo_32px_n6_s0"
    stamp = (folder / "captions.txt").stat().st_mtime_ns
    assert world.ensure(n_images=6, size=32, seed=0) == folder
    assert (folder / "captions.txt").stat().st_mtime_ns == stamp          # not regenerated
    next((folder / "Images").iterdir()).unlink()
    with pytest.raises(RuntimeError, match="Delete the folder"):
        world.ensure(n_images=6, size=32, seed=0)
