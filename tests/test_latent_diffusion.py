"""Second stage of 07: CLIP token features, latent UNet training/resume, sampling + decoding, paper loaders."""
import json

import pytest
import torch

from mmlib import images, pretrained, train
from mmlib.t2i import diffusion, vqvae
from mmlib.t2i import latent_diffusion as ldm

TEXT_CFG = dict(context_length=16, vocab_size=49408, width=32, heads=2, layers=1)


def tiny_clip(seed=0):
    from open_clip.model import CLIP

    torch.manual_seed(seed)
    return CLIP(embed_dim=16, vision_cfg=dict(layers=1, width=32, head_width=16, patch_size=8, image_size=16),
                text_cfg=TEXT_CFG).eval()


def tiny_cfg(**kw):
    return ldm.LDMConfig(**{**dict(latent_size=8, block_out_channels=(16, 16), norm_num_groups=4,
                                   down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                   up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=8,
                                   text_dim=32, max_tokens=16), **kw})


def encoder():
    return ldm.CLIPTextEncoder(pretrained.clip_tokenizer("smoke", context_length=16), tiny_clip(), max_tokens=16)


def test_clip_token_features_pool_to_encode_text():
    """Our per-token path reproduces open_clip's encode_text when pooled at [EOT] and projected."""
    model = tiny_clip()
    ids = pretrained.clip_tokenizer("smoke", context_length=16)(["a girl in a pink dress", "a dog"])
    tokens = ldm.clip_token_features(model, ids)                          # (2, 16, 32)
    pooled = tokens[torch.arange(2), ids.argmax(-1)] @ model.text_projection
    assert tokens.shape == (2, 16, 32)
    assert torch.allclose(pooled, model.encode_text(ids), atol=1e-5)


def test_text_encoder_masks_padding_and_keeps_eot_when_cutting():
    enc = encoder()
    emb, mask = enc(["a girl in a pink dress", ""])
    assert emb.dtype == torch.float16 and emb.shape == (2, 16, 32)
    assert mask[0].sum() == 8 and mask[1].sum() == 2                      # [SOT] 6 words [EOT]; [SOT][EOT]
    assert mask[0, :8].all() and not mask[0, 8:].any()
    enc.max_tokens = 5
    ids = enc.tokenize(["a girl in a pink dress"])
    assert ids.shape == (1, 5) and ids[0, -1] == ids.max()                 # still ends with [EOT]


def test_latent_scale_gives_unit_variance():
    z = torch.randn(64, 4, 8, 8) * 3.7 + 0.2
    assert abs((z * ldm.latent_scale(z)).std().item() - 1) < 1e-4


@pytest.mark.bf16
def test_training_lowers_loss_and_resumes_exactly(tmp_path):
    enc = encoder()
    caps = [[f"a girl in a {c} dress", f"a {c} dress"] for c in ("pink", "black", "green", "red")] * 4
    bank = ldm.build_text_bank(enc, [c for cs in caps for c in cs])
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 4, 8, 8, generator=g)
    data = ldm.training_data(z, caps, bank)
    cfg = tiny_cfg()
    tc = train.TrainConfig(steps=6, batch_size=4, lr=1e-3, log_every=1, ckpt_every=2, ema=0.9)
    torch.manual_seed(0)
    a = ldm.LatentDiffusion(cfg)
    ra = train.fit(a, ldm.ldm_loss(bank, cfg), data, tc, tmp_path / "a", key={"t": 1}, progress=False)
    torch.manual_seed(0)
    b = ldm.LatentDiffusion(cfg)
    train.fit(b, ldm.ldm_loss(bank, cfg), data, tc, tmp_path / "b", key={"t": 1}, stop_after=3, progress=False)
    torch.manual_seed(5)
    c = ldm.LatentDiffusion(cfg)                                          # fresh init: state from the checkpoint
    rc = train.fit(c, ldm.ldm_loss(bank, cfg), data, tc, tmp_path / "b", key={"t": 1}, progress=False)
    assert rc.resumed_from == 3 and ra.history == rc.history
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    assert all(torch.equal(ra.ema[k], rc.ema[k]) for k in ra.ema)
    # a few more steps on one fixed batch: the ε-loss goes down
    torch.manual_seed(0)
    d = ldm.LatentDiffusion(cfg)
    tl = train.TrainConfig(steps=20, batch_size=16, lr=3e-3, log_every=1)
    rd = train.fit(d, ldm.ldm_loss(bank, cfg), data, tl, tmp_path / "d", key={"t": 2}, progress=False)
    first, last = (sum(h["loss"] for h in hs) / 5 for hs in (rd.history[:5], rd.history[-5:]))
    assert last < first, (first, last)


@pytest.mark.bf16
def test_generate_decodes_sampled_latents_through_the_quantiser():
    vcfg = vqvae.VQConfig(image_size=16, block_out_channels=(8, 16), norm_num_groups=4, num_codes=16)
    torch.manual_seed(0)
    vq = vqvae.build_vqmodel(vcfg).eval()
    model = ldm.LatentDiffusion(tiny_cfg(latent_scale=0.5)).eval()
    enc = encoder()
    sc = diffusion.SampleConfig(sampler="ddim", steps=3, guidance=3.0, batch_size=2)
    imgs = ldm.generate(model, vq, enc, ["a girl in a pink dress"] * 3, sc, seed=1)
    again = ldm.generate(model, vq, enc, ["a girl in a pink dress"] * 3, sc, seed=1)
    assert imgs.dtype == torch.uint8 and imgs.shape == (3, 3, 16, 16) and torch.equal(imgs, again)
    # decoding = nearest codes -> decoder, i.e. the same as decoding the code ids
    emb, mask = enc(["a dog", ""])
    z = ldm.sample_latents(model, emb[:1], mask[:1], emb[1], mask[1], sc, seed=0)
    assert z.shape == (1, 4, 8, 8)
    ids = vq.quantize(z)[2][2].view(1, 8, 8)
    with torch.no_grad():  # equal up to the straight-through estimator's float rounding (z + (e - z) vs e)
        diff = ldm.decode_latents(vq, z).int() - images.to_uint8(vqvae.decode_codes(vq, ids)).int()
    assert diff.abs().max() <= 1


def test_paper_loaders_read_tiny_stand_ins(tmp_path):
    import open_clip

    model = ldm.LatentDiffusion(tiny_cfg()).eval()
    model.unet.save_pretrained(tmp_path / "unet")
    unet = ldm.load_unet(str(tmp_path / "unet")).eval()
    x, t, txt = torch.randn(1, 4, 8, 8), torch.tensor([10]), torch.randn(1, 5, 32)
    with torch.no_grad():
        assert torch.allclose(ldm.LatentDiffusion(model.cfg, unet=unet)(x, t, txt), model(x, t, txt), atol=1e-6)
    # open_clip by name + a local checkpoint, the way the paper loader reads openai ViT-B/32
    cfg_file = tmp_path / "TinyCLIP-test.json"
    cfg_file.write_text(json.dumps({"embed_dim": 16, "vision_cfg": dict(layers=1, width=32, head_width=16,
                                    patch_size=8, image_size=16), "text_cfg": TEXT_CFG}))
    open_clip.add_model_config(cfg_file)
    src = tiny_clip(seed=3)
    torch.save(src.state_dict(), tmp_path / "tiny.pt")
    loaded = ldm.load_paper_clip("TinyCLIP-test", pretrained=str(tmp_path / "tiny.pt"))
    ids = pretrained.clip_tokenizer("smoke", context_length=16)(["a man on the beach"])
    assert torch.allclose(ldm.clip_token_features(loaded, ids), ldm.clip_token_features(src, ids), atol=1e-6)
    assert not any(p.requires_grad for p in loaded.parameters())


def test_export_round_trips_unet_and_vq(tmp_path, monkeypatch):
    import pytest

    from mmlib import paths

    monkeypatch.setattr(paths, "RUNS", tmp_path)
    with pytest.raises(FileNotFoundError, match="run notebook 07"):
        ldm.load_trained("smoke")
    vcfg = vqvae.VQConfig(image_size=16, block_out_channels=(8, 16), norm_num_groups=4, num_codes=16)
    torch.manual_seed(0)
    vq, model = vqvae.build_vqmodel(vcfg), ldm.LatentDiffusion(tiny_cfg(latent_scale=0.5))
    ldm.export_trained("smoke", model, vq, vcfg)
    model2, vq2 = ldm.load_trained("smoke")
    assert model2.cfg == model.cfg
    for a, b in ((model, model2), (vq, vq2)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


class _ToyEps(torch.nn.Module):
    """ε(x, t, text) = a·x + mean(text): enough to make guidance and the sampler matter."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.3))
        self.cfg = type("Cfg", (), dict(image_size=8, latent_size=8, latent_channels=3, latent_scale=1.0,
                                       num_train_timesteps=1000, beta_schedule="linear"))()

    def forward(self, x, t, text, mask):
        return self.a * x + text.float().mean((1, 2))[:, None, None, None]


@pytest.mark.parametrize("sampler", ["ddim", "dpm", "ddpm"])
def test_06_and_07_sample_identically_given_the_same_noise(sampler):
    """One sampler loop (mmlib.t2i.diffusion): 06's pixel sampler and 07's latent sampler agree exactly
    (before this, 07's DDPM ran all T steps while 06 ran a strided chain)."""
    from mmlib.t2i import pixel_diffusion as pd
    m = _ToyEps()
    text, mask = torch.randn(3, 4, 5).half(), torch.ones(3, 4, dtype=torch.bool)
    noise = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    sc = diffusion.SampleConfig(sampler=sampler, steps=4, guidance=2.0, batch_size=2)
    pixels = pd.sample(m, text, mask, text[0] * 0, mask[0], sc, seed=7, noise=noise)
    latents = ldm.sample_latents(m, text, mask, text[0] * 0, mask[0], sc, seed=7, noise=noise)
    assert torch.equal(pixels, images.to_uint8(latents))


def test_a_training_seed_draws_its_own_init_and_batches_and_keeps_its_own_checkpoints(tmp_path):
    """07's seed replicas: seed=None is the profile's seed (the same checkpoint as seed 0); seed 1 trains another
    model into another folder; each reloads from its own checkpoint."""
    torch.manual_seed(0)
    vq = vqvae.build_vqmodel(vqvae.VQConfig(image_size=16, block_out_channels=(16, 32), norm_num_groups=8,
                                            num_codes=64)).eval()
    imgs = torch.randint(0, 256, (16, 3, 16, 16), dtype=torch.uint8)
    caps = [[f"a girl in a {c} dress"] for c in ("pink", "black", "green", "red")] * 4
    run = lambda seed: ldm.train_second_stage("smoke", vq, imgs, caps, encoder(), tmp_path, vq_id="v",   # noqa: E731
                                              progress=False, seed=seed)
    a, b, a0 = run(None), run(1), run(0)
    assert a["fit"].train_dir != b["fit"].train_dir and a0["fit"].train_dir == a["fit"].train_dir and a0["fit"].cached
    sa, sb = a["model"].state_dict(), b["model"].state_dict()
    assert any(not torch.equal(sa[k], sb[k]) for k in sa)
    assert all(torch.equal(sa[k], v) for k, v in a0["model"].state_dict().items())
