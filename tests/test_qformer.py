"""BLIP-2 stage 1 (mmlib/captioning/qformer/model.py): the attention masks of ITC / ITM / ITG, hard-negative
mining, agreement with a reference BERT, a tiny overfit that captions through [DEC], the paper loader."""
import pytest
import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

from mmlib.captioning.qformer.model import (
    QFormer,
    QFormerConfig,
    TextCodec,
    attention_mask,
    generate_captions,
    hard_negatives,
    init_from_text_encoder,
    qformer_loss,
)

WORDS = "a an the dog dogs man woman girl boy runs jumps on in grass water red blue two ball .".split()
CAPTIONS = ["A dog runs on the grass .", "Two men in red jump .", "A girl in the water .", "A blue ball on grass ."]


def tokenizer(tmp_path=None) -> BertTokenizerFast:
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "men", "jump"]
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True)


def tiny(codec: TextCodec, **kw) -> QFormer:
    torch.manual_seed(0)
    cfg = QFormerConfig(vocab_size=codec.vocab_size, hidden_size=32, num_layers=2, num_heads=2,
                        intermediate_size=64, num_queries=4, d_image=12, embed_dim=16, max_text_len=12,
                        dropout=0.0, pad_id=codec.pad_id, cls_id=codec.cls_id, eos_id=codec.eos_id, **kw)
    return QFormer(cfg).eval()


def setup(tmp_path):
    codec = TextCodec.build(tokenizer(tmp_path), CAPTIONS)
    ids, mask = codec.encode(CAPTIONS, 12)
    return codec, tiny(codec), ids, mask


def test_codec_roundtrip_and_dec_id(tmp_path):
    codec = TextCodec.build(tokenizer(tmp_path), CAPTIONS)
    ids, mask = codec.encode(CAPTIONS, 12)
    assert ids[0, 0] == codec.cls_id and codec.dec_id == codec.vocab_size - 1
    assert [codec.decode(r[m].tolist()) for r, m in zip(ids, mask)] == CAPTIONS


def test_itc_mask_is_unimodal(tmp_path):
    codec, m, ids, mask = setup(tmp_path)
    img = torch.randn(4, 5, 12)
    other = ids.roll(1, 0), mask.roll(1, 0)
    qa, ta = m.encode(img, ids, mask, "itc")
    qb, _ = m.encode(img, *other, "itc")
    assert torch.allclose(qa, qb, atol=1e-6)                   # queries never see the text
    _, tc = m.encode(torch.randn(4, 5, 12), ids, mask, "itc")
    assert torch.allclose(ta, tc, atol=1e-6)                   # text never sees the queries / image
    # the joint ITC pass gives the same text states as the text-only pass used for the ITC loss
    assert torch.allclose(ta[mask], m.text_only(ids, mask)[mask], atol=1e-5)


def test_itm_mask_is_bidirectional(tmp_path):
    codec, m, ids, mask = setup(tmp_path)
    img = torch.randn(4, 5, 12)
    qa, ta = m.encode(img, ids, mask, "itm")
    qb, _ = m.encode(img, ids.roll(1, 0), mask.roll(1, 0), "itm")
    _, tc = m.encode(torch.randn(4, 5, 12), ids, mask, "itm")
    assert (qa - qb).abs().max() > 1e-3                        # queries read the text
    assert (ta - tc).abs().max() > 1e-5                        # text reads the image (through the queries)


def test_itg_mask_is_causal_over_text_and_sees_all_queries(tmp_path):
    codec, m, ids, mask = setup(tmp_path)
    img = torch.randn(4, 5, 12)
    full = torch.ones_like(mask)
    b = ids.clone()
    b[:, 6:] = torch.randint(5, codec.vocab_size - 1, (4, 6))  # change only the future
    qa, ta = m.encode(img, ids, full, "itg")
    qb, tb = m.encode(img, b, full, "itg")
    la, lb = m.lm_logits(ta), m.lm_logits(tb)
    assert torch.allclose(la[:, :6], lb[:, :6], atol=1e-5) and not torch.allclose(la[:, 6:], lb[:, 6:], atol=1e-4)
    assert torch.allclose(qa, qb, atol=1e-6)                   # queries do not read the text in ITG
    _, tc = m.encode(torch.randn(4, 5, 12), ids, full, "itg")
    assert (ta[:, 0] - tc[:, 0]).abs().max() > 1e-5            # even the first text token sees the image


def test_mask_shapes_and_padding():
    tm = torch.tensor([[True, True, False]])
    for mode in ("itc", "itm", "itg"):
        a = attention_mask(mode, 2, tm)
        assert a.shape == (1, 1, 5, 5) and not a[0, 0, :, 4].any()  # nobody attends to padding
    itg = attention_mask("itg", 2, torch.ones(1, 3, dtype=torch.bool))[0, 0]
    assert itg[:2, 2:].sum() == 0 and itg[2:, :2].all() and torch.equal(itg[2:, 2:], torch.ones(3, 3).tril().bool())


def test_hard_negatives_are_never_positives():
    torch.manual_seed(0)
    ids = torch.tensor([0, 0, 1, 2, 2, 3, 4, 4])                 # repeated images: same-image captions are positives
    for _ in range(200):
        neg_img, neg_txt = hard_negatives(torch.randn(8, 8) * 5, ids)
        assert (ids[neg_img] != ids).all() and (ids[neg_txt] != ids).all()


def test_hard_negatives_follow_similarity():
    sim = torch.zeros(4, 4)
    sim[0, 3] = sim[3, 0] = 20.0                                # text 3 is most similar to image 0
    neg_img, neg_txt = hard_negatives(sim, torch.arange(4))
    assert neg_txt[0] == 3 and neg_img[0] == 3


def test_text_branch_matches_reference_bert_after_init(tmp_path):
    """Initialised from a BERT-family encoder, the Q-former's text-only pass IS that encoder."""
    codec, _, ids, mask = setup(tmp_path)
    torch.manual_seed(1)
    bert = BertModel(BertConfig(vocab_size=len(codec.tokenizer), hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=64, max_position_embeddings=12,
                                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).eval()
    m = tiny(codec)
    init_from_text_encoder(m, bert, codec)
    raw = codec.tokenizer(CAPTIONS, max_length=12, truncation=True, padding="max_length", return_tensors="pt")
    want = bert(input_ids=raw["input_ids"], attention_mask=raw["attention_mask"]).last_hidden_state
    got = m.text_only(ids, mask)
    assert torch.allclose(got[mask], want[mask], atol=1e-5)


def test_init_from_the_first_layers_of_a_deeper_encoder_is_that_truncated_encoder(tmp_path):
    """Row 4's Q-former copies the first k layers (DistilBERT-style): its text-only pass equals the
    encoder's hidden state after layer k."""
    codec, _, ids, mask = setup(tmp_path)
    torch.manual_seed(1)
    bert = BertModel(BertConfig(vocab_size=len(codec.tokenizer), hidden_size=32, num_hidden_layers=3,
                                num_attention_heads=2, intermediate_size=64, max_position_embeddings=12,
                                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)).eval()
    torch.manual_seed(0)
    m = QFormer(QFormerConfig(vocab_size=codec.vocab_size, hidden_size=32, num_layers=1, num_heads=2,
                              intermediate_size=64, num_queries=4, cross_attention_freq=1, d_image=12,
                              embed_dim=16, max_text_len=12, dropout=0.0, pad_id=codec.pad_id,
                              cls_id=codec.cls_id, eos_id=codec.eos_id)).eval()
    init_from_text_encoder(m, bert, codec)
    raw = codec.tokenizer(CAPTIONS, max_length=12, truncation=True, padding="max_length", return_tensors="pt")
    states = bert(input_ids=raw["input_ids"], attention_mask=raw["attention_mask"], output_hidden_states=True).hidden_states
    got = m.text_only(ids, mask)
    assert torch.allclose(got[mask], states[1][mask], atol=1e-5)
    assert not torch.allclose(got[mask], states[3][mask], atol=1e-3)


def test_mean_pooled_text_embedding_is_the_masked_mean_and_ignores_padding(tmp_path):
    """text_pool="mean" (row 4's MiniLM-initialised Q-former: the sentence encoder's own pooling) embeds
    the masked mean of the text states; "cls" the first state."""
    codec = TextCodec.build(tokenizer(tmp_path), CAPTIONS)
    ids, mask = codec.encode(CAPTIONS, 9)
    longer, longer_mask = codec.encode(CAPTIONS, 12)               # the same captions with more padding
    assert longer_mask.sum() == mask.sum()                          # nothing was cut at 9
    m = tiny(codec, text_pool="mean")
    h = m.text_only(ids, mask)
    want = torch.nn.functional.normalize(m.text_proj((h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)), dim=-1)
    assert torch.allclose(m.text_embeds(ids, mask), want, atol=1e-6)
    assert torch.allclose(m.text_embeds(longer, longer_mask), want, atol=1e-5)
    cls = tiny(codec)
    assert torch.allclose(cls.text_embeds(ids, mask),
                          torch.nn.functional.normalize(cls.text_proj(cls.text_only(ids, mask)[:, 0]), dim=-1))


@pytest.mark.bf16
def test_tiny_overfit_captions_through_dec_and_stops_at_eos(tmp_path):
    codec, m, ids, mask = setup(tmp_path)
    g = torch.Generator().manual_seed(0)
    img = torch.randn(4, 5, 12, generator=g)
    batch = {"image": img, "ids": ids, "mask": mask, "image_id": torch.arange(4)}
    m.train()
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss, logs = qformer_loss(m, batch)
        first = first or logs
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert logs["itg"] < first["itg"] / 3 and logs["itc"] < first["itc"] and logs["itm"] < first["itm"]
    for method in ("greedy", "beam"):
        assert generate_captions(m, codec, img, method=method, max_len=11) == CAPTIONS  # stopped at [SEP]


@pytest.mark.bf16
def test_kv_cached_steps_equal_the_joint_itg_pass(tmp_path):
    """Decoding with the cache (queries once, then one text token per step) gives the logits of one
    joint ITG pass over [queries ; prefix], and the same tokens as re-encoding the prefix every step."""
    from mmlib.captioning.decoding import Recompute, beam_search, greedy
    codec, m, ids, mask = setup(tmp_path)
    m.eval()
    img = torch.randn(3, 5, 12, generator=torch.Generator().manual_seed(1))
    prefix = ids[:3, :6].clone()
    prefix[:, 0] = codec.dec_id
    with torch.no_grad():
        joint = m.prefix_logits(img, prefix)                              # (3, 6, V)
        cache, steps = m.start(img), []
        for t in range(prefix.size(1)):
            logits, cache = m.step(prefix[:, t:t + 1], cache)
            steps.append(logits)
        torch.testing.assert_close(torch.cat(steps, 1), joint, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(m.step(prefix, m.start(img))[0], joint, atol=1e-5, rtol=1e-4)
        assert torch.equal(greedy(m, img, 10), greedy(Recompute(m), img, 10))
        assert torch.equal(beam_search(m, img, 3, 10), beam_search(Recompute(m), img, 3, 10))
