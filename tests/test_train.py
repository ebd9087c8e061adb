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


# ----------------------------------------------------------------------------- early stopping
def wrong_labels_val(data):
    """A validation loss that rises as the model learns: the training inputs with every label moved by one."""
    x, y = data["x"][:32], (data["y"][:32] + 1) % 3

    def val_loss(model):
        assert not model.training and not torch.is_grad_enabled()
        return nn.functional.cross_entropy(model(x), y).item()
    return val_loss


ES = train.TrainConfig(steps=60, batch_size=8, lr=1e-2, warmup=0, eval_every=4, patience=2, log_every=1)


def test_patience_state_counts_evaluations_since_the_best():
    curve = [{"step": s, "val_loss": v} for s, v in ((4, 3.0), (8, 2.0), (12, 2.5), (16, 2.1))]
    assert train.patience_state(curve) == (8, 2)
    assert train.patience_state(curve[:2], min_delta=1.5) == (4, 1)   # 2.0 is not 1.5 below 3.0
    assert train.patience_state([]) == (None, 0)


def test_early_stopping_ends_after_patience_and_returns_the_best_weights(tmp_path):
    model, data = make()
    val = wrong_labels_val(data)
    r = train.fit(model, loss_fn, data, ES, tmp_path, key={"m": 1}, progress=False, val_loss=val)
    losses = [v["val_loss"] for v in r.val_history]
    best = min(range(len(losses)), key=losses.__getitem__)
    assert r.stopped_early and r.steps < ES.steps
    assert r.best_step == r.val_history[best]["step"] and r.steps == r.best_step + ES.patience * ES.eval_every
    model.eval()
    bf16 = train.resolve_precision(ES.mixed_precision) == "bf16"
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):   # as fit measured it
        assert val(model) == losses[best]                           # the model holds the best weights
    again, _ = make(seed=3)
    r2 = train.fit(again, loss_fn, data, ES, tmp_path, key={"m": 1}, progress=False, val_loss=val)
    assert r2.cached and r2.steps == r.steps and r2.val_history == r.val_history   # reloaded, not continued
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), again.parameters()))


def test_early_stopping_resume_equals_uninterrupted(tmp_path):
    model_a, data = make()
    val = wrong_labels_val(data)
    ra = train.fit(model_a, loss_fn, data, ES, tmp_path / "a", key={"m": 1}, progress=False, val_loss=val)
    model_b, _ = make()
    first = train.fit(model_b, loss_fn, data, ES, tmp_path / "b", key={"m": 1}, progress=False, val_loss=val,
                      stop_after=5)
    assert first.steps == 5 and not first.stopped_early
    model_c, _ = make(seed=7)
    rb = train.fit(model_c, loss_fn, data, ES, tmp_path / "b", key={"m": 1}, progress=False, val_loss=val)
    assert rb.resumed_from == 5 and rb.steps == ra.steps and rb.val_history == ra.val_history
    assert rb.best_step == ra.best_step and rb.stopped_early
    assert all(torch.equal(p, q) for p, q in zip(model_a.parameters(), model_c.parameters()))


def test_without_patience_the_run_goes_to_its_last_step(tmp_path):
    model, data = make()
    cfg = train.TrainConfig(**{**ES.__dict__, "steps": 12, "patience": 0})
    r = train.fit(model, loss_fn, data, cfg, tmp_path, key={"m": 1}, progress=False, val_loss=wrong_labels_val(data))
    assert r.steps == 12 and not r.stopped_early and [v["step"] for v in r.val_history] == [4, 8, 12]
