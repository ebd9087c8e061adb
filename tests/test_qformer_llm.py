"""BLIP-2 stage 2 (mmlib/captioning/qformer/llm.py): loss only on caption + EOS, the LLM frozen and absent
from checkpoints, padding inert, generation stopping at EOS, Q-former weights from stage 1 or a BLIP-2
checkpoint (tiny stand-ins written with save_pretrained)."""
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from mmlib import ckpt, train
from mmlib.captioning.qformer.pretrained import blip2_vision, load_blip2_state
from mmlib.captioning.qformer.stage2 import tiny_causal_lm
from mmlib.captioning.qformer.model import QFormer, QFormerConfig
from mmlib.captioning.qformer.llm import (
    QFormerLLM,
    QFormerLLMConfig,
    blip2_qformer_config,
    caption_loss,
    load_query_branch,
)

WORDS = "a dog runs on the grass two men jump girl in water blue ball . generate simple short caption :".split()
CAPTIONS = ["A dog runs on the grass .", "Two men jump .", "A girl in the water .", "A blue ball ."]
QCFG = dict(vocab_size=30, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, num_queries=4,
            d_image=12, embed_dim=16, max_text_len=12, dropout=0.0)


def tokenizer() -> PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>", *WORDS, "A", "Two", "Generate"])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="removed")
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>", pad_token="<eos>", unk_token="<unk>")


def tiny_llm(vocab: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                                        pad_token_id=0, eos_token_id=1, bos_token_id=1))


def tiny(**kw) -> QFormerLLM:
    tok = tokenizer()
    torch.manual_seed(0)
    return QFormerLLM(QFormerLLMConfig(qformer=QCFG, prompt="Generate simple short caption :",
                                       max_caption_tokens=10, **kw), tiny_llm(len(tok)), tok)


def test_labels_cover_caption_and_eos_only_and_pad_is_not_eos():
    m = tiny()
    assert m.pad_id != m.eos_id                     # the study padded with EOS: EOS never became a target
    ids, mask = m.encode_captions(CAPTIONS)
    x, att, labels = m.build_inputs(torch.randn(4, 5, 12), ids, mask)
    P, Q = len(m.prompt_ids), 4
    assert x.shape[1] == P + Q + 10 and (labels[:, :P + Q] == -100).all()
    cap = labels[:, P + Q:]
    assert torch.equal(cap[mask], ids[mask]) and (cap[~mask] == -100).all() and (att[:, P + Q:].bool() == mask).all()
    assert ((cap == m.eos_id).sum(1) == 1).all()    # exactly one EOS target per caption, at its end
    assert [m.decode(r[k].tolist()) for r, k in zip(ids, mask)] == CAPTIONS


def test_padding_is_inert():
    m = tiny().eval()
    img = torch.randn(4, 5, 12)
    ids, mask = m.encode_captions(CAPTIONS)
    longer = torch.cat([ids, torch.full((4, 6), 7)], 1), torch.cat([mask, torch.zeros(4, 6, dtype=torch.bool)], 1)
    assert torch.allclose(m(img, ids, mask), m(img, *longer), atol=1e-5)


def test_loss_equals_full_sequence_cross_entropy():
    """forward() trims padding columns and keeps only the caption logits: same loss as the plain recipe
    (all logits, labels from build_inputs, shifted by one)."""
    import torch.nn.functional as F
    m = tiny().eval()
    img = torch.randn(4, 5, 12)
    ids, mask = m.encode_captions(CAPTIONS)
    x, att, labels = m.build_inputs(img, ids, mask)
    logits = m.llm(inputs_embeds=x, attention_mask=att).logits[:, :-1]
    ref = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(m(img, ids, mask), ref, atol=1e-5)


@pytest.mark.bf16
def test_llm_frozen_and_absent_from_checkpoint(tmp_path):
    m = tiny()
    before = {k: v.clone() for k, v in m.llm.state_dict().items()}
    ids, mask = m.encode_captions(CAPTIONS)
    data = {"image": torch.randn(4, 5, 12), "ids": ids, "mask": mask}
    cfg = train.TrainConfig(steps=3, batch_size=2, lr=1e-2, log_every=1)
    res = train.fit(m, caption_loss, data, cfg, tmp_path, key={"t": 1}, progress=False)
    state = ckpt.load_checkpoint(ckpt.checkpoints(res.train_dir)[-1])
    assert state["weights"] and not any(k.startswith("llm.") for k in state["weights"])
    assert set(state["weights"]) == {n for n, p in m.named_parameters() if p.requires_grad}
    assert len(state["optimizer"]["state"]) == len(state["weights"])   # no optimizer state for the LLM
    assert all(torch.equal(before[k], v) for k, v in m.llm.state_dict().items())
    assert not torch.equal(state["weights"]["query_tokens"], tiny().query_tokens)  # the Q-former did train


@pytest.mark.bf16
def test_tiny_overfit_learns_to_stop_at_eos(tmp_path):
    """With smoke's stand-in LLM (a tiny Llama pretrained on the captions, then frozen), training only the
    Q-former + projection brings the caption loss down and decoding emits whole captions that end at EOS
    (greedy, no sentence-end rule) or at EOS / the full stop (beam)."""
    prompt = "Generate simple short caption :"
    tok, llm = tiny_causal_lm(CAPTIONS + [prompt], tmp_path / "llm", hidden=32, steps=40)
    torch.manual_seed(0)
    m = QFormerLLM(QFormerLLMConfig(qformer=QCFG, prompt=prompt, max_caption_tokens=10), llm, tok)
    img = torch.randn(4, 5, 12, generator=torch.Generator().manual_seed(0))
    ids, mask = m.encode_captions(CAPTIONS)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    m.train()
    losses = []
    for _ in range(40):
        loss = m(img, ids, mask)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < losses[0] / 2
    m.eval()
    rows = m.generate_ids(img, num_beams=1, max_new_tokens=12, repetition_penalty=1.0, stop_at_sentence_end=False)
    assert all(r[-1] == m.eos_id and m.eos_id not in r[:-1] for r in rows)  # stopped at EOS, nothing after it
    assert all(m.decode(r) in CAPTIONS for r in rows)
    beam = m.generate_ids(img, num_beams=3, max_new_tokens=12, repetition_penalty=1.0, stop_at_sentence_end=True)
    assert all(r[-1] in m.sentence_end_ids() + [m.eos_id] and len(r) < 12 for r in beam)


def test_query_branch_loads_from_stage1():
    torch.manual_seed(3)
    stage1 = QFormer(QFormerConfig(**QCFG)).eval()
    m = tiny().eval()
    load_query_branch(m, stage1.state_dict())
    img = torch.randn(2, 5, 12)
    q = m.qformer(query_embeds=m.query_tokens.expand(2, -1, -1), encoder_hidden_states=img).last_hidden_state
    assert torch.allclose(q, stage1.encode(img, None, None, "itc")[0], atol=1e-6)


def test_paper_blip2_loader_with_tiny_stand_in(tmp_path):
    """The paper path reads Salesforce/blip2-opt-2.7b by name; here a tiny Blip2 saved the same way."""
    from transformers import Blip2Config, Blip2ForConditionalGeneration, OPTConfig
    from transformers.models.blip_2.configuration_blip_2 import Blip2QFormerConfig, Blip2VisionConfig
    torch.manual_seed(0)
    cfg = Blip2Config(vision_config=Blip2VisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                                      num_attention_heads=2, image_size=28, patch_size=14).to_dict(),
                      qformer_config=Blip2QFormerConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2,
                                                        num_attention_heads=2, intermediate_size=64,
                                                        encoder_hidden_size=16).to_dict(),
                      text_config=OPTConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, ffn_dim=32,
                                            num_attention_heads=2, word_embed_proj_dim=16).to_dict(),
                      num_query_tokens=4)
    hf = Blip2ForConditionalGeneration(cfg).eval()
    hf.save_pretrained(tmp_path)
    state = load_blip2_state(str(tmp_path))
    assert state and not any(k.startswith("language_model") for k in state)
    vis = blip2_vision(str(tmp_path))
    px = torch.randn(2, 3, 28, 28)
    img = vis(pixel_values=px).last_hidden_state
    assert torch.allclose(img, hf.vision_model(pixel_values=px).last_hidden_state, atol=1e-6)
    tok = tokenizer()
    qcfg = {**blip2_qformer_config(str(tmp_path)), "dropout": 0.0}
    m = QFormerLLM(QFormerLLMConfig(qformer=qcfg), tiny_llm(len(tok)), tok).eval()
    load_query_branch(m, state)
    ours = m.qformer(query_embeds=m.query_tokens.expand(2, -1, -1), encoder_hidden_states=img).last_hidden_state
    want = hf.qformer(query_embeds=hf.query_tokens.expand(2, -1, -1), encoder_hidden_states=img).last_hidden_state
    assert torch.allclose(ours, want, atol=1e-6)
