"""KV-cached decoding equals naive recomputation; EOS stops and pads (mmlib/captioning/decoding.py)."""
import pytest
import torch

from mmlib.captioning.decoding import Recompute, beam_search, generate, greedy, strip
from mmlib.captioning.xattn import XAttnCaptioner, XAttnConfig


def model(seed=0, vocab=30) -> XAttnCaptioner:
    torch.manual_seed(seed)
    cfg = XAttnConfig(vocab_size=vocab, d_image=8, n_image_tokens=4, n_layer=2, n_head=2, n_embd=16, d_ff=32,
                      dropout=0.0, block_size=16)
    return XAttnCaptioner(cfg).double().eval()


def test_greedy_cached_equals_recompute():
    m = model()
    mem = torch.randn(6, 4, 8, dtype=torch.float64)
    assert torch.equal(greedy(m, mem, 12), greedy(Recompute(m), mem, 12))


@pytest.mark.bf16
def test_beam_cached_equals_recompute():
    for beam in (3, 5):
        m = model(seed=beam)
        mem = torch.randn(5, 4, 8, dtype=torch.float64)
        assert torch.equal(beam_search(m, mem, beam, 12), beam_search(Recompute(m), mem, beam, 12))


def test_beam_1_equals_greedy():
    m = model(seed=3)
    mem = torch.randn(4, 4, 8, dtype=torch.float64)
    g, b = greedy(m, mem, 12), beam_search(m, mem, 1, 12)
    assert strip(g, m.eos_id, m.pad_id) == strip(b, m.eos_id, m.pad_id)


def eos_biased(m: XAttnCaptioner, bias: float) -> XAttnCaptioner:
    with torch.no_grad():                    # make EOS likely so sequences end at various lengths
        m.ln_f.bias.zero_()

    m.head.register_forward_hook(lambda mod, inp, out: out + torch.nn.functional.one_hot(
        torch.tensor(m.eos_id), out.size(-1)).to(out.dtype) * bias)
    return m


def test_eos_stops_and_pads():
    m = eos_biased(model(seed=1), bias=0.25)
    mem = torch.randn(16, 4, 8, dtype=torch.float64)
    for toks in (greedy(m, mem, 14), beam_search(m, mem, 3, 14)):
        ended = (toks == m.eos_id)
        assert ended.any()
        for row in toks.tolist():
            if m.eos_id in row:
                i = row.index(m.eos_id)
                assert all(t == m.pad_id for t in row[i + 1:]), row   # PAD after EOS, never words
            assert m.bos_id not in row
        assert not ((toks == m.pad_id).all(0)).any()                  # stopped when all had ended
    strong = eos_biased(model(seed=1), bias=100.0)                      # EOS first -> empty captions, 1 step
    out = greedy(strong, mem, 14)
    assert out.shape == (16, 1) and (out == strong.eos_id).all()


@pytest.mark.bf16
def test_generate_batches_consistently():
    m = model(seed=2)
    mem = torch.randn(7, 4, 8, dtype=torch.float64)
    assert generate(m, mem, "beam", 3, 12, batch_size=3) == generate(m, mem, "beam", 3, 12, batch_size=7)
