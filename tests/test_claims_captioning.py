"""The captioning verdicts (C1–C3) on synthetic saved results: holds, does not hold, not separable,
not testable (with the failed precondition named) and not run."""
import json

import numpy as np
import pytest

from mmlib import claims, claims_captioning, results
from mmlib import data as mdata
from mmlib.captioning import row_scores
from mmlib import verdicts as verdicts_mod
from mmlib.eval.bootstrap import Interval


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RUNS", tmp_path)
    return tmp_path


def iv(value, half):
    return {"value": value, "lo": value - half, "hi": value + half, "n": 100, "n_boot": 1000}


def save_row(nb, bleu, f1, encoder="world8k CLIP (pretrained in 03)"):
    results.save("cpu", f"{nb}_truth", {"model": {"label": nb, "seed BLEU-4": iv(bleu, 1.0),
                                                  "facts": {"f1": iv(f1, 0.01)}, "encoder": encoder}})


def verdicts(section):
    return {r["§"]: r["verdict"] for r in claims.check("cpu") if r["§"].startswith(section)}


def test_clip_claim_holds_fails_or_is_not_separable(runs):
    results.save("cpu", "03_probe", {"clip_macro": 0.85, "cnn_macro": 0.78})
    save_row("02", 10.0, 0.50, encoder="efficientnet-lite0")
    save_row("03", 14.0, 0.49)          # BLEU: 13–15 above 9–11; F1: 0.48–0.50 overlaps 0.49–0.51
    v = verdicts("1.3.3 (2)")
    assert v["1.3.3 (2) [BLEU]"] == "holds on world8k"
    assert v["1.3.3 (2) [F1]"] == claims.NOT_SEPARABLE
    save_row("03", 7.0, 0.40)
    v = verdicts("1.3.3 (2)")
    assert v["1.3.3 (2) [BLEU]"] == v["1.3.3 (2) [F1]"] == "does not hold on world8k"


def test_clip_claim_is_not_testable_when_the_clip_is_the_weaker_encoder(runs):
    results.save("cpu", "03_probe", {"clip_macro": 0.70, "cnn_macro": 0.78})
    save_row("02", 10.0, 0.50, encoder="efficientnet-lite0")
    save_row("03", 14.0, 0.60)
    v = verdicts("1.3.3 (2)")
    assert v["1.3.3 (2) [BLEU]"].startswith(claims.NOT_TESTABLE)
    assert "0.700 vs the CNN's 0.780" in v["1.3.3 (2) [BLEU]"]


def test_qformer_llm_claim_needs_every_row_and_a_pretrained_qformer(runs):
    for nb, b in (("02", 10.0), ("03", 11.0), ("04", 12.0)):
        save_row(nb, b, 0.5)
    assert verdicts("1.3.3 [")["1.3.3 [BLEU]"] == claims.NOT_RUN
    save_row("05", 20.0, 0.7)
    results.save("cpu", "05_training", {"stage1_init": "text_encoder"})
    assert verdicts("1.3.3 [")["1.3.3 [BLEU]"] == "holds on world8k"
    results.save("cpu", "05_training", {"stage1_init": "scratch"})
    v = verdicts("1.3.3 [")["1.3.3 [F1]"]
    assert v.startswith(claims.NOT_TESTABLE) and "init: scratch" in v


def test_qformer_claim_compares_rows_on_the_same_tokens(runs):
    save_row("03", 12.0, 0.5)
    save_row("04", 12.5, 0.5)
    assert verdicts("1.3.3 (1)")["1.3.3 (1) [BLEU]"] == claims.NOT_SEPARABLE
    save_row("04", 12.5, 0.5, encoder="efficientnet-lite0")
    assert verdicts("1.3.3 (1)")["1.3.3 (1) [BLEU]"].startswith(claims.NOT_TESTABLE)


def test_beats_is_a_non_overlap_test():
    a, b = Interval(5, 4, 6, 10, 10), Interval(3, 2, 3.9, 10, 10)
    assert claims.beats(a, b) is True and claims.beats(b, a) is False
    assert isinstance(claims.beats(a, Interval(4, 3, 4.1, 10, 10)), claims.NotSeparable)


# ---- paired differences, the convergence precondition, stage 1's ITM
def per_image_row(nb, bleu_stats, facts, encoder="world8k CLIP (pretrained in 03)", images=(3, "a", "c")):
    """A model row with per-image sums (what row_scores.score_row saves for paired tests); intervals wide."""
    results.save("cpu", f"{nb}_truth", {"model": {
        "label": nb, "seed BLEU-4": iv(20.0, 10.0), "facts": {"f1": iv(0.5, 0.3)}, "encoder": encoder,
        "per_image": {"images": list(images), "bleu": bleu_stats, "facts": facts}}})


def test_rows_on_the_same_images_are_compared_by_their_paired_difference():
    """Overlapping marginal intervals, but row 2 states one more true fact on every image: paired, it wins."""
    rng = np.random.default_rng(0)
    n = 200
    t = rng.integers(1, 6, n)
    worse = [[int(x), 2, 8] for x in t]
    better = [[int(x) + 1, 1, 8] for x in t]
    assert claims.beats(Interval(0.5, 0.2, 0.8, n, 1000), Interval(0.5, 0.2, 0.8, n, 1000)).__class__ is claims.NotSeparable
    a = {"per_image": {"images": [n], "facts": better, "bleu": None}}
    b = {"per_image": {"images": [n], "facts": worse, "bleu": None}}
    d = claims_captioning.paired_difference(a, b, "F1")
    assert d.lo > 0 and d.n == n
    assert claims_captioning.paired_difference(a, {"per_image": {"images": [n + 1], "facts": worse}}, "F1") is None
    assert claims_captioning.paired_difference(a, b, "BLEU") is None          # no BLEU sums saved


def test_paired_test_decides_the_claim_and_reports_each_pair(runs):
    results.save("cpu", "03_probe", {"clip_macro": 0.85, "cnn_macro": 0.78})
    n = 60
    facts = [[3, 1, 6]] * n
    bleu = [[5, 8, 8, 5, 4, 3, 3, 2, 6, 7]] * n
    per_image_row("02", bleu, facts, encoder="efficientnet-lite0", images=(n, "a", "z"))
    per_image_row("03", [[6, 9, 9, 6, 4, 3, 3, 2, 6, 7]] * n, [[4, 0, 6]] * n, images=(n, "a", "z"))
    rows = {r["§"]: r for r in claims.check("cpu") if r["§"].startswith("1.3.3 (2)")}
    assert rows["1.3.3 (2) [F1]"]["verdict"] == "holds on world8k"
    assert "paired differences: 2−1" in rows["1.3.3 (2) [F1]"]["ours"]
    assert rows["1.3.3 (2) [BLEU]"]["verdict"] == "holds on world8k"
    assert "rule" in rows["1.3.3 (2) [F1]"]["flags"]                 # its rule changed after a result was seen


def test_a_row_stopped_by_its_step_budget_makes_a_lost_comparison_not_testable(runs):
    for nb, b in (("02", 30.0), ("03", 31.0), ("04", 10.0)):
        save_row(nb, b, 0.5)
    save_row("05", 20.0, 0.7)
    falling = [{"step": 225, "val_loss": 2.35}, {"step": 250, "val_loss": 2.34}]
    results.save("cpu", "05_training", {"stage1_init": "text_encoder", "best_step": 250, "max_steps": 250,
                                        "stopped_early": False, "val_history": falling})
    row = next(r for r in claims.check("cpu") if r["§"] == "1.3.3 [BLEU]")
    assert row["verdict"].startswith(claims.NOT_TESTABLE)
    assert "row 4 stopped by the budget at step 250" in row["verdict"]
    assert "row 3: above" in row["ours"] and "row 1: not testable (budget)" in row["ours"]
    save_row("05", 40.0, 0.7)                                          # it wins anyway: the verdict stands
    assert verdicts("1.3.3 [")["1.3.3 [BLEU]"] == "holds on world8k"
    results.save("cpu", "05_training", {"stage1_init": "text_encoder", "best_step": 200, "max_steps": 250,
                                        "stopped_early": False, "val_history": falling})   # converged
    save_row("05", 20.0, 0.7)
    assert verdicts("1.3.3 [")["1.3.3 [BLEU]"] == "does not hold on world8k"


def test_stage1_itm_is_judged_against_the_entropy_of_its_labels(runs):
    assert claims_captioning.label_entropy() == pytest.approx(0.6365, abs=1e-4)    # H(1/3), 1 positive : 2 negatives
    results.save("cpu", "04_losses", {"last": {"itm": 0.6364}})
    results.save("cpu", "04_pretrained", {"last": {"itm": 0.30}})
    claims.save("cpu")
    itm = results.load("cpu", "stage1_itm")
    assert not itm["rows"]["04_losses"]["learned"] and itm["rows"]["04_pretrained"]["learned"]
    assert "0.636 nats vs 0.637 for the 1:2 label frequencies — ITM never learned" in itm["text"]


def test_a_margin_inside_the_stated_spread_needs_seeds(monkeypatch, runs):
    results.save("cpu", "03_probe", {"clip_macro": 0.85, "cnn_macro": 0.78})
    save_row("02", 10.0, 0.50, encoder="efficientnet-lite0")
    save_row("03", 12.5, 0.60)                                        # BLEU 11.5–13.5 vs 9–11: a 0.5-point margin
    monkeypatch.setitem(claims_captioning.SPREAD, "BLEU", (2.0, "seeds 0–2"))
    v = verdicts("1.3.3 (2)")["1.3.3 (2) [BLEU]"]
    assert v.startswith(verdicts_mod.NEEDS_SEEDS) and "holds by" in v and "seeds 0–2" in v


def test_model_rows_save_per_image_sums_that_pair_two_rows(tmp_path):
    """row_scores.per_image (what score_row saves for model rows) feeds the paired test, in split.val order."""
    scenes = [{"background": "park", "category": "person", "subject": "man", "count": 1, "clothing_colour": "red",
               "garment": "top", "hair_colour": "black", "action": "running", "ball": False, "object": "none",
               "second_subject": "none"},
              {"background": "beach", "category": "dog", "subject": "dog", "count": 1, "dog_colour": "brown",
               "action": "catching", "ball": True, "ball_colour": "red", "object": "none", "second_subject": "none"}]
    names = [f"w{i}.jpg" for i in range(40)]
    (tmp_path / "scenes.jsonl").write_text("".join(
        json.dumps({"image": n, "attributes": scenes[i % 2], "captions": []}) + "\n" for i, n in enumerate(names)))
    refs = {n: ["a man in a red shirt runs in the park ." if i % 2 == 0 else "a brown dog catches a red ball ."] * 5
            for i, n in enumerate(names)}
    split = mdata.Split(folder=tmp_path, train=[], val=[(n, refs[n]) for n in names], source="world8k")
    good = {n: refs[n][0] for n in names}
    bad = {n: "a dog runs on the grass ." for n in names}
    a = {"per_image": row_scores.per_image(dict(reversed(list(good.items()))), split, refs)}   # any dict order
    b = {"per_image": row_scores.per_image(bad, split, refs)}
    assert a["per_image"]["images"] == [40, "w0.jpg", "w39.jpg"] and len(a["per_image"]["facts"]) == 40
    for metric in ("BLEU", "F1"):
        d = claims_captioning.paired_difference(a, b, metric)
        assert d is not None and d.lo > 0, metric
