"""The captioning figures name what they show: labelled axes, a colour bar on the attention maps,
rows named as in the tables ("row 4"), not "ours"."""
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import torch

from mmlib.captioning.qformer import stage1 as qf
from mmlib.captioning import xattn_experiment as ex

matplotlib.use("Agg")


def fake_images(folder, names, size):
    return torch.zeros(len(names), 3, size, size, dtype=torch.uint8)


def test_loss_panels_have_both_axis_labels():
    hist = [{"step": s, "itc": 1.0, "itm": 0.64, "itg": 2.0} for s in (10, 20)]
    fig = qf.loss_figure(hist)
    assert all(ax.get_xlabel() and ax.get_ylabel().startswith("loss (nats") for ax in fig.axes)


def test_attention_maps_share_one_colour_bar(monkeypatch):
    monkeypatch.setattr(ex.data, "images", fake_images)
    monkeypatch.setattr(ex.decoding, "generate", lambda model, mem, mode, max_len: [[5, 6]])
    maps = torch.softmax(torch.randn(1, 3, 17), -1)                     # CLS + a 4×4 grid, 3 steps
    model = SimpleNamespace(cfg=SimpleNamespace(block_size=8), bos_id=1,
                            cross_attention_maps=lambda mem, toks: maps)
    split = SimpleNamespace(val=[("x.jpg", [])], folder=Path("."))
    fig = ex.attention_figure(model, SimpleNamespace(itos={5: "a", 6: "dog"}), split, torch.zeros(1, 17, 4),
                              size=32, skip_tokens=1)
    bars = [ax for ax in fig.axes if ax.get_ylabel().startswith("attention weight")]
    assert len(bars) == 1
    assert bars[0].get_ylim()[1] == float(maps[0, :, 1:].max())        # absolute weights, one scale


def test_example_captions_are_labelled_by_row(monkeypatch):
    monkeypatch.setattr(ex.data, "images", fake_images)
    split = SimpleNamespace(val=[("x.jpg", []), ("y.jpg", [])], folder=Path("."),
                            refs=lambda part: {"x.jpg": ["r1", "r2"], "y.jpg": ["r3", "r4"]})
    fig = ex.example_figure(split, {"x.jpg": "a dog", "y.jpg": "a man"}, {"row 3": {"x.jpg": "b", "y.jpg": "c"}},
                            n=2, size=32, label="row 4")
    titles = [ax.get_title(loc="left") for ax in fig.axes]
    assert titles[0].startswith("row 4: a dog\nrow 3: b") and not any("ours" in t for t in titles)
