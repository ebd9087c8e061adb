"""The captioning verdicts (C1–C3) on synthetic saved results: holds, does not hold, not separable,
not testable (with the failed precondition named) and not run."""
import pytest

from mmlib import claims, results


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
    from mmlib.eval.bootstrap import Interval
    a, b = Interval(5, 4, 6, 10, 10), Interval(3, 2, 3.9, 10, 10)
    assert claims.beats(a, b) is True and claims.beats(b, a) is False
    assert isinstance(claims.beats(a, Interval(4, 3, 4.1, 10, 10)), claims.NotSeparable)
