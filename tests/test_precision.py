"""The one precision setting (``MMLIB_PRECISION``): parsing, autocast, keys, and mixed dtypes."""
import json

import pytest
import torch
from torch import nn

from mmlib import device, results, runner, train
from mmlib.captioning import decoding, encoders
from mmlib.captioning.xattn import XAttnCaptioner, XAttnConfig

pytestmark = pytest.mark.bf16   # every test here is in the bf16 subset


@pytest.fixture
def precision(monkeypatch):
    """``precision("bf16")`` sets MMLIB_PRECISION for the rest of the test."""
    return lambda p: monkeypatch.setenv("MMLIB_PRECISION", p)


def test_setting_is_parsed_and_auto_follows_the_hardware(precision):
    precision("auto")
    assert device.precision() == ("bf16" if device.fast_bf16() else "fp32")
    precision("FP32")
    assert device.precision() == "fp32" and device.autocast_dtype() is None
    precision("bf16")
    assert device.precision() == "bf16" and device.autocast_dtype() == torch.bfloat16
    precision("fp16")
    with pytest.raises(ValueError, match="MMLIB_PRECISION='fp16'"):
        device.precision()


def test_autocast_follows_the_setting_and_can_open_an_fp32_region(precision):
    lin, x = nn.Linear(8, 8), torch.randn(2, 8)
    precision("bf16")
    with device.autocast("cpu"):
        assert lin(x).dtype == torch.bfloat16
        with device.autocast("cpu", enabled=False):
            assert lin(x).dtype == torch.float32
    precision("fp32")
    with device.autocast("cpu"):
        assert lin(x).dtype == torch.float32


def test_as_compute_brings_cached_half_tensors_to_fp32():
    h = torch.randn(2, 3).half()
    assert device.as_compute(h).dtype == torch.float32
    assert device.as_compute(h.bfloat16()).dtype == torch.float32
    ids = torch.arange(3)
    assert device.as_compute(ids) is ids          # integer ids keep their dtype
    # the failure the helper exists for: an fp16 cache concatenated under CPU bf16 autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(RuntimeError):
            torch.cat([h, torch.randn(2, 3)])
        assert torch.cat([device.as_compute(h), torch.randn(2, 3)]).dtype == torch.float32


def _fit(tmp_path, steps=3, restart=False, **kw):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
    data = {"x": torch.randn(64, 4), "y": torch.randn(64, 1)}
    cfg = train.TrainConfig(steps=steps, batch_size=8, lr=1e-2, log_every=1, **kw)

    def loss_fn(m, b):
        return nn.functional.mse_loss(m(b["x"]).float(), b["y"])
    return train.fit(model, loss_fn, data, cfg, tmp_path, key={"toy": 1}, progress=False, restart=restart)


def test_two_fits_with_different_precisions_in_one_process(tmp_path, precision):
    """accelerate keeps one process-wide state: a second Accelerator with another mixed precision used
    to raise 'AcceleratorState has already been initialized'. Both orders, several times."""
    seen = []
    for p in ("bf16", "fp32", "bf16", "fp32"):
        precision(p)
        r = _fit(tmp_path / p, steps=2)
        seen.append(r.mixed_precision)
        assert all(torch.isfinite(torch.tensor(h["loss"])) for h in r.history)
    assert seen == ["bf16", "no", "bf16", "no"]
    precision("auto")
    assert _fit(tmp_path / "fixed", steps=2, mixed_precision="no").mixed_precision == "no"


def test_a_checkpoint_is_never_reused_across_precisions(tmp_path, precision):
    precision("bf16")
    a = _fit(tmp_path)
    assert a.resumed_from is None and a.mixed_precision == "bf16"
    precision("fp32")
    b = _fit(tmp_path)
    assert b.resumed_from is None, "an fp32 run picked up the bf16 checkpoint"
    assert b.train_dir != a.train_dir and b.mixed_precision == "no"
    assert json.loads((b.train_dir / "config.json").read_text())["train"]["mixed_precision"] == "no"
    precision("bf16")
    again = _fit(tmp_path)
    assert again.cached and again.train_dir == a.train_dir


def test_fit_restart_trains_again(tmp_path):
    first = _fit(tmp_path)
    assert _fit(tmp_path).cached
    redo = _fit(tmp_path, restart=True)
    assert redo.resumed_from is None and redo.train_dir == first.train_dir
    assert [h["loss"] for h in redo.history] == [h["loss"] for h in first.history]


def test_forced_setting_overrides_a_fixed_config_mode(precision):
    precision("auto")
    assert train.resolve_precision("bf16") == "bf16" and train.resolve_precision("no") == "no"
    precision("fp32")
    assert train.resolve_precision("bf16") == "no"
    precision("bf16")
    assert train.resolve_precision("no") == "bf16"
    with pytest.raises(ValueError):
        train.resolve_precision("fp16")


class _Enc(nn.Module):
    def forward(self, x):                    # (B, 3, H, W) -> (B, 4, 3) tokens
        return x.flatten(2)[:, :, :4].transpose(1, 2)


def test_feature_cache_is_keyed_by_precision(tmp_path, precision):
    images = torch.randint(0, 255, (3, 3, 8, 8), dtype=torch.uint8)
    precision("fp32")
    _, s1 = encoders.cached_features(_Enc(), lambda: images, tmp_path, {"enc": "toy"})
    _, s2 = encoders.cached_features(_Enc(), lambda: images, tmp_path, {"enc": "toy"})
    precision("bf16")
    feats, s3 = encoders.cached_features(_Enc(), lambda: images, tmp_path, {"enc": "toy"})
    assert len(list(tmp_path.glob("features-*.safetensors"))) == 2
    assert s2 == 0.0 and feats.dtype == torch.float16


def test_decoding_logits_are_fp32_under_bf16(precision):
    precision("bf16")
    cfg = XAttnConfig(vocab_size=11, d_image=6, n_image_tokens=4, n_layer=1, n_head=2, n_embd=16, d_ff=32,
                      dropout=0.0, block_size=12)
    model = XAttnCaptioner(cfg).eval()
    mem = torch.randn(2, 4, 6).half()                         # features are cached in fp16
    with device.autocast("cpu"):
        logits, _ = model.step(torch.full((2, 1), cfg.bos_id), model.start(device.as_compute(mem)))
    assert logits.dtype == torch.float32
    ids = decoding.generate(model, mem, "beam", beam=2, max_len=5)
    assert len(ids) == 2 and all(len(i) <= 5 for i in ids)


def test_truncation_is_a_rate():
    assert decoding.truncation_rate([[1, 2], [1, 2, 3], [4]], max_len=3) == pytest.approx(1 / 3)
    assert decoding.truncation_rate([], max_len=3) == 0.0


def test_saved_results_and_notebook_stamps_carry_the_precision(tmp_path, monkeypatch, precision):
    monkeypatch.setattr(results, "RUNS", tmp_path)
    precision("bf16")
    results.save("smoke", "toy", {"a": 1})
    meta = results.load_provenance("smoke", "toy")
    assert meta["precision"] == "bf16" and meta["profile"] == "smoke" and meta["cpu"] == device.cpu_kind()
    assert {"commit", "dirty", "threads", "run_id", "started"} <= set(meta)
    nb = runner.notebooks(["01"])[0]
    s_bf16 = runner.inputs_stamp(nb, "smoke")
    precision("fp32")
    assert runner.inputs_stamp(nb, "smoke") != s_bf16
