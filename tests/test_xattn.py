"""Invariants of the cross-attention captioner (mmlib/captioning/xattn.py)."""
import pytest
import torch

from mmlib.captioning.vocab import Vocab
from mmlib.captioning.xattn import XAttnCaptioner, XAttnConfig
from mmlib.nets import count_parameters


def tiny(**kw) -> XAttnCaptioner:
    torch.manual_seed(0)
    cfg = XAttnConfig(vocab_size=kw.pop("vocab_size", 23), d_image=12, n_image_tokens=5, n_layer=2, n_head=2,
                      n_embd=16, d_ff=32, dropout=0.0, block_size=12, **kw)
    return XAttnCaptioner(cfg).eval()


def test_causal_mask_future_tokens_do_not_change_past_logits():
    m = tiny()
    img = torch.randn(3, 5, 12)
    a = torch.randint(4, 23, (3, 8))
    b = a.clone()
    b[:, 5:] = torch.randint(4, 23, (3, 3))      # change only the future
    la, lb = m(img, a), m(img, b)
    assert torch.allclose(la[:, :5], lb[:, :5], atol=1e-6)
    assert not torch.allclose(la[:, 5:], lb[:, 5:])


def test_image_conditions_every_position():
    m = tiny()
    toks = torch.randint(4, 23, (2, 6))
    assert not torch.allclose(m(torch.randn(2, 5, 12), toks), m(torch.randn(2, 5, 12), toks))


@pytest.mark.bf16
def test_incremental_steps_equal_full_forward():
    m = tiny().double()
    img, toks = torch.randn(2, 5, 12, dtype=torch.float64), torch.randint(4, 23, (2, 7))
    full = m(img, toks)
    cache, parts = m.start(img), []
    for t in range(7):
        logits, cache = m.step(toks[:, t:t + 1], cache)
        parts.append(logits)
    assert torch.allclose(torch.cat(parts, 1), full, atol=1e-10)
    cache = m.start(img)                      # a multi-token step after a cached prefix
    _, cache = m.step(toks[:, :3], cache)
    logits, _ = m.step(toks[:, 3:], cache)
    assert torch.allclose(logits, full[:, 3:], atol=1e-10)


def test_cross_attention_maps_are_distributions_over_image_tokens():
    m = tiny()
    maps = m.cross_attention_maps(torch.randn(2, 5, 12), torch.randint(4, 23, (2, 6)))
    assert maps.shape == (2, 6, 5)
    assert torch.allclose(maps.sum(-1), torch.ones(2, 6), atol=1e-5)


def test_tied_weights_counted_once():
    m = tiny()
    total, trainable = count_parameters(m)
    assert total == trainable == sum(p.numel() for p in set(m.parameters()))
    assert m.head.weight is m.tok_emb.weight


@pytest.mark.bf16
def test_tiny_overfit_reaches_near_zero_loss():
    caps = ["a red ball on grass", "two dogs run on the beach", "a man rides a blue bike", "snow on a house"]
    vocab = Vocab.build(caps)
    m = tiny(vocab_size=len(vocab)).train()
    img, toks = torch.randn(4, 5, 12), vocab.encode_batch(caps, 12)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    for _ in range(120):
        loss = m.loss(img, toks)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.02, loss.item()
