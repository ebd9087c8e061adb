"""Invariants of the Infinity re-implementation (mmlib/t2i/infinity): quantizer, scales, mask, head,
self-correction, sampling, training resume. Tiny sizes; runs in seconds on 2 cores."""

import pytest
import torch

from mmlib import train
from mmlib.t2i.infinity import sampling, speed
from mmlib.t2i.infinity import text as textenc
from mmlib.t2i.infinity.bsq import BSQ, bits_to_codes, bsq, codes_to_bits
from mmlib.t2i.infinity.tokenizer import (
    BitwiseTokenizer,
    MultiScaleBSQ,
    TokenizerConfig,
    flip_bits,
    psnr_per_scale,
    tokenizer_loss,
)
from mmlib.t2i.infinity.transformer import (
    ARLoss,
    ScaleTransformer,
    Text,
    TransformerConfig,
    block_causal_mask,
    block_levels,
    head_cost,
)

TOK = TokenizerConfig(image_size=16, channels=(16, 16), bits=8, scales=(1, 2, 4))
TR = TransformerConfig(bits=8, scales=(1, 2, 4), d_text=12, d_model=32, n_layer=2, n_head=2)


def random_text(b: int, t: int = 5, d: int = 12, seed: int = 0) -> Text:
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(b, t, dtype=torch.bool)
    mask[:, t - 1] = False                              # some padding
    tokens = torch.randn(b, t, d, generator=g)
    return Text(tokens, mask, textenc.pool(tokens, mask))


def live(model: ScaleTransformer) -> ScaleTransformer:
    """adaLN is zero-initialised (DiT); give it weights so every path matters in the tests."""
    torch.manual_seed(1)
    for blk in model.blocks:
        torch.nn.init.normal_(blk.ada[1].weight, std=0.05)
    return model


# ----------------------------------------------------------------------------- BSQ


def test_bsq_codes_are_signs_over_sqrt_d_on_the_sphere():
    z = torch.randn(4, 16, 5, 5) * 3
    q = bsq(z)
    assert torch.allclose(q.abs(), torch.full_like(q, 16 ** -0.5))
    assert torch.allclose(q.norm(dim=1), torch.ones(4, 5, 5))
    assert torch.equal(torch.sign(q), torch.sign(z))
    assert torch.equal(bits_to_codes(codes_to_bits(q)), q)                 # bits <-> codes round trip


def test_bsq_straight_through_gradient_reaches_the_input():
    z = torch.randn(2, 8, 3, 3, requires_grad=True)
    out = BSQ(8)(z)
    (out.codes * torch.randn_like(out.codes)).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    # and through the whole tokenizer to the encoder's first layer
    tok = BitwiseTokenizer(TOK)
    loss, _ = tokenizer_loss(tok, {"image": torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)})
    loss.backward()
    assert tok.encoder.net[0].weight.grad.abs().sum() > 0


def test_bsq_entropy_prefers_confident_and_diverse_codes():
    from mmlib.t2i.infinity.bsq import bsq_entropy
    sharp = torch.randn(512, 8).sign() * 10                                # confident, all corners used
    collapsed = torch.ones(512, 8) * 10                                    # confident, one corner
    assert bsq_entropy(sharp, dim=1) < bsq_entropy(collapsed, dim=1)


# ----------------------------------------------------------------------------- multi-scale residual


@pytest.mark.bf16
def test_residual_error_falls_with_every_scale_after_a_few_steps():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)
    images[:16, 0] = 220                                                   # some structure to learn
    tok = BitwiseTokenizer(TOK)
    opt = torch.optim.Adam(tok.parameters(), 3e-3)
    for _ in range(40):
        loss, _ = tokenizer_loss(tok, {"image": images})
        opt.zero_grad(), loss.backward(), opt.step()
    psnr = psnr_per_scale(tok, images)
    assert all(b > a for a, b in zip(psnr, psnr[1:])), psnr
    # feature-space residual |f - F_k| falls too
    f = tok.encoder(images.float() / 127.5 - 1).detach()
    q = tok.quantizer(f)
    errs = [(f - tok.quantizer.bits_to_features(q.bits[:k], 4)).pow(2).mean() for k in range(1, 4)]
    assert errs[0] > errs[1] > errs[2]


def test_bits_decode_to_the_same_features():
    torch.manual_seed(0)
    msq = MultiScaleBSQ(TOK)
    f = torch.randn(3, 8, 4, 4)
    q = msq(f)
    assert [b.shape[-1] for b in q.bits] == [1, 2, 4] and all(b.shape[1] == 8 for b in q.bits)
    assert torch.allclose(msq.bits_to_features(q.bits, 4), q.f_hat, atol=1e-6)
    assert [x.shape[-1] for x in q.inputs] == [2, 4]


def test_flip_rate_matches_the_parameter():
    torch.manual_seed(0)
    bits = torch.randint(0, 2, (64, 16, 8, 8))
    for p in (0.0, 0.1, 0.3):
        rate = (flip_bits(bits, p) != bits).float().mean().item()
        assert abs(rate - p) < 0.01, (p, rate)


def test_self_correction_requantizes_later_scales():
    """Flips change the inputs of later scales and their targets follow the corrupted residual."""
    torch.manual_seed(0)
    msq = MultiScaleBSQ(TOK)
    f = torch.randn(16, 8, 4, 4)
    clean = msq(f)
    torch.manual_seed(1)
    noisy = msq(f, flip_prob=0.2)
    assert torch.equal(clean.bits[0], noisy.bits[0])                      # first target: nothing flipped before it
    assert not torch.equal(clean.inputs[0], noisy.inputs[0])               # inputs carry the flips
    assert not torch.equal(clean.bits[1], noisy.bits[1])                   # later targets correct them


# ----------------------------------------------------------------------------- transformer


def test_block_causal_mask_is_exact():
    """Position i (block k: predicts scale k+1 from R_1..R_k) sees exactly blocks 0..k, own block included."""
    scales = (1, 2, 4)
    m = block_causal_mask(scales)
    lv = block_levels(scales).tolist()
    assert lv == [0] + [1] * 4 + [2] * 16
    for i in range(len(lv)):
        for j in range(len(lv)):
            assert bool(m[i, j]) == (lv[j] <= lv[i])
    assert m[0].sum() == 1                       # the start token sees only itself (and the text)
    assert m[1:5, :5].all() and not m[1:5, 5:].any()


def test_future_scales_do_not_leak():
    torch.manual_seed(0)
    model = live(ScaleTransformer(TR)).eval()
    text = random_text(2)
    inputs = [torch.randn(2, 8, 2, 2), torch.randn(2, 8, 4, 4)]
    base = model(inputs, text)
    changed = model([inputs[0], torch.randn(2, 8, 4, 4)], text)           # alter block 2's input only
    assert torch.allclose(base[:, :5], changed[:, :5], atol=1e-5)         # blocks 0-1 unchanged
    assert not torch.allclose(base[:, 5:], changed[:, 5:], atol=1e-3)
    other_text = model(inputs, random_text(2, seed=1))
    assert not torch.allclose(base[:, :1], other_text[:, :1], atol=1e-3)  # the text reaches the start token


def test_bitwise_head_against_softmax_cost():
    c = head_cost(256, 16)
    assert c["bitwise_params"] == 256 * 16 + 16 and c["softmax_params"] == 256 * 65536 + 65536
    assert head_cost(32, 8)["softmax_params"] == ScaleTransformer(
        TransformerConfig(bits=8, scales=(1, 2), d_text=12, d_model=32, n_head=2, head="softmax")).head.weight.numel() + 256
    assert ScaleTransformer(TR).head.out_features == 8


def test_cfg_text_dropout_uses_the_null_text():
    model = ScaleTransformer(TR)
    t = random_text(3)
    d = model.drop_text(t, torch.tensor([True, False, True]))
    assert torch.equal(d.tokens[1], t.tokens[1]) and torch.equal(d.pooled[1], t.pooled[1])
    assert torch.equal(d.tokens[0], d.tokens[2]) and d.mask[0].tolist() == [True, False, False, False, False]


# ----------------------------------------------------------------------------- sampling


@pytest.mark.bf16
def test_sampling_shapes_and_kv_cache_equals_full_recompute():
    torch.manual_seed(0)
    tok, model = BitwiseTokenizer(TOK).eval(), live(ScaleTransformer(TR)).eval()
    text = random_text(3)
    greedy = sampling.SamplingConfig(cfg_scale=2.0, top_k=1)
    img, bits = sampling.generate(model, tok, text, greedy, return_bits=True)
    assert img.shape == (3, 3, 16, 16) and img.min() >= -1 and img.max() <= 1
    assert [tuple(b.shape) for b in bits] == [(3, 8, 1, 1), (3, 8, 2, 2), (3, 8, 4, 4)]
    _, bits_nocache = sampling.generate(model, tok, text, sampling.SamplingConfig(cfg_scale=2.0, top_k=1,
                                                                                  use_cache=False), return_bits=True)
    assert all(torch.equal(a, b) for a, b in zip(bits, bits_nocache))
    # seeded sampling is reproducible and does not touch the global RNG
    state = torch.get_rng_state()
    a = sampling.generate(model, tok, text, sampling.SamplingConfig(), torch.Generator().manual_seed(3))
    b = sampling.generate(model, tok, text, sampling.SamplingConfig(), torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.equal(state, torch.get_rng_state())


def test_sample_bits_temperature_top_k_top_p():
    logits = torch.tensor([[4.0, -4.0, 0.1, -0.1]]).expand(20000, 4)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sampling.sample_bits(logits, top_k=1), (logits > 0).long())
    drawn = sampling.sample_bits(logits, tau=1.0, generator=g).float().mean(0)
    assert torch.allclose(drawn, torch.sigmoid(logits[0]), atol=0.02)
    hot = sampling.sample_bits(logits, tau=100.0, generator=g).float().mean(0)
    assert torch.allclose(hot, torch.full((4,), 0.5), atol=0.03)           # high tau: coin flips
    nucleus = sampling.sample_bits(logits, top_p=0.9, generator=g).float().mean(0)
    assert nucleus[0] == 1 and nucleus[1] == 0                             # confident bits become greedy
    assert 0.4 < nucleus[2] < 0.65                                         # unsure bits still sampled


# ----------------------------------------------------------------------------- training


def tiny_data(n: int = 8):
    torch.manual_seed(0)
    text = random_text(n)
    return {"feature": torch.randn(n, 8, 4, 4), "text": text.tokens, "text_mask": text.mask, "pooled": text.pooled}


@pytest.mark.bf16
def test_tiny_overfit_of_the_transformer(tmp_path):
    torch.manual_seed(0)
    quantizer = MultiScaleBSQ(TOK).requires_grad_(False)
    data = tiny_data()
    model = ScaleTransformer(TransformerConfig(**{**TR.to_dict(), "cond_drop": 0.0}))
    cfg = train.TrainConfig(steps=150, batch_size=8, lr=3e-3, log_every=10)
    res = train.fit(model, ARLoss(quantizer, 0.0), data, cfg, tmp_path, {"t": "overfit"}, progress=False)
    assert res.history[-1]["loss"] < 0.5 * res.history[0]["loss"]
    assert res.history[-1]["bit_acc"] > 0.9


def test_resume_equals_uninterrupted(tmp_path):
    """Flips and text dropout draw from the global RNG, which train.fit checkpoints: resume is exact."""
    quantizer = MultiScaleBSQ(TOK).requires_grad_(False)
    data = tiny_data()
    cfg = train.TrainConfig(steps=6, batch_size=4, lr=1e-3, log_every=1)

    def run(out, stop_after=None):
        torch.manual_seed(0)
        model = ScaleTransformer(TR)
        res = train.fit(model, ARLoss(quantizer, 0.2), data, cfg, out, {"t": "resume"}, stop_after=stop_after,
                        progress=False)
        return model, res

    full, _ = run(tmp_path / "a")
    run(tmp_path / "b", stop_after=3)
    resumed, res = run(tmp_path / "b")
    assert res.resumed_from == 3
    for (n, p), (_, q) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(p, q), n


def test_t5_text_encoder_loads_offline(tmp_path):
    """``paper`` names flan-t5; the loader works on any save_pretrained folder (tiny T5 stand-in)."""
    from transformers import T5Config, T5EncoderModel

    from mmlib import pretrained
    tok, _ = pretrained.text_encoder("smoke")
    T5EncoderModel(T5Config(vocab_size=len(tok), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
                   ).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    enc = textenc.t5_encoder(str(tmp_path), max_tokens=8)
    t = enc(["a dog runs .", "two girls in red dresses stand on the beach ."])
    assert t.tokens.shape == (2, 8, 16) and enc.dim == 16
    assert t.mask[0].sum() < t.mask[1].sum()
    assert torch.allclose(t.pooled, textenc.pool(t.tokens, t.mask))


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_settings_take_every_profile_key_by_name(profile):
    from mmlib import profiles
    from mmlib.t2i.infinity import pipeline
    raw, s = profiles.SECTIONS["infinity"][profile], pipeline.settings(profile)
    for key, value in raw.items():
        if not isinstance(value, dict):
            assert getattr(s, key) == (tuple(value) if isinstance(value, list) else value), key
    assert (s.transformer.bits, s.transformer.scales) == (s.tokenizer.bits, s.tokenizer.scales)
    assert pipeline.settings(profile, flip_prob=0.0).flip_prob == 0.0


def test_speed_is_timed_over_three_calls_after_a_warm_up():
    calls = []
    speeds = speed.timed(lambda b: calls.append(b), batch_size=4)
    assert len(calls) == 1 + speed.REPEATS == 4 and len(speeds) == speed.REPEATS >= 3
    assert all(v > 0 for v in speeds)
