"""First stage of 07: VQModel round trip, codebook statistics, the delayed discriminator, resume."""
import math

import pytest
import torch

from mmlib import train
from mmlib.images import psnr
from mmlib.t2i import perceptual, vqvae

TINY = vqvae.VQConfig(image_size=16, block_out_channels=(8, 16), norm_num_groups=4, num_codes=16,
                      latent_channels=4, disc_start=3, disc_channels=8, disc_layers=1, perceptual_weight=0.0)


def images(n=16, size=16, seed=0):
    """Smooth coloured blobs, uint8 (n, 3, size, size): learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    c = torch.rand(n, 3, 1, 1, generator=g)
    pos = torch.rand(n, 2, 1, 1, generator=g) - 0.5
    blob = torch.exp(-((xx - pos[:, :1]) ** 2 + (yy - pos[:, 1:]) ** 2) * 6)
    return (255 * (0.2 + 0.8 * c * blob)).round().to(torch.uint8)


def make(seed=0, cfg=TINY):
    torch.manual_seed(seed)
    return vqvae.VQGAN(cfg, perceptual=None)


CFG = train.TrainConfig(steps=6, batch_size=4, lr=2e-3, log_every=1, ckpt_every=2)


def test_round_trip_shapes():
    model = make()
    x = images(2).float() / 127.5 - 1
    out = vqvae.vq_forward(model.vq, x)
    assert out.recon.shape == (2, 3, 16, 16)
    assert out.latents.shape == (2, 4, 8, 8) and out.indices.shape == (2, 8, 8)
    assert TINY.downsample == 2 and TINY.latent_size == 8
    assert out.indices.min() >= 0 and out.indices.max() < TINY.num_codes


def test_codes_are_codebook_entries_and_decode_consistently():
    vq = make().vq.eval()
    x = images(3).float() / 127.5 - 1
    with torch.no_grad():
        h = vq.encode(x).latents
        quant, _, (_, _, idx) = vq.quantize(h)
        table = vq.quantize.embedding.weight
        # every quantised vector is exactly its code's row, and the nearest one
        flat = quant.permute(0, 2, 3, 1).reshape(-1, h.shape[1])
        assert torch.allclose(flat, table[idx], atol=1e-6)
        d = torch.cdist(h.permute(0, 2, 3, 1).reshape(-1, h.shape[1]), table)
        assert torch.equal(d.argmin(1), idx)
        # decoding the ids equals the model's own decode of the continuous latents (which quantises)
        ids = vqvae.codes(vq, x)
        assert torch.allclose(vqvae.decode_codes(vq, ids), vq.decode(h).sample, atol=1e-5)


def test_codebook_usage_on_known_assignments():
    u = vqvae.codebook_usage(torch.tensor([0, 0, 1, 1]), 4)
    assert u["perplexity"] == pytest.approx(2.0) and u["used"] == 2 and u["dead"] == 2
    u = vqvae.codebook_usage(torch.arange(8).repeat(5), 8)
    assert u["perplexity"] == pytest.approx(8.0) and u["dead"] == 0 and u["used_fraction"] == 1.0
    p = torch.tensor([0.5, 0.25, 0.25])
    u = vqvae.codebook_usage(torch.tensor([0, 0, 1, 2]), 5)
    assert u["perplexity"] == pytest.approx(math.exp(-(p * p.log()).sum().item())) and u["dead"] == 2


def test_psnr_of_known_error():
    x = torch.zeros(2, 3, 4, 4)
    assert psnr(x, x + 0.1).tolist() == pytest.approx([20.0, 20.0], abs=1e-4)


def test_discriminator_starts_exactly_at_the_configured_step(tmp_path):
    model = make()
    disc0 = {n: p.clone() for n, p in model.disc.named_parameters()}
    data = {"image": images(16)}
    part = train.fit(model, vqvae.vqgan_loss, data, CFG, tmp_path, key={"t": 1}, stop_after=3, progress=False)
    # steps 1..3 ran with steps_seen 0, 1, 2 < disc_start: zero GAN weight, discriminator untouched
    assert [h["gan_weight"] for h in part.history] == [0.0, 0.0, 0.0]
    assert all(torch.equal(p, disc0[n]) for n, p in model.disc.named_parameters())
    full = train.fit(model, vqvae.vqgan_loss, data, CFG, tmp_path, key={"t": 1}, progress=False)
    assert [h["gan_weight"] > 0 for h in full.history] == [False] * 3 + [True] * 3
    assert all(h["d_loss"] > 0 for h in full.history[3:])
    assert not all(torch.equal(p, disc0[n]) for n, p in model.disc.named_parameters())
    assert model.step == 6


def test_gan_terms_reach_only_their_own_player():
    """One summed loss, one optimiser: the discriminator's gradient is that of its hinge loss alone."""
    model = make()
    model.steps_seen.data.fill_(TINY.disc_start)
    batch = {"image": images(4)}
    torch.manual_seed(0)
    loss, _ = vqvae.vqgan_loss(model, batch)
    loss.backward()
    got = [p.grad.clone() for p in model.disc.parameters()]
    model.zero_grad()
    x = batch["image"].float() / 127.5 - 1
    recon = vqvae.vq_forward(model.vq, x).recon.detach()
    vqvae.hinge_d_loss(model.disc(x), model.disc(recon)).backward()
    for g, p in zip(got, model.disc.parameters()):
        assert torch.allclose(g, p.grad, atol=1e-6)
    assert model.steps_seen.grad is None


@pytest.mark.bf16
def test_short_training_lowers_reconstruction_loss(tmp_path):
    cfg = vqvae.VQConfig(**{**TINY.__dict__, "disc_start": 10_000})
    model = make(cfg=cfg)
    x = images(32)
    vqvae.init_codebook(model.vq, x[:8])
    tc = train.TrainConfig(steps=25, batch_size=8, lr=5e-3, log_every=1)
    r = train.fit(model, vqvae.vqgan_loss, {"image": x}, tc, tmp_path, key={"t": 2}, progress=False)
    first = sum(h["rec_l1"] for h in r.history[:5]) / 5
    last = sum(h["rec_l1"] for h in r.history[-5:]) / 5
    assert last < 0.7 * first, (first, last)


def test_resume_after_interruption_equals_uninterrupted(tmp_path):
    data = {"image": images(16)}
    a = make()
    ra = train.fit(a, vqvae.vqgan_loss, data, CFG, tmp_path / "a", key={"t": 3}, progress=False)
    b = make()
    train.fit(b, vqvae.vqgan_loss, data, CFG, tmp_path / "b", key={"t": 3}, stop_after=2, progress=False)
    c = make(seed=7)  # a fresh process: all state must come from the checkpoint (incl. the step counter)
    torch.manual_seed(123)
    rc = train.fit(c, vqvae.vqgan_loss, data, CFG, tmp_path / "b", key={"t": 3}, progress=False)
    assert rc.resumed_from == 2 and ra.history == rc.history
    for (n, p), q in zip(a.named_parameters(), c.parameters()):
        assert torch.equal(p, q), n


def test_perceptual_distance_on_the_offline_cnn_architecture():
    from mmlib import pretrained

    dist = perceptual.Perceptual(pretrained.cnn("smoke", pretrained=False), min_size=32)
    x = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_()
    y = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.allclose(dist(x, x), torch.zeros(2), atol=1e-6)
    d = dist(x, y)
    assert d.shape == (2,) and (d > 0).all()
    d.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in dist.parameters())


def test_paper_loader_reads_a_save_pretrained_stand_in(tmp_path):
    vq = make().vq.eval()
    vq.save_pretrained(tmp_path / "vq")
    loaded = vqvae.load_vqmodel(str(tmp_path / "vq")).eval()
    x = images(2).float() / 127.5 - 1
    with torch.no_grad():
        assert torch.allclose(vq(x).sample, loaded(x).sample, atol=1e-6)
    assert loaded.config.num_vq_embeddings == TINY.num_codes


def test_perceptual_for_follows_the_profile_weight():
    # cpu weights the perceptual term 0 (measured: it cost PSNR at 32 px), so no network is built for it;
    # smoke keeps a small weight so the perceptual path stays exercised by the notebooks' smoke runs
    net, name = perceptual.perceptual_for("cpu")
    assert net is None and "none" in name
    net, name = perceptual.perceptual_for("smoke")
    assert isinstance(net, perceptual.Perceptual) and "feature distance" in name
