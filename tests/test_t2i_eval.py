"""The text-to-image evaluation: calibrated oracle, prompt fidelity with reference rows and intervals,
shared prompt sets, Fréchet distance in an independent feature space, style controls, and the verdicts
of claims 2.1–2.4 on saved results."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from mmlib import claims, images, results
from mmlib import data as mdata
from mmlib.data import world
from mmlib.eval import frechet, oracle, style, t2i, t2i_fidelity, t2i_prompts, t2i_seeds, t2i_tables
from mmlib.eval.bootstrap import Interval

RES = 16


def renders(n: int, seed: int, style_name: str = "photo") -> tuple[torch.Tensor, list[dict]]:
    """``n`` real world renders at RES px (uint8 (n, 3, RES, RES)) and their scene attributes."""
    rng = np.random.default_rng(seed)
    scenes = [world.sample_scene(rng) for _ in range(n)]
    x = np.stack([world.render(s, style_name, RES) for s in scenes]).transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x)), [world.scene_attributes(s) for s in scenes]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny oracle for background + category, trained for a few seconds on 16 px renders and calibrated."""
    names = ["background", "category"]
    x, attrs = renders(320, seed=1)
    y = torch.stack([oracle.encode_labels(a, names) for a in attrs])
    cfg = oracle.OracleConfig(resolution=RES, width=16, steps=100, batch_size=64, lr=3e-3, blur=0.6, noise=0.04, shift=1)
    model, fit = oracle.fit_oracle(x, y, names, cfg, tmp_path_factory.mktemp("oracle"), {"test": 1})
    xv, av = renders(128, seed=2)
    oracle.calibrate(model, xv, torch.stack([oracle.encode_labels(a, names) for a in av]))
    return model, xv, av


def test_encode_labels_marks_missing_attributes():
    y = oracle.encode_labels({"background": "snow", "count": 2, "ball": True},
                          ["background", "count", "ball", "dog_colour"])
    assert y.tolist() == [world.ATTRIBUTES["background"].index("snow"), 1, 1, -100]


# ----------------------------------------------------------------------------- calibration


def test_oracle_reads_real_renders_and_is_calibrated_against_the_prior(trained):
    model, xv, av = trained
    majority = max(np.mean([a["category"] == c for a in av]) for c in ("person", "dog"))
    assert model.prior["category"] == pytest.approx(majority)
    assert model.accuracy["background"] > 0.8          # chance 1/7, prior ~0.24
    assert "background" in model.readable
    assert model.accuracy["category"] > majority + 0.05


def test_a_head_that_answers_the_majority_value_is_not_readable(monkeypatch):
    """78 % of the labels are value 0: a head that always says 0 scores 0.78 and is *not* readable;
    one that is right 95 % of the time beats the prior by 17 points and is."""
    y = torch.tensor([[0] * 78 + [1] * 22, [0] * 78 + [1] * 22]).T               # (100, 2)
    right = y[:, 1].clone()
    right[:5] = 1 - right[:5]                                                     # 95 % correct
    fake = types.SimpleNamespace(names=["count", "ball"])
    monkeypatch.setattr(oracle, "predict", lambda m, x: torch.stack([torch.zeros(100, dtype=torch.long), right], 1))
    table = oracle.calibrate(fake, torch.zeros(100, 3, 4, 4, dtype=torch.uint8), y)
    assert table["count"]["accuracy"] == pytest.approx(0.78) and table["count"]["prior"] == pytest.approx(0.78)
    assert table["count"]["majority"] == 1 and not table["count"]["readable"]   # count's value 0 is "1 subject"
    assert table["ball"]["accuracy"] == pytest.approx(0.95) and table["ball"]["readable"]
    assert fake.readable == ["ball"] and oracle.READABLE_MARGIN == 0.15


# ----------------------------------------------------------------------------- prompt fidelity


def fixed_oracle(monkeypatch, pred: torch.Tensor, names: list[str], readable: list[str]):
    """An oracle whose predictions are ``pred`` (N, A) whatever the images."""
    monkeypatch.setattr(t2i_fidelity, "predict", lambda m, images: pred)
    return types.SimpleNamespace(names=names, readable=readable, resolution=RES)


def test_fidelity_is_a_macro_average_over_readable_attributes_with_intervals(monkeypatch):
    names = ["background", "count", "subject"]
    n = 40
    stated = [{"background": "park", "count": 1, **({"subject": "dog"} if i < 5 else {})} for i in range(n)]
    park, snow = world.ATTRIBUTES["background"].index("park"), world.ATTRIBUTES["background"].index("snow")
    pred = torch.tensor([[park if i < 30 else snow, 0, world.KINDS.index("dog")] for i in range(n)])
    model = fixed_oracle(monkeypatch, pred, names, readable=["background", "subject"])
    fid = t2i_fidelity.prompt_fidelity(model, torch.zeros(n, 3, 4, 4, dtype=torch.uint8), stated)
    # count is stated everywhere and read right, but not readable; subject is readable but only 5 prompts state it
    assert fid.per_attribute == {"background": 0.75, "count": 1.0, "subject": 1.0}
    assert fid.macro_attributes == ["background"] and fid.macro == pytest.approx(0.75)
    iv = fid.interval()
    assert iv.lo < 0.75 < iv.hi and iv.n == n
    low = t2i_fidelity.prompt_fidelity(model, torch.zeros(n, 3, 4, 4, dtype=torch.uint8), stated, min_stated=5)
    assert low.macro_attributes == ["background", "subject"] and low.macro == pytest.approx((0.75 + 1.0) / 2)
    d = fid.as_dict()
    assert d["macro"]["value"] == pytest.approx(0.75) and set(d["per_attribute"]) == {"background", "count", "subject"}


def test_prior_baseline_pairs_every_prompt_with_another_prompts_scene():
    for n in (2, 3, 17):
        perm = t2i_fidelity.derangement(n, seed=n)
        assert sorted(perm) == list(range(n)) and all(perm[i] != i for i in range(n))


def test_real_fidelity_far_above_mean_image(trained):
    model, xv, av = trained
    stated = [{"background": a["background"], "category": a["category"]} for a in av]
    real = t2i_fidelity.prompt_fidelity(model, xv, stated)
    mean = xv.float().mean(0).round().to(torch.uint8).expand_as(xv).contiguous()
    base = t2i_fidelity.prompt_fidelity(model, mean, stated)
    assert real.interval().above(base.interval()), (real.macro, base.macro)
    assert real.counts["background"] == len(xv)


def test_inputs_are_resized_to_the_oracle_resolution(trained):
    model, xv, _ = trained
    big = torch.nn.functional.interpolate(xv.float(), scale_factor=2, mode="nearest").to(torch.uint8)
    assert (oracle.predict(model, big) == oracle.predict(model, xv)).float().mean() > 0.8


def test_time_sampling_reports_rates_and_network_passes():
    images, cost = t2i.time_sampling(lambda: torch.zeros(6, 3, 8, 8, dtype=torch.uint8), batch_size=3, steps=10,
                                     guidance=4.0)
    assert images.shape[0] == 6 and cost.n_images == 6 and cost.steps == 10 and cost.network_evals == 20
    assert cost.seconds_per_image * cost.images_per_second == pytest.approx(1.0)
    assert t2i.network_evals(4, 1.0) == 4


# ----------------------------------------------------------------------------- prompt sets


def test_heldout_prompts_are_unseen_by_every_generator_and_state_what_the_caption_says():
    from mmlib.t2i.sdxl import experiment as sdxl_experiment
    prompts = t2i_prompts.heldout_prompts("smoke", n=8)
    assert len(prompts) == 8 == len(prompts.floor) and all(isinstance(s, dict) and s for s in prompts.stated)
    split = mdata.load("smoke")
    assert set(prompts.images) <= {n for n, _ in split.val}
    assert not set(prompts.images) & set(sdxl_experiment.study_data("smoke").lora_names)   # 08's LoRA never saw them
    assert set(prompts.floor) <= {n for n, _ in split.train}                         # the floor is disjoint
    for cap, st in zip(prompts.captions, prompts.stated):
        if "clothing_colour" in st:
            assert st["clothing_colour"] in cap.lower()
    assert prompts.real_images(RES).shape == (8, 3, RES, RES) == prompts.floor_images(RES).shape
    assert t2i_prompts.heldout_prompts("smoke", n=8).captions == prompts.captions             # one set, every time


def test_compositional_prompts_are_absent_from_training_captions():
    prompts = t2i_prompts.compositional_prompts("smoke", n=12)
    seen = t2i_prompts.training_combinations("smoke")
    assert len(prompts) == 12 and prompts.name == "compositional"
    for cap, st, scene in zip(prompts.captions, prompts.stated, prompts.scenes):
        assert tuple(st[k] for k in t2i_prompts.COMPOSITIONAL_KEYS) not in seen
        assert st["subject"] in cap and st["clothing_colour"] in cap
        attrs = world.scene_attributes(world.Scene.from_dict(scene))
        assert all(attrs[k] == v for k, v in st.items()), (st, attrs)   # the reference shows what is asked
    real, floor = prompts.real_images(RES), prompts.floor_images(RES)
    assert real.shape == floor.shape == (12, 3, RES, RES) and not torch.equal(real, floor)


# ----------------------------------------------------------------------------- Fréchet distance


def test_frechet_matches_the_closed_form_for_two_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = np.array([0.0, 1.0, -1.0]), np.array([0.5, 0.0, -1.0])
    a1, a2 = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    s1, s2 = a1 @ a1.T + 0.1 * np.eye(3), a2 @ a2.T + 0.1 * np.eye(3)       # non-commuting covariances
    # diagonal covariances: d² = |mu1 - mu2|² + sum (sqrt(a) - sqrt(b))²
    assert frechet.gaussian_distance(mu1, np.diag([1.0, 4.0, 9.0]), mu2, np.diag([4.0, 1.0, 1.0])) == \
        pytest.approx(1.25 + 1 + 1 + 4)
    exact = frechet.gaussian_distance(mu1, s1, mu2, s2)
    fa = rng.multivariate_normal(mu1, s1, size=40000)
    fb = rng.multivariate_normal(mu2, s2, size=40000)
    assert frechet.distance(fa, fb) == pytest.approx(exact, rel=0.03)
    assert frechet.distance(fa, fa) == pytest.approx(0.0, abs=1e-8)


def test_frechet_routes_and_the_paired_bootstrap_agree():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(30, 50)), rng.normal(size=(30, 50)) * 1.2 + 0.3      # n < d, as in the notebooks
    assert frechet.distance(a, b, route="samples") == pytest.approx(frechet.distance(a, b, route="features"), rel=1e-6)
    stat = frechet.paired_statistic(a, b)
    w = np.random.default_rng(2).multinomial(30, np.full(30, 1 / 30)).astype(float)
    assert stat(w) == pytest.approx(frechet.distance(a, b, w, w), rel=1e-9)
    iv = frechet.paired_interval(a, b, n_boot=100)
    assert iv.lo <= iv.value <= iv.hi and iv.value == pytest.approx(frechet.distance(a, b))


def test_frechet_features_are_the_imagenet_cnn_pooled():
    x, _ = renders(6, seed=3)
    f = frechet.features(x)
    assert f.shape == (6, 1280) and torch.isfinite(f).all()
    noisy = (x.float() + 60 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 255)
    assert frechet.distance(f, frechet.features(noisy.to(torch.uint8))) > frechet.distance(f[:3], f[3:]) * 0.5
    assert frechet.distance(f, f) == pytest.approx(0.0, abs=1e-6)


# ----------------------------------------------------------------------------- style controls


def test_style_controls_blur_and_calibration():
    flat = torch.full((2, 3, 8, 8), 77, dtype=torch.uint8)
    assert torch.equal(style.gaussian_blur(flat, 1.0), flat)                    # a blur keeps flat images
    edge = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)
    edge[..., 4:] = 255
    blurred = style.gaussian_blur(edge, 1.0)
    assert 0 < blurred[0, 0, 0, 3] < 255 and abs(blurred.float().mean() - edge.float().mean()) < 2
    ok = style.calibration(0.95, {"real cartoons, blurred": ("cartoon", 0.97)})
    bad = style.calibration(0.95, {"real cartoons, VAE round trip": ("cartoon", 0.40)})
    assert ok["calibrated"] and not ok["failures"]
    assert not bad["calibrated"] and "VAE round trip" in bad["failures"][0]
    assert not style.calibration(0.80, {})["calibrated"]


def test_style_classifier_separates_real_styles_and_reads_blurred_cartoons_as_cartoons(tmp_path):
    """Held-out real renders are told apart, and the blurred control of 08 holds: a classifier trained
    with blur augmentation judges style, not sharpness."""
    scenes = [world.example(7, i)[0] for i in range(96)]
    r = {s: torch.from_numpy(np.stack([world.render(sc, s, 64) for sc in scenes])).permute(0, 3, 1, 2).contiguous()
         for s in style.STYLES}
    cfg = style.StyleConfig(resolution=16, width=8, steps=150, batch_size=32, lr=5e-3)
    model, _ = style.fit_classifier(r["cartoon"][:64], r["photo"][:64], cfg, tmp_path, {"t": 1})
    assert style.heldout_accuracy(model, r["cartoon"][64:], r["photo"][64:]) >= 0.9
    assert style.style_share(model, r["photo"][64:]) > 0.8 > 0.2 > style.style_share(model, r["cartoon"][64:])
    small = torch.nn.functional.interpolate(r["cartoon"][64:].float(), size=16, mode="bilinear", antialias=True)
    blurred = style.gaussian_blur(small.round().to(torch.uint8), style.CONTROL_BLUR)
    assert 1 - style.photo_indicator(model, blurred).mean() >= style.MIN_CONTROL_SHARE


def posterise_and_blur(images: torch.Tensor) -> torch.Tensor:
    """A crude first stage: 4 grey levels per channel, then a 2-pixel blur (flat fills, no texture)."""
    return style.gaussian_blur((images // 64) * 64 + 32, 2.0)


def test_style_classifier_trained_with_a_first_stage_reads_its_round_trips_by_style(tmp_path):
    """With the first stage's round trips of both styles in training, held-out renders through that first
    stage are read as their true style (08's VAE control), and clean held-out renders still are."""
    scenes = [world.example(11, i)[0] for i in range(160)]
    r = {s: torch.from_numpy(np.stack([world.render(sc, s, 16) for sc in scenes])).permute(0, 3, 1, 2).contiguous()
         for s in style.STYLES}
    stage = ("posterise", posterise_and_blur)
    cartoon, photo = style.with_first_stage(r["cartoon"][:128], r["photo"][:128], stage)
    assert len(cartoon) == len(photo) == 256 and torch.equal(cartoon[128:], posterise_and_blur(r["cartoon"][:128]))
    assert style.with_first_stage(r["cartoon"], r["photo"], None) == (r["cartoon"], r["photo"])
    cfg = style.StyleConfig(resolution=16, width=8, steps=200, batch_size=32, lr=5e-3)
    model, _ = style.fit_classifier(cartoon, photo, cfg, tmp_path, {"t": 2})
    held = {s: r[s][128:] for s in style.STYLES}
    assert style.heldout_accuracy(model, held["cartoon"], held["photo"]) >= 0.9
    assert style.style_share(model, posterise_and_blur(held["cartoon"]), "cartoon") >= style.MIN_CONTROL_SHARE
    assert style.style_share(model, posterise_and_blur(held["photo"]), "photo") >= style.MIN_CONTROL_SHARE


def test_vae_round_trip_keeps_shape_and_dtype():
    from diffusers import AutoencoderKL

    from mmlib.t2i.sdxl import experiment as sdxl_experiment
    vae = AutoencoderKL(block_out_channels=(8, 8), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8)
    x, _ = renders(3, seed=4, style_name="cartoon")
    out = sdxl_experiment.vae_round_trip(types.SimpleNamespace(vae=vae), x)
    assert out.shape == x.shape and out.dtype == torch.uint8
    controls = sdxl_experiment.style_controls(types.SimpleNamespace(vae=vae), x, x)
    assert set(controls) == set(sdxl_experiment.CONTROLS) and all(v.shape == x.shape for v in controls.values())


# ----------------------------------------------------------------------------- rows, tables, verdicts


def fidelity(hits: list[int], n: int = 100, attrs: tuple[str, ...] = ("background",)) -> t2i_fidelity.Fidelity:
    """A synthetic Fidelity: every prompt states every attribute; the first ``hits[j]`` are read right."""
    hit = np.zeros((n, len(attrs)))
    for j, h in enumerate(hits):
        hit[:h, j] = 1
    return t2i_fidelity.Fidelity(list(attrs), hit, np.ones((n, len(attrs))), list(attrs))


def iv(value: float, lo: float, hi: float, n: int = 100) -> dict:
    return Interval(value, lo, hi, n, 1000).as_dict()


def saved_set(model_hits: int, prior_hits: int, attrs=("background",), majority_hits: int = 20) -> dict:
    refs = {"ceiling": fidelity([95] * len(attrs), attrs=attrs),
            "prior": fidelity([prior_hits] * len(attrs), attrs=attrs),
            "mean_image": fidelity([10] * len(attrs), attrs=attrs),
            "majority": fidelity([majority_hits] * len(attrs), attrs=attrs)}
    return {"n_prompts": 100, "seed": 0, **t2i_fidelity.fidelity_record(fidelity([model_hits] * len(attrs), attrs=attrs), refs),
            "frechet": {"model": iv(30, 25, 35), "real_floor": iv(5, 4, 6), "mean_image": iv(80, 70, 90), "n": 100,
                        "resolution": 32, "features": frechet.FEATURES}}


def save_row(nb: str, sets: dict, **extra) -> None:
    results.save("cpu", t2i_tables.row_key(nb), {
        "notebook": nb, "model": f"model {nb}", "profile": "cpu", "resolution": 32, "generated_px": 32,
        "cost": t2i.SamplingCost(2.0, 4, 4, 25, "cpu", 4.0).as_dict(), "sets": sets, "sampler": "DDIM 25", **extra})


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RUNS", tmp_path)
    return tmp_path


def test_tables_assemble_saved_rows(runs):
    save_row("07", {"heldout": saved_set(60, 25), "compositional": saved_set(40, 25)}, decoder=True)
    out = t2i_tables.tables("cpu")
    fid = results.load("cpu", "t2i_fidelity_table")["rows"]
    labels = [v + (" — strongest baseline" if k == "prior" else "") for k, v in t2i_tables.REFERENCE_ROWS.items()]
    assert [r["images"] for r in fid if r["prompts"] == "heldout"] == [*labels, "07 model 07"]
    assert fid[4]["fidelity % [95 % CI]"].startswith("60.0 [")
    assert fid[4]["− prior baseline (points)"].startswith("35.0")
    assert fid[4]["− strongest baseline (points)"].startswith("35.0")
    attrs = results.load("cpu", "t2i_attributes_heldout")["rows"]
    assert attrs[0]["attribute"] == "background"
    assert attrs[0]["07"].startswith("60.0") and attrs[0]["ceiling"].startswith("95.0")
    fd = results.load("cpu", "t2i_frechet_table")["rows"]
    assert [r["images"] for r in fd][:3] == ["real floor (a disjoint real set)", "mean training image", "07 model 07"]
    budget = out["t2i_budget"][0]
    assert budget["network passes / image"] == 50 and budget["heldout prompts"] == 100 and budget["decoder pass"]


def test_evaluate_scores_both_sets_against_the_references(trained, monkeypatch, tmp_path):
    """End to end on smoke prompts: the real renders as the 'generated' images score the ceiling."""
    model, _, _ = trained
    monkeypatch.setattr(model, "readable", list(model.names))   # whatever this tiny oracle's calibration said
    monkeypatch.setattr(results, "RUNS", tmp_path)
    monkeypatch.setattr(t2i, "run_dir", lambda profile, nb: tmp_path / profile / nb)
    sets = {"heldout": t2i_prompts.heldout_prompts("smoke", n=12), "compositional": t2i_prompts.compositional_prompts("smoke", n=12)}
    samples = {k: p.real_images(RES) for k, p in sets.items()}
    row = t2i.evaluate("smoke", "06", "real renders", model, samples, sets, None)
    for name, s in row["sets"].items():
        f = s["fidelity"]
        assert f["model"]["macro"]["value"] == pytest.approx(f["ceiling"]["macro"]["value"]), name
        assert s["frechet"]["model"]["value"] == pytest.approx(0.0, abs=1e-6)
        assert s["frechet"]["real_floor"]["value"] > 0 and s["frechet"]["n"] == 12
    assert results.load("smoke", "t2i_eval_06")["sets"].keys() == {"heldout", "compositional"}


def verdict(profile: str, section: str) -> str:
    return next(r["verdict"] for r in claims.check(profile) if r["§"] == section)


def test_claim_2_4_tests_intervals_and_needs_a_readable_attribute(runs):
    assert verdict("cpu", "2.4") == claims.NOT_RUN
    save_row("07", {"heldout": saved_set(60, 25)})
    assert verdict("cpu", "2.4").startswith(claims.HOLDS)
    save_row("07", {"heldout": saved_set(30, 25)})                    # overlapping intervals
    assert verdict("cpu", "2.4").startswith(claims.FAILS)
    none = saved_set(60, 25)
    none.update(attributes=[])
    none["fidelity"]["model"]["macro"] = None
    save_row("07", {"heldout": none})
    assert verdict("cpu", "2.4").startswith(claims.NOT_TESTABLE)


def test_majority_row_shows_the_modal_value_of_the_set():
    """Always the modal value scores max p; a random other scene scores the collision rate Σp² below it."""
    stated = [{"background": "beach"}] * 7 + [{"background": "park", "count": 2}] * 3
    oracle_like = types.SimpleNamespace(names=["background", "count"], readable=["background", "count"])
    f = t2i_fidelity.majority_fidelity(oracle_like, stated, min_stated=1)
    assert f.per_attribute == {"background": 0.7, "count": 1.0} and f.macro_attributes == ["background", "count"]
    assert 0.7 ** 2 + 0.3 ** 2 < f.per_attribute["background"]           # the prior baseline's expectation


def test_an_attribute_the_real_renders_do_not_show_better_than_a_constant_is_not_readable_on_the_set():
    attrs = ("background", "count")
    refs = {"ceiling": fidelity([90, 60], attrs=attrs), "prior": fidelity([30, 50], attrs=attrs),
            "mean_image": fidelity([10, 40], attrs=attrs), "majority": fidelity([20, 70], attrs=attrs)}
    assert t2i_fidelity.readable_on_set(refs) == ["background"]
    assert t2i_fidelity.strongest(refs) == "majority"                     # 45 % macro over both attributes
    rec = t2i_fidelity.fidelity_record(fidelity([50, 65], attrs=attrs), refs)
    assert rec["attributes"] == ["background"] and rec["not_readable_on_set"] == ["count"]
    assert rec["strongest_baseline"] == "prior"                            # over background only: 30 > 20 > 10
    assert rec["model_minus_strongest"]["value"] == pytest.approx(0.2)


def test_claim_2_4_is_judged_against_the_strongest_baseline(runs):
    save_row("07", {"heldout": saved_set(60, 25, majority_hits=58)})       # beats the prior, not the majority
    v = verdict("cpu", "2.4")
    assert not v.startswith(claims.HOLDS)
    ours = next(r["ours"] for r in claims.check("cpu") if r["§"] == "2.4")
    assert "strongest baseline, majority value" in ours


def seeds_rec(macros: dict[int, tuple[float, float, float]], baseline=(0.28, 0.24, 0.32), n: int = 100) -> dict:
    seeds = {str(s): {"macro": iv(*m, n=n), "model_minus_strongest": None, "margin": m[1] - baseline[2]}
             for s, m in macros.items()}
    values = [m[0] for m in macros.values()]
    return {"set": "heldout", "n_prompts": n, "seeds": seeds, "strongest_baseline": "prior",
            "baseline": iv(*baseline, n=n), "attributes": ["background"], "spread": max(values) - min(values),
            "mean": sum(values) / len(values), "min": min(values), "max": max(values)}


def test_claim_2_4_is_judged_on_every_training_seed_and_states_their_spread(runs):
    save_row("07", {"heldout": saved_set(60, 25)})                     # the 200-prompt row holds on its own
    row = lambda: next(r for r in claims.check("cpu") if r["§"] == "2.4")   # noqa: E731
    assert row()["verdict"].startswith(claims.HOLDS) and row()["seed spread"] == "one training seed (not measured)"
    results.save("cpu", "07_seeds", seeds_rec({0: (0.40, 0.35, 0.45), 1: (0.38, 0.33, 0.43), 2: (0.42, 0.37, 0.47)}))
    r = row()
    assert r["verdict"] == "holds on world8k" and r["seed spread"].startswith("4.0 points over 3 seeds")
    assert "3 training seeds on the first 100 held-out prompts: seed 0 40 [35, 45] %" in r["ours"]
    results.save("cpu", "07_seeds", seeds_rec({0: (0.40, 0.35, 0.45), 1: (0.30, 0.25, 0.35), 2: (0.42, 0.37, 0.47)}))
    assert row()["verdict"] == "not decided: training seeds disagree (2 of 3 pass)"     # seed 1 inside the baseline's
    results.save("cpu", "07_seeds", seeds_rec({0: (0.30, 0.25, 0.35), 1: (0.29, 0.24, 0.34), 2: (0.31, 0.26, 0.36)}))
    assert row()["verdict"] == "does not hold on world8k"
    assert next(r for r in claims.check("cpu") if r["§"] == "2.3")["seed spread"] == "one training seed (not measured)"


def test_seed_record_scores_every_seed_against_the_strongest_baseline(trained, monkeypatch):
    """Seed 'a' draws the real renders (the ceiling), seed 'b' flat mean-colour images: a beats the strongest
    baseline, b does not, and the spread is the gap between their macro fidelities."""
    model, _, _ = trained
    monkeypatch.setattr(model, "readable", list(model.names))
    prompts = t2i_prompts.heldout_prompts("smoke", n=16)
    real = prompts.real_images(RES)
    flat = real.float().mean((2, 3), keepdim=True).expand_as(real).round().to(torch.uint8)
    rec = t2i_seeds.seed_record("smoke", model, prompts, {0: real, 1: flat})
    refs = t2i_fidelity.references("smoke", model, prompts)
    assert rec["seeds"]["0"]["macro"]["value"] == pytest.approx(refs["ceiling"].macro)
    assert rec["strongest_baseline"] in t2i_fidelity.BASELINES and rec["n_prompts"] == 16
    assert rec["seeds"]["0"]["margin"] > 0 >= rec["seeds"]["1"]["margin"]
    assert rec["spread"] == pytest.approx(rec["seeds"]["0"]["macro"]["value"] - rec["seeds"]["1"]["macro"]["value"])
    rows = t2i_seeds.seed_table(rec)
    assert [r["beats the baseline"] for r in rows] == ["yes", "no", ""] and rows[-1]["training seed"].startswith("strongest")
    with pytest.raises(ValueError, match="at least 2 training seeds"):
        t2i_seeds.seed_record("smoke", model, prompts, {0: real})
    with pytest.raises(ValueError, match="seed 1: 3 images for 16 prompts"):
        t2i_seeds.seed_record("smoke", model, prompts, {0: real, 1: real[:3]})


def test_claim_2_3_binomial_test_with_a_readability_precondition(runs):
    cw = {"clothing_colour": 0.27, "chance": 0.125, "p_value": 5e-6, "n": 128, "samples_per_colour": 16,
          "readable": True, "interval": iv(0.27, 0.2, 0.35, 128)}
    results.save("cpu", "06_colour_words", cw)
    assert verdict("cpu", "2.3").startswith(claims.HOLDS)
    results.save("cpu", "06_colour_words", {**cw, "clothing_colour": 0.14, "p_value": 0.3})
    assert verdict("cpu", "2.3").startswith(claims.FAILS)
    results.save("cpu", "06_colour_words", {**cw, "readable": False})
    assert verdict("cpu", "2.3").startswith(claims.NOT_TESTABLE)


def test_claim_2_2_judges_the_size_of_the_speed_up(runs):
    rows = [{"notebook": nb, "steps": st, "guidance": 4.0, "network_evals": 2 * st} for nb, st in
            (("06", 20), ("07", 25), ("09", 4))]
    sp = {"rows": rows, "batch_size": 8, "device": "cpu", "diffusion_steps_override": None}
    results.save("cpu", "09_speed", {**sp, "ratio_vs_06": 3.0, "ratio_vs_07": 2.5})
    assert verdict("cpu", "2.2").startswith(claims.HOLDS)
    results.save("cpu", "09_speed", {**sp, "ratio_vs_06": 22.5, "ratio_vs_07": 14.9})   # direction, not size
    assert verdict("cpu", "2.2") == "faster than claimed (22×, 15×, outside 1.8×–7.2×) on world8k"
    results.save("cpu", "09_speed", {**sp, "ratio_vs_06": 1.2, "ratio_vs_07": 1.1})
    assert verdict("cpu", "2.2").startswith("slower than claimed (1×, 1×,")
    results.save("cpu", "09_speed", {**sp, "ratio_vs_06": 3.0, "ratio_vs_07": 14.9})   # one inside, one not
    assert verdict("cpu", "2.2").startswith(claims.FAILS)
    results.save("cpu", "09_speed", {**sp, "ratio_vs_06": 3.0, "diffusion_steps_override": 2})
    assert verdict("cpu", "2.2").startswith(claims.NOT_TESTABLE)


def test_claim_2_1_needs_a_calibrated_classifier_and_a_clear_rise(runs):
    def ev(change_lo: float, calibrated: bool = True) -> dict:
        row = lambda share: {"photo_share": iv(share, share - 0.05, share + 0.05), "fidelity": iv(0.5, 0.45, 0.55),  # noqa: E731
                             "frechet": iv(30, 25, 35), "style": "generated"}
        return {"classifier": {"calibrated": calibrated, "failures": [] if calibrated else ["real cartoons, VAE round "
                               "trip: read as cartoon in 40 % < 90 %"], "accuracy": 0.99},
                "rows": {"base (cartoon prior)": row(0.3), "LoRA weight 1": row(0.9)}, "base": "base (cartoon prior)",
                "lora": "LoRA weight 1", "photo_share_change": iv(0.6, change_lo, 0.7),
                "fidelity_change": iv(0, -0.05, 0.05)}
    assert verdict("cpu", "2.1") == claims.NOT_RUN
    results.save("cpu", "08_eval", ev(0.5))
    assert verdict("cpu", "2.1").startswith(claims.HOLDS)
    results.save("cpu", "08_eval", ev(0.05))
    assert verdict("cpu", "2.1").startswith(claims.FAILS)
    results.save("cpu", "08_eval", ev(0.5, calibrated=False))
    assert verdict("cpu", "2.1").startswith(claims.NOT_TESTABLE) and "VAE round trip" in verdict("cpu", "2.1")


def test_loosened_thresholds_are_recorded():
    changed = {c["claim"] for c in claims.THRESHOLD_CHANGES}
    assert {"2.3", "2.4 (07 first stage)"} <= changed
    assert all(c["old"] and c["new"] and c["why"] for c in claims.THRESHOLD_CHANGES)


class Fake(types.SimpleNamespace):
    def __len__(self):
        return len(self.stated)


def test_round_trip_through_an_autoencoder_is_scored_like_the_real_renders(trained, monkeypatch):
    """An identity autoencoder keeps every attribute; one that returns the mean colour loses them."""
    model, xv, av = trained
    stated = [{"background": a["background"], "category": a["category"]} for a in av]
    prior = t2i_fidelity.prompt_fidelity(model, xv[torch.roll(torch.arange(len(xv)), 1)], stated)
    monkeypatch.setattr(t2i_fidelity, "references", lambda profile, m, p: {"prior": prior})
    prompts = Fake(real_images=lambda r: xv, stated=stated)
    same = t2i_fidelity.roundtrip_rows("smoke", model, prompts, lambda x: x, RES)
    assert all(r["real render"] == r["round trip"] for r in same)
    assert [r["attribute"] for r in same][-1] == "macro" and same[-1]["prompts stating it"] == len(xv)
    flat = lambda x: x.float().mean((2, 3), keepdim=True).expand_as(x).round().to(torch.uint8)  # noqa: E731
    lost = t2i_fidelity.roundtrip_rows("smoke", model, prompts, flat, RES)
    value = lambda s: float(s.split(" [")[0])  # noqa: E731
    assert value(lost[-1]["round trip"]) < value(lost[-1]["real render"]) - 20
# ----------------------------------------------------------------------------- the generators side by side


def test_heldout_samples_round_trip_and_the_generators_figure_marks_the_missing(monkeypatch, tmp_path):
    """Fake uint8 samples of two generators (06 at 16 px, 08 at 32 px) on the first smoke held-out
    prompts: the saved file round-trips, and the figure has the real column, both generators and an
    empty 'not run' column for each of 07 and 09; a generator saved for other prompts is marked so."""
    monkeypatch.setattr(t2i, "run_dir", lambda profile, nb: tmp_path / profile / nb)
    prompts = t2i_prompts.heldout_prompts("smoke", n=10)
    g = torch.Generator().manual_seed(0)
    fake = {"06": torch.randint(0, 256, (10, 3, 16, 16), dtype=torch.uint8, generator=g),
            "08": torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8, generator=g)}
    for nb, x in fake.items():
        path = t2i.save_heldout_samples("smoke", nb, f"model {nb}", x, prompts)
        assert path == tmp_path / "smoke" / nb / t2i.SAMPLES_FILE and not list(path.parent.glob(".*"))
    back = t2i.load_heldout_samples("smoke", "08")
    assert torch.equal(back["images"], fake["08"][:t2i.N_SHOWN]) and back["images"].dtype == torch.uint8
    assert back["captions"] == prompts.captions[:t2i.N_SHOWN] and back["model"] == "model 08"
    assert torch.equal(back["real"], prompts.subset(t2i.N_SHOWN).real_images(32))
    assert t2i.load_heldout_samples("smoke", "07") is None

    fig = t2i.generators_figure("smoke")
    headers = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert [h.replace("\n", " ") for h in headers] == ["real render", *t2i.GENERATORS.values()]
    marks = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert marks == ["not run"] * (2 * t2i.N_SHOWN)                   # 07 and 09, every row
    assert len(fig.axes) == 5 * t2i.N_SHOWN
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()] == [
        images.wrap_title(c, 28) for c in prompts.captions[:t2i.N_SHOWN]]
    fig.savefig(tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 0

    other = prompts.subset(10)
    other.captions = list(reversed(other.captions))
    t2i.save_heldout_samples("smoke", "09", "model 09", fake["06"], other)
    fig = t2i.generators_figure("smoke")
    assert [t.get_text() for ax in fig.axes for t in ax.texts] == ["not run"] * t2i.N_SHOWN + ["other prompts"] * t2i.N_SHOWN


def test_image_grid_titles_are_wrapped_and_never_overlap():
    """16 images with 40–90-character captions, 8 per row (06's held-out grid): every title is cut to
    three lines and no two titles' boxes intersect once drawn; labelled rows name generated and real."""
    x = torch.zeros(16, 3, 32, 32, dtype=torch.uint8)
    caps = [("a black-haired person in a green shirt is running by a frisbee near a girl dressed in pink")[:40 + 3 * i]
            for i in range(16)]
    for fig in (images.image_grid(x, caps, ncol=8),
                images.labelled_rows_grid({"generated": x, "real": x}, caps, ncol=8)):
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        boxes = [ax.title.get_window_extent(r) for ax in fig.axes if ax.get_title()]
        assert len(boxes) == 16 and all(ax.get_title().count("\n") <= 2 for ax in fig.axes)
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
        # and no title runs into the image above it
        for ax in fig.axes:
            if ax.get_title():
                assert not any(ax.title.get_window_extent(r).overlaps(o.get_window_extent(r))
                               for o in fig.axes if o is not ax)
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()] == ["generated", "real"] * 2
