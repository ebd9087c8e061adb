"""The shared training loop: resume is bit-identical, checkpoints are keyed and hold only trainable state."""
import json

import pytest
import torch
from torch import nn

from mmlib import ckpt, train


class Tiny(nn.Module):
    def __init__(self, seed):
        super().__init__()
        torch.manual_seed(0)  # the frozen part stands for pretrained weights: the same in every process
        self.frozen = nn.Linear(4, 8).requires_grad_(False)
        torch.manual_seed(seed)
        self.head = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.2), nn.GELU(), nn.Linear(16, 3))

    def forward(self, x):
        return self.head(self.frozen(x))


def loss_fn(model, batch):
    loss = nn.functional.cross_entropy(model(batch["x"]), batch["y"])
    return loss, {"noise": torch.randn(()).item()}  # consumes the global RNG like diffusion does


def make(seed=0):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=g)
    data = {"x": x, "y": (x @ torch.randn(4, 3, generator=g)).argmax(1)}  # learnable labels
    return Tiny(seed), data


CFG = train.TrainConfig(steps=12, batch_size=8, lr=1e-2, warmup=2, ckpt_every=5, ema=0.9,
                        log_every=1)


@pytest.mark.bf16
def test_resume_equals_uninterrupted(tmp_path):
    model_a, data = make()
    ra = train.fit(model_a, loss_fn, data, CFG, tmp_path / "a", key={"m": 1}, progress=False)

    model_b, _ = make()
    rb1 = train.fit(model_b, loss_fn, data, CFG, tmp_path / "b", key={"m": 1}, stop_after=7, progress=False)
    assert rb1.steps == 7
    model_c, _ = make(seed=123)  # a fresh process: other init, other RNG; all must come from the checkpoint
    torch.manual_seed(999)
    rb2 = train.fit(model_c, loss_fn, data, CFG, tmp_path / "b", key={"m": 1}, progress=False)
    assert rb2.resumed_from == 7 and rb2.steps == 12
    for (n, p), q in zip(model_a.named_parameters(), model_c.parameters()):
        assert torch.equal(p, q), n
    assert ra.history == rb2.history
    assert rb2.train_seconds > rb1.train_seconds > 0        # both calls' training time, summed
    for k in ra.ema:
        assert torch.equal(ra.ema[k], rb2.ema[k])


def test_finished_run_is_reloaded_not_retrained(tmp_path):
    model, data = make()
    first = train.fit(model, loss_fn, data, CFG, tmp_path, key={"m": 1}, progress=False)
    again, _ = make(seed=5)
    second = train.fit(again, loss_fn, data, CFG, tmp_path, key={"m": 1}, progress=False)
    assert second.cached and second.call_seconds == 0.0 and second.train_dir == first.train_dir
    assert second.train_seconds == first.train_seconds > 0   # the run's cost is remembered
    assert abs(first.train_seconds - first.call_seconds) < 0.5
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))


def test_other_config_never_reuses_a_checkpoint(tmp_path):
    model, data = make()
    a = train.fit(model, loss_fn, data, CFG, tmp_path, key={"m": 1}, progress=False)
    b = train.fit(make()[0], loss_fn, data, CFG, tmp_path, key={"m": 2}, progress=False)
    assert a.train_dir != b.train_dir and b.resumed_from is None
    assert json.loads((b.train_dir / "config.json").read_text())["model"] == {"m": 2}


def test_checkpoint_holds_only_trainable_state_and_loads_weights_only(tmp_path):
    model, data = make()
    r = train.fit(model, loss_fn, data, CFG, tmp_path, key={"m": 1}, progress=False)
    last = ckpt.checkpoints(r.train_dir)
    assert len(last) <= CFG.keep
    state = torch.load(last[-1], weights_only=True)  # no pickled code
    assert set(state["weights"]) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(k.startswith("frozen") for k in state["weights"])
    assert state["step"] == CFG.steps


@pytest.mark.bf16
def test_training_lowers_the_loss(tmp_path):
    model, data = make()
    cfg = train.TrainConfig(steps=150, batch_size=16, lr=3e-2, log_every=1)
    r = train.fit(model, loss_fn, data, cfg, tmp_path, key={}, progress=False)
    first = sum(h["loss"] for h in r.history[:10]) / 10
    last = sum(h["loss"] for h in r.history[-10:]) / 10
    assert last < 0.7 * first


def test_safetensors_export_refuses_other_config(tmp_path):
    path = ckpt.save_weights(tmp_path / "w.safetensors", {"a": torch.ones(2)}, config={"d": 4})
    assert torch.equal(ckpt.load_weights(path, expect_config={"d": 4})["a"], torch.ones(2))
    with pytest.raises(ValueError, match="another config"):
        ckpt.load_weights(path, expect_config={"d": 8})


def test_batches_are_a_function_of_step():
    a = train.batch_indices(50, 8, 13, seed=3)
    assert torch.equal(a, train.batch_indices(50, 8, 13, seed=3))
    epoch = torch.cat([train.batch_indices(50, 8, s, seed=3) for s in range(6)])
    assert len(set(epoch.tolist())) == 48  # one epoch visits distinct images
