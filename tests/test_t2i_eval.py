"""The text-to-image evaluation: attribute oracle, prompt fidelity, Fréchet distance, shared table."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmlib import results
from mmlib.data import world
from mmlib.eval import t2i

RES = 16


def renders(n: int, seed: int) -> tuple[torch.Tensor, list[dict]]:
    """``n`` real world renders at RES px (uint8 (n, 3, RES, RES)) and their scene attributes."""
    rng = np.random.default_rng(seed)
    scenes = [world.sample_scene(rng) for _ in range(n)]
    x = np.stack([world.render(s, "photo", RES) for s in scenes]).transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x)), [world.scene_attributes(s) for s in scenes]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny oracle for background + category, trained for a few seconds on 16 px renders."""
    names = ["background", "category"]
    x, attrs = renders(320, seed=1)
    y = torch.stack([t2i.encode_labels(a, names) for a in attrs])
    cfg = t2i.OracleConfig(resolution=RES, width=16, steps=100, batch_size=64, lr=3e-3, blur=0.6, noise=0.04, shift=1)
    model, fit = t2i.fit_oracle(x, y, names, cfg, tmp_path_factory.mktemp("oracle"), {"test": 1})
    xv, av = renders(128, seed=2)
    return model, xv, av


def test_encode_labels_marks_missing_attributes():
    y = t2i.encode_labels({"background": "snow", "count": 2, "ball": True}, ["background", "count", "ball", "dog_colour"])
    assert y.tolist() == [world.ATTRIBUTES["background"].index("snow"), 1, 1, -100]


def test_oracle_reads_real_renders(trained):
    model, xv, av = trained
    yv = torch.stack([t2i.encode_labels(a, model.names) for a in av])
    acc = t2i.heldout_accuracy(model, xv, yv)
    majority = max((yv[:, 1] == k).float().mean() for k in range(2))   # person vs dog, ~0.6 person
    assert acc["background"] > 0.8, acc       # chance 1/7
    assert acc["category"] > majority + 0.05, (acc, majority)


def test_real_fidelity_far_above_mean_image(trained):
    model, xv, av = trained
    stated = [{"background": a["background"], "category": a["category"]} for a in av]
    real = t2i.prompt_fidelity(model, xv, stated)
    mean = xv.float().mean(0).round().to(torch.uint8).expand_as(xv).contiguous()
    base = t2i.prompt_fidelity(model, mean, stated)
    assert real.overall > base.overall + 0.25, (real, base)
    assert set(real.per_attribute) == {"background", "category"} and real.counts["background"] == len(xv)


def test_fidelity_counts_only_stated_attributes(trained):
    model, xv, av = trained
    stated = [{"category": a["category"]} for a in av]
    fid = t2i.prompt_fidelity(model, xv, stated)
    assert set(fid.per_attribute) == {"category"}
    assert fid.overall == pytest.approx(fid.per_attribute["category"])


def test_frechet_zero_on_itself_and_grows_with_noise(trained):
    model, xv, _ = trained
    assert t2i.frechet_distance(model, xv, xv) == pytest.approx(0.0, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    noisy = [(xv.float() + s * torch.randn(xv.shape, generator=g)).clamp(0, 255).to(torch.uint8) for s in (8, 40, 120)]
    d = [t2i.frechet_distance(model, xv, n) for n in noisy]
    assert d[0] < d[1] < d[2], d


def test_inputs_are_resized_to_the_oracle_resolution(trained):
    model, xv, _ = trained
    big = torch.nn.functional.interpolate(xv.float(), scale_factor=2, mode="nearest").to(torch.uint8)
    assert (t2i.predict(model, big) == t2i.predict(model, xv)).float().mean() > 0.8


def test_time_sampling_reports_rates():
    images, cost = t2i.time_sampling(lambda: torch.zeros(6, 3, 8, 8, dtype=torch.uint8), batch_size=3, steps=10)
    assert images.shape[0] == 6 and cost.n_images == 6 and cost.steps == 10
    assert cost.seconds_per_image * cost.images_per_second == pytest.approx(1.0)


def test_table_assembles_saved_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RUNS", tmp_path)
    row = {"notebook": "07", "model": "m", "resolution": 32, "fidelity": 0.5, "ceiling": 0.9, "baseline": 0.3,
           "per_attribute": {"background": 0.6}, "frechet": 1.0, "frechet_real_floor": 0.1,
           "cost": t2i.SamplingCost(2.0, 4, 4, 25, "cpu").as_dict()}
    results.save("smoke", "t2i_row_07", row)
    rows = t2i.table("smoke")
    assert [r["NB"] for r in rows] == ["07"]
    assert rows[0]["fidelity %"] == pytest.approx(50) and rows[0]["s/image"] == pytest.approx(0.5)
    saved = results.load("smoke", t2i.TABLE_KEY)
    assert saved["rows"][0]["background %"] == pytest.approx(60)


def test_heldout_prompts_state_what_the_caption_says():
    prompts = t2i.heldout_prompts("smoke", n=8)
    assert len(prompts) == 8 and all(isinstance(s, dict) and s for s in prompts.stated)
    for cap, st in zip(prompts.captions, prompts.stated):
        if "clothing_colour" in st:
            assert st["clothing_colour"] in cap.lower()
    assert prompts.real_images(RES).shape == (8, 3, RES, RES)


def test_colour_words_is_a_binomial_test_against_chance(monkeypatch):
    """Claim 2.3's record: hits of the prompted dress colour against 1/colours, one-sided."""
    colours = ["red", "blue"]
    images = torch.zeros(8, 3, 4, 4, dtype=torch.uint8)
    # an oracle that reads every dress as red: the red prompts hit, the blue ones miss
    monkeypatch.setattr(t2i, "prompt_fidelity", lambda m, imgs, stated: t2i.Fidelity(
        0.5, {"clothing_colour": sum(s["clothing_colour"] == "red" for s in stated) / len(stated)}, {}, len(stated)))
    cw = t2i.colour_words(object(), images, colours)
    assert (cw.clothing_colour, cw.chance, cw.n, cw.samples_per_colour) == (0.5, 0.5, 8, 4)
    assert cw.p_value == pytest.approx(0.6367, abs=1e-3)      # 4 of 8 at chance 1/2 is no evidence
    assert set(cw.mean_rgb) == set(colours)
    none = t2i.colour_words(None, images, colours)
    assert none.p_value != none.p_value                         # NaN without an oracle
