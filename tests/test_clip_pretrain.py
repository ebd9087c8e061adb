"""World CLIP pretraining and the paper-profile encoder paths, offline with tiny stand-ins."""
import pytest
import torch

from mmlib import paths
from mmlib.captioning import clip_pretrain as cp
from mmlib.captioning import clip_step
from mmlib.captioning import encoders, param_counts

TINY = cp.WorldCLIPConfig(image_size=64, vision_width=32, vision_layers=1, text_width=32,
                          text_layers=1, heads=2, embed_dim=16, context_length=16)


def tiny():
    torch.manual_seed(0)
    return cp.build(TINY, "smoke", pretrained_cnn=False)


def batch(n=8):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 64, 64), dtype=torch.uint8)
    caps = [f"a {c} dog on the {b}" for c, b in zip(["red", "blue", "green", "black", "white", "brown", "pink", "grey"],
                                                      ["grass", "beach", "street", "snow", "road", "floor", "sand", "hill"])][:n]
    toks = cp.tokenize("smoke", caps, TINY.context_length)                   # offline CLIP BPE
    return images, toks[:, None].expand(n, 5, -1).contiguous()             # 5 identical "captions" each


@pytest.mark.bf16
def test_infonce_learns_the_pairs_on_cnn_grid_tokens():
    model = tiny()
    _, toks = batch()
    grid = torch.randn(8, TINY.grid_tokens, TINY.grid_channels)           # cached CNN grid of 8 images
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    first = None
    for _ in range(40):
        loss, _ = cp.infonce_loss(model, {"grid": grid, "tokens": toks})
        first = first or loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.3 * first
    img, txt = cp.embed(model, grid, toks[:, 0])
    assert cp.recall_at_k(img, txt, torch.arange(8), ks=(1,))["t2i R@1"] == 100.0


def test_identical_captions_are_not_negatives():
    model = tiny()
    _, toks = batch(4)
    toks[2] = toks[0]                                                      # images 0 and 2: the same words
    grid = torch.randn(4, TINY.grid_tokens, TINY.grid_channels)
    loss, logs = cp.infonce_loss(model, {"grid": grid, "tokens": toks})
    assert torch.isfinite(loss) and logs["masked"] == pytest.approx(2 / 4)  # (0, 2) and (2, 0) masked
    _, logs = cp.infonce_loss(model, {"grid": grid, "tokens": batch(4)[1]})
    assert logs["masked"] == 0


def test_recall_at_k_counts_any_of_the_captions():
    img = torch.eye(3)
    txt = torch.tensor([[0, 1, 0], [1, 0, 0], [0, 0, 1], [0.9, 0.1, 0]])    # captions of images 0, 0, 2, 1
    r = cp.recall_at_k(img, txt, torch.tensor([0, 0, 2, 1]), ks=(1,))
    assert r["i2t R@1"] == pytest.approx(100 * 2 / 3)    # image 1's nearest caption belongs to image 0
    assert r["t2i R@1"] == pytest.approx(100 * 2 / 4)


def test_save_and_load_world_clip(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "RUNS", tmp_path)
    model = tiny().eval()
    with pytest.raises(FileNotFoundError, match="03_caption_clip"):
        cp.load_world_clip("smoke")
    cp.save_world_clip(model, TINY, "smoke", {"t2i R@1": 1.0})
    loaded = cp.load_world_clip("smoke")
    assert (tmp_path / "smoke" / "03" / "clip" / "model.safetensors").exists()
    assert not any(p.requires_grad for p in loaded.parameters())
    images, toks = batch(2)
    x = images.float() / 255
    assert torch.allclose(model.encode_image(x), loaded.encode_image(x), atol=1e-6)   # the CNN's weights too
    assert torch.allclose(model.encode_text(toks[:, 0]), loaded.encode_text(toks[:, 0]), atol=1e-5)


@pytest.mark.bf16
def test_grid_tokens_are_the_sequence_behind_the_pooled_embedding():
    model = tiny().eval()
    enc = encoders.GridViTTokens(model.visual, "tiny")
    images = torch.rand(2, 3, 64, 64)
    tokens = enc(images)                                                    # (B, 1 + 2×2, width)
    assert tokens.shape == (2, 5, 32)
    pooled = model.encode_image(images)
    assert torch.allclose(tokens[:, 0] @ model.visual.proj, pooled, atol=1e-5)  # CLS -> CLIP embedding
    grid = model.visual.grid(images)                                        # the cached path gives the same
    assert torch.allclose(model.encode_image(grid), pooled, atol=1e-5)


def test_the_cnn_stays_frozen_and_in_eval_mode():
    model = tiny().train()
    assert not model.visual.cnn.training
    assert not any(p.requires_grad for p in model.visual.cnn.parameters())
    assert all(p.requires_grad for n, p in model.visual.named_parameters() if not n.startswith("cnn."))


def test_paper_clip_architecture_on_meta_device():
    import open_clip
    with torch.device("meta"):
        visual = open_clip.create_model("ViT-B-32", pretrained=None, device="meta").visual
        tokens = encoders.ViTTokens(visual, "ViT-B-32")(torch.rand(2, 3, 224, 224))
    assert tokens.shape == (2, 50, 768)                                     # CLS + 7×7 patches, width 768


def test_paper_cnn_is_resnet18_grid_without_weights():
    enc = encoders.cnn_encoder("paper", pretrained=False)
    assert enc.name == "resnet18" and enc.channels == 512
    with torch.no_grad():
        assert enc(torch.rand(1, 3, 224, 224)).shape == (1, 49, 512)      # 7×7 grid -> 49 tokens
    assert not any(p.requires_grad for p in enc.parameters())


def test_paper_parameter_counts_on_meta():
    encoder, decoder = param_counts.paper_models("cnn", vocab_size=4000)
    assert sum(p.numel() for p in encoder.parameters()) == 11_176_512       # ResNet-18 conv layers
    assert decoder.cfg.n_layer == 6 and decoder.cfg.n_embd == 512
    assert next(decoder.parameters()).device.type == "meta"


def test_extra_scenes_come_from_another_world_seed_and_never_repeat_a_split_image():
    import dataclasses

    from mmlib import profiles
    from mmlib.captioning import xattn_experiment
    s = profiles.get("smoke").caption_clip.clip
    feats = xattn_experiment.features("smoke", "cnn")
    grid, toks, key = clip_step.extra_pairs("smoke", s, feats, s.context_length)
    assert s.extra_scenes > 0 and key["n"] == s.extra_scenes
    assert grid.shape == (s.extra_scenes, *feats.train.shape[1:])          # same CNN, same size as 02's grid
    assert toks.shape == (s.extra_scenes, 5, s.context_length)
    split = torch.cat([feats.train, feats.val]).flatten(1).float()
    assert torch.cdist(grid.flatten(1).float(), split).min() > 0            # no train or val image among them
    with pytest.raises(ValueError, match="validation"):
        clip_step.extra_pairs("smoke", dataclasses.replace(s, extra_seed=profiles.get("smoke").data.seed), feats,
                       s.context_length)
