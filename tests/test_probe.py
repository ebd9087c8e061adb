"""Encoder probes on world8k attributes: the logistic regression, the probe on separable features,
the zero-shot chooser and the table."""
import numpy as np
import pytest
import torch

from mmlib.captioning import probe
from mmlib.data import world


def scenes(n, seed=0):
    rng = np.random.default_rng(seed)
    return [world.scene_attributes(world.sample_scene(rng)) for _ in range(n)]


def one_hot_features(attrs, names, noise=0.0, seed=0):
    """Features that hold the listed attributes linearly (one-hot blocks), plus noise."""
    g = torch.Generator().manual_seed(seed)
    blocks = []
    for name in names:
        vals = world.ATTRIBUTES[name]
        x = torch.zeros(len(attrs), len(vals))
        for i, a in enumerate(attrs):
            if name in a:
                x[i, vals.index(a[name])] = 1
        blocks.append(x)
    x = torch.cat(blocks, 1)
    return x + noise * torch.randn(x.shape, generator=g)


def test_logistic_regression_separates_separable_classes():
    x = torch.tensor([[0.0, 1], [0, 2], [3, 0], [4, 0], [2, 2.5]])
    y = torch.tensor([0, 0, 1, 1, 0])
    W, b = probe.fit_logistic(x, y, 2, l2=1e-4)
    assert ((x @ W + b).argmax(1) == y).all()


def test_probe_reads_what_the_features_hold_and_only_that():
    tr, va = scenes(600), scenes(300, seed=1)
    names = ["background", "count", "dog_colour"]
    out = probe.linear_probe(one_hot_features(tr, names, 0.05), tr, one_hot_features(va, names, 0.05, 1), va)
    for name in names:
        assert out[name]["accuracy"] > 0.97, name
    # nothing about clothing colour is in the features: the probe cannot beat chance by much
    assert out["clothing_colour"]["accuracy"] < 0.35
    assert out["background"]["prior"] == pytest.approx(max(
        sum(a["background"] == v for a in va) for v in world.BACKGROUNDS) / len(va), abs=0.02)
    rows = probe.probe_table({"a": out, "b": out})
    assert rows[-1]["attribute"] == "macro average"
    assert rows[-1]["a probe"] == pytest.approx(probe.macro(out))


def test_zero_shot_picks_the_caption_of_the_true_value():
    attrs = scenes(40, seed=3)
    # a "text encoder" that embeds the background word of a caption, an image embedding of its true background
    def embed_text(caps):
        out = torch.zeros(len(caps), len(world.BACKGROUNDS))
        for i, c in enumerate(caps):
            from mmlib.eval import scene_facts
            out[i, world.BACKGROUNDS.index(scene_facts.parse(c)["background"])] = 1
        return out
    img = torch.stack([torch.eye(len(world.BACKGROUNDS))[world.BACKGROUNDS.index(a["background"])] for a in attrs])
    out = probe.zero_shot(img, attrs, embed_text)
    assert out["background"]["accuracy"] == 1.0
    assert out["background"]["chance"] == pytest.approx(1 / len(world.BACKGROUNDS))
    assert out["count"]["accuracy"] < 1.0            # the stand-in text encoder ignores the count
