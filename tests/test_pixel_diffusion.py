"""Pixel-space text-conditioned diffusion (notebook 06): shapes, CFG, training, resume, paper loaders."""
from __future__ import annotations

import pytest
import torch

from mmlib import device, profiles, train
from mmlib.t2i import diffusion
from mmlib.t2i import pixel_diffusion as pd

TINY = pd.PixelDiffusionConfig(image_size=8, block_out_channels=(16, 16), layers_per_block=1, norm_num_groups=4,
                               down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                               up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                               attention_head_dim=8, cross_attention_dim=16, text_dim=12, max_tokens=6)


def tiny_bank(n: int = 5, seed: int = 0) -> diffusion.TextBank:
    """Stand-in for frozen token embeddings: row 0 = "" (∅), rows 1.. = 'colour i' with a distinct vector."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(n, TINY.max_tokens, TINY.text_dim, generator=g).half()
    mask = torch.ones(n, TINY.max_tokens, dtype=torch.bool)
    mask[:, 3:] = False
    return diffusion.TextBank([""] + [f"colour {i}" for i in range(1, n)], emb, mask)


def colour_data(bank: diffusion.TextBank, n: int = 64) -> dict[str, torch.Tensor]:
    """Images of one flat colour per caption: the text decides the picture."""
    palette = torch.tensor([[0, 0, 0], [230, 20, 20], [20, 230, 20], [20, 20, 230], [230, 230, 20]], dtype=torch.uint8)
    ids = torch.arange(n) % (len(bank.captions) - 1) + 1
    x = palette[ids][:, :, None, None].expand(n, 3, TINY.image_size, TINY.image_size).contiguous()
    return {"x": x, "cap": ids[:, None].repeat(1, 2)}


def model(seed: int = 0) -> pd.PixelDiffusion:
    torch.manual_seed(seed)
    return pd.PixelDiffusion(TINY)


def test_unet_predicts_noise_of_image_shape():
    m, bank = model(), tiny_bank()
    x = torch.randn(3, 3, TINY.image_size, TINY.image_size)
    emb, mask = bank[torch.tensor([1, 2, 0])]
    out = m(x, torch.tensor([0, 500, 999]), emb, mask)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_cfg_scale_one_is_the_conditional_prediction():
    m, bank = model().eval(), tiny_bank()
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([10, 700])
    emb, mask = bank[torch.tensor([1, 2])]
    with torch.no_grad():
        g1 = diffusion.guided_eps(m, x, t, emb, mask, bank.emb[0], bank.mask[0], 1.0)
        g0 = diffusion.guided_eps(m, x, t, emb, mask, bank.emb[0], bank.mask[0], 0.0)
        with device.autocast("cpu"):    # the references in the same precision as guided_eps runs the model
            cond = m(x, t, device.as_compute(emb), mask).float()
            uncond = m(x, t, device.as_compute(bank.emb[[0, 0]]), bank.mask[[0, 0]]).float()
    tol = dict(atol=1e-5, rtol=1e-4) if device.precision() == "fp32" else dict(atol=3e-2, rtol=3e-2)  # bf16: 8-bit mantissa
    torch.testing.assert_close(g1, cond, **tol)
    torch.testing.assert_close(g0, uncond, **tol)


def test_caption_dropout_uses_the_empty_caption(monkeypatch):
    bank = tiny_bank()
    seen = []
    cfg = pd.PixelDiffusionConfig(**{**TINY.key(), "caption_dropout": 1.0})
    m = pd.PixelDiffusion(cfg)
    monkeypatch.setattr(m, "forward", lambda x, t, e, k: (seen.append(e), torch.zeros_like(x))[1])
    pd.diffusion_loss(bank, cfg)(m, colour_data(bank, 4))
    assert torch.equal(seen[0], bank.emb[[0, 0, 0, 0]])


def fixed_loss(m: pd.PixelDiffusion, bank: diffusion.TextBank, data: dict) -> float:
    """The training loss on a fixed batch with fixed noise (the global RNG is restored afterwards)."""
    state = torch.get_rng_state()
    torch.manual_seed(123)
    with torch.no_grad():
        loss = sum(float(pd.diffusion_loss(bank, TINY)(m, data)) for _ in range(4)) / 4
    torch.set_rng_state(state)
    return loss


def tcfg(steps: int, **kw) -> train.TrainConfig:
    return train.TrainConfig(steps=steps, batch_size=16, lr=2e-3, warmup=0, ema=0.9, **kw)


@pytest.mark.bf16
def test_a_few_training_steps_lower_the_loss(tmp_path):
    m, bank = model(), tiny_bank()
    data = colour_data(bank)
    before = fixed_loss(m, bank, data)
    res = train.fit(m, pd.diffusion_loss(bank, TINY), data, tcfg(40), tmp_path, TINY.key(), progress=False)
    after = fixed_loss(m, bank, data)
    assert after < 0.7 * before, (before, after)
    assert res.ema is not None and set(res.ema) == {n for n, p in m.named_parameters() if p.requires_grad}


def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    bank = tiny_bank()
    data = colour_data(bank)
    full = model()
    train.fit(full, pd.diffusion_loss(bank, TINY), data, tcfg(6), tmp_path / "a", TINY.key(), progress=False)
    part = model()
    first = train.fit(part, pd.diffusion_loss(bank, TINY), data, tcfg(6, ckpt_every=2), tmp_path / "b", TINY.key(),
                      stop_after=3, progress=False)
    assert first.steps == 3
    torch.manual_seed(999)                       # the interruption scrambles the process RNG
    resumed = model(seed=5)                      # a fresh process builds a fresh model
    res = train.fit(resumed, pd.diffusion_loss(bank, TINY), data, tcfg(6, ckpt_every=2), tmp_path / "b",
                    TINY.key(), progress=False)
    assert res.resumed_from == 3 and res.steps == 6
    for (n, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), n


@pytest.mark.bf16
@pytest.mark.parametrize("sampler", ["ddim", "dpm", "ddpm"])
def test_samplers_give_images_and_same_noise_same_image(sampler):
    m, bank = model().eval(), tiny_bank()
    emb, mask = bank[torch.tensor([1, 2, 3])]
    sc = diffusion.SampleConfig(sampler=sampler, steps=3, guidance=3.0, batch_size=2)
    cfg_small = pd.PixelDiffusionConfig(**{**TINY.key(), "num_train_timesteps": 20})
    m.cfg = cfg_small                                # a short chain keeps the test fast
    a = pd.sample(m, emb, mask, bank.emb[0], bank.mask[0], sc, seed=3)
    b = pd.sample(m, emb, mask, bank.emb[0], bank.mask[0], sc, seed=3)
    assert a.dtype == torch.uint8 and a.shape == (3, 3, 8, 8)
    assert torch.equal(a, b)


def test_text_bank_deduplicates_and_caches(tmp_path):
    calls = []

    class FakeEncoder:
        max_tokens, dim = 4, 3

        def __call__(self, caps):
            calls.append(list(caps))
            return torch.ones(len(caps), 4, 3).half(), torch.ones(len(caps), 4, dtype=torch.bool)

    bank = diffusion.build_text_bank(FakeEncoder(), ["b", "a", "b"], tmp_path)
    assert bank.captions == ["", "a", "b"] and bank.ids(["b", "a"]).tolist() == [2, 1]
    again = diffusion.build_text_bank(FakeEncoder(), ["a", "b"], tmp_path)
    assert len(calls) == 1 and torch.equal(again.emb, bank.emb)


def test_profiles_keep_the_seed_layout_in_paper():
    paper = pd.config_from_profile(profiles.get("paper").pixel_diffusion)
    assert paper.block_out_channels == (64, 128, 256, 256) and paper.text_dim == 768
    assert paper.down_block_types == ("CrossAttnDownBlock2D",) * 2 + ("DownBlock2D",) * 2
    assert paper.up_block_types == ("UpBlock2D",) * 2 + ("CrossAttnUpBlock2D",) * 2
    cpu = pd.config_from_profile(profiles.get("cpu").pixel_diffusion)
    assert cpu.down_block_types[-1] == "CrossAttnDownBlock2D" and cpu.text_dim == 384


def test_paper_text_encoder_loads_a_local_bert_stand_in(tmp_path, monkeypatch):
    """paper: bert-base-uncased from $MMLIB_WEIGHTS_DIR; here a tiny random BERT with the MiniLM vocab."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from mmlib import pretrained
    folder = tmp_path / "bert-base-uncased"
    tok = AutoTokenizer.from_pretrained(str(pretrained.package_file("text_encoder")))
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(folder)
    tok.save_pretrained(folder)
    monkeypatch.setenv("MMLIB_WEIGHTS_DIR", str(tmp_path))
    enc = pd.TextEncoder.for_profile("paper", max_tokens=10)
    emb, mask = enc(["a girl in a pink dress", ""])
    assert emb.shape == (2, 10, 24) and mask[0].sum() > mask[1].sum() == 2   # [CLS] [SEP] for ""
    cfg = pd.PixelDiffusionConfig(**{**TINY.key(), "text_dim": enc.dim, "max_tokens": 10})
    out = pd.PixelDiffusion(cfg)(torch.randn(2, 3, 8, 8), torch.tensor([1, 2]), emb, mask)
    assert out.shape == (2, 3, 8, 8)


def test_export_round_trips_and_feeds_the_speed_comparison(tmp_path, monkeypatch):
    from mmlib import paths
    from mmlib.t2i.infinity import speed

    monkeypatch.setattr(paths, "RUNS", tmp_path)
    with pytest.raises(FileNotFoundError, match="run notebook 06"):
        pd.load_trained("smoke")
    assert speed._trained(pd.load_trained, "smoke") is None          # before 06 has run: the untrained model is timed
    m = model(seed=3)
    path = pd.export_trained("smoke", m)
    assert path.suffix == ".safetensors" and path.is_relative_to(tmp_path)
    back = pd.load_trained("smoke")
    assert back.cfg == TINY and not any(p.requires_grad for p in back.parameters())
    for (k, a), (k2, b) in zip(m.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    assert isinstance(speed._trained(pd.load_trained, "smoke"), pd.PixelDiffusion)


# ----------------------------------------------------------------------------- training levers (issue: T2I quality)
def test_min_snr_weight_caps_the_easy_timesteps_only():
    sched = diffusion.noise_scheduler(TINY)
    t = torch.tensor([0, 100, 500, 999])
    abar = sched.alphas_cumprod[t].float()
    snr = abar / (1 - abar)
    w_eps = diffusion.snr_weight(sched, t, 5.0, "epsilon")
    w_v = diffusion.snr_weight(sched, t, 5.0, "v_prediction")
    torch.testing.assert_close(w_eps, torch.clamp(snr, max=5.0) / snr)
    assert w_eps[0] < 0.01 and w_eps[-1] == 1.0              # t = 0: SNR ~ 1e4, capped; t = T-1: SNR < γ
    torch.testing.assert_close(w_v, torch.clamp(snr, max=5.0) / (snr + 1))
    assert (w_v <= 1).all() and w_v[-1] < 1e-3


def test_v_prediction_loss_targets_the_velocity(monkeypatch):
    """With a zero prediction the loss is the mean square of its target: v = √ᾱ ε − √(1−ᾱ) x_0, not ε."""
    bank = tiny_bank()
    data = colour_data(bank, 4)
    for prediction in ("epsilon", "v_prediction"):
        cfg = pd.PixelDiffusionConfig(**{**TINY.key(), "prediction": prediction})
        m = pd.PixelDiffusion(cfg)
        monkeypatch.setattr(m, "forward", lambda x, t, e, k: torch.zeros_like(x))
        torch.manual_seed(0)
        loss = pd.diffusion_loss(bank, cfg)(m, data)
        torch.manual_seed(0)                                 # replay the loss's draws: caption, dropout, ε, t
        torch.randint(0, 2, (4,)), torch.rand(4)
        x0 = data["x"].float() / 127.5 - 1
        eps, t = torch.randn_like(x0), torch.randint(0, cfg.num_train_timesteps, (4,))
        sched = diffusion.noise_scheduler(cfg)
        target = sched.get_velocity(x0, eps, t) if prediction == "v_prediction" else eps
        torch.testing.assert_close(loss, target.pow(2).mean(), atol=1e-4, rtol=1e-4)


def test_pooled_text_reaches_the_timestep_embedding():
    cfg = pd.PixelDiffusionConfig(**{**TINY.key(), "pooled_text": True})
    torch.manual_seed(0)
    m, bank = pd.PixelDiffusion(cfg), tiny_bank()
    assert m.unet.class_embedding is not None
    emb, mask = bank[torch.tensor([1, 2])]
    out = m(torch.randn(2, 3, 8, 8), torch.tensor([10, 700]), emb, mask)
    out.pow(2).mean().backward()
    assert out.shape == (2, 3, 8, 8) and m.unet.class_embedding.linear_1.weight.grad.abs().sum() > 0
    # the masked mean ignores padding: changing a padded token changes nothing
    ctx = torch.randn(1, 6, 4)
    keep = torch.tensor([[True, True, True, False, False, False]])
    torch.testing.assert_close(diffusion.pooled(ctx, keep), ctx[:, :3].mean(1))


@pytest.mark.bf16
def test_v_prediction_with_min_snr_and_pooled_text_learns(tmp_path):
    cfg = pd.PixelDiffusionConfig(**{**TINY.key(), "prediction": "v_prediction", "snr_gamma": 5.0,
                                     "pooled_text": True, "offset_noise": 0.1})
    torch.manual_seed(0)
    m, bank = pd.PixelDiffusion(cfg), tiny_bank()
    data = colour_data(bank)
    res = train.fit(m, pd.diffusion_loss(bank, cfg), data, tcfg(40), tmp_path, cfg.key(), progress=False)
    first, last = res.history[0]["loss"], res.history[-1]["loss"]
    assert last < 0.7 * first, (first, last)
    sc = diffusion.SampleConfig(sampler="ddim", steps=3, guidance=2.0, batch_size=4)
    emb, mask = bank[torch.tensor([1, 2])]
    img = pd.sample(m.eval(), emb, mask, bank.emb[0], bank.mask[0], sc, seed=0)
    assert img.dtype == torch.uint8 and img.shape == (2, 3, 8, 8)
