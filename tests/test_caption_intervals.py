"""Bootstrap intervals of the caption metrics: BLEU from per-image sums equals nltk's corpus BLEU,
the interval brackets the value, and the like-for-like comparison with the human ceiling."""
from __future__ import annotations

import numpy as np
import pytest

from mmlib.eval import bootstrap
from mmlib.eval import captions as cm
from test_caption_metrics import seed_data  # noqa: F401  (the study's row-4 captions on real Flickr8k val)


def test_bleu_from_summed_stats_is_nltk_corpus_bleu(seed_data):  # noqa: F811
    raw, hyps, _ = seed_data
    hyps = dict(list(hyps.items())[::4])
    stats = cm.seed_bleu_stats(hyps, raw)
    expected = cm.seed_scores_from_refs(hyps, raw)["BLEU-4"]
    assert cm.bleu_from_stats(stats.sum(0)) == pytest.approx(expected, abs=1e-9)
    assert cm.bleu_from_stats(stats.sum(0), cm.SEED_WEIGHTS[0]) == pytest.approx(
        cm.seed_scores_from_refs(hyps, raw)["BLEU-1"], abs=1e-9)


def test_bleu_stats_smoothing_and_empty_hypotheses():
    refs = {"a": ["a dog runs on the grass ."], "b": ["a man sits on a bench ."]}
    for hyps in ({"a": "a dog runs", "b": "the cat"}, {"a": "", "b": "zzz"}, {"a": "a dog runs on the grass .", "b": ""}):
        stats = cm.seed_bleu_stats(hyps, refs)
        assert cm.bleu_from_stats(stats.sum(0)) == pytest.approx(cm.seed_scores_from_refs(hyps, refs)["BLEU-4"], abs=1e-9)


def test_intervals_bracket_the_value_and_pair_rows(seed_data):  # noqa: F811
    raw, hyps, val = seed_data
    hyps = dict(list(hyps.items())[:300])
    iv = cm.intervals(hyps, raw, val, n_boot=200)
    for name, i in iv.items():
        assert i.lo < i.value < i.hi, name
        assert i.n == 300 and i.n_boot == 200
    assert iv["seed BLEU-4"].value == pytest.approx(cm.seed_scores_from_refs(hyps, raw)["BLEU-4"], abs=1e-9)
    assert iv["CIDEr-D"].value == pytest.approx(cm.standard_scores(hyps, {k: val[k] for k in hyps})["CIDEr-D"], abs=1e-6)
    again = cm.intervals(hyps, raw, val, n_boot=200)
    assert again == iv                                             # same seed, same resamples


def test_mean_interval_covers_a_known_mean():
    rng = np.random.default_rng(1)
    iv = bootstrap.mean_interval(np.full(50, 2.0))
    assert iv.value == iv.lo == iv.hi == 2.0
    x = rng.normal(3.0, 1.0, 2000)
    iv = bootstrap.mean_interval(x)
    assert iv.lo < x.mean() < iv.hi and 0.06 < iv.hi - iv.lo < 0.12   # ≈ 2 × 1.96 / √2000 = 0.088


def test_matched_human_comparison_uses_the_same_four_references():
    refs = {"a": ["w x y z .", "a b c d .", "a b c d .", "a b c d .", "a b c d ."],
            "b": ["p q r s .", "e f g h .", "e f g h .", "e f g h .", "e f g h ."]}
    hyps = {"a": "a b c d .", "b": "e f g h ."}
    m = cm.matched_to_human(hyps, refs, refs)
    assert m["seed BLEU-4"] == pytest.approx(100.0)               # always matched by one of the four left
    ceiling = cm.human_ceiling(refs, mode="seed")["BLEU-4"]
    assert ceiling < 100.0
