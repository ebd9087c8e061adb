"""BLIP-2 stage 2: a Q-former's queries, projected into a frozen causal LLM, caption the image (row 4).

Li et al. 2023, https://arxiv.org/abs/2301.12597, section 3.3 and Fig. 3 (decoder-only LLM). The
Q-former (ours from stage 1 in cpu, Salesforce's pretrained one in paper) turns the frozen image
tokens into Q query vectors; a linear layer maps them to the LLM width; the LLM reads

    [prompt tokens] [Q projected queries] [caption tokens] [EOS]          (the study: prompt first)

and the loss is next-token cross-entropy on the caption tokens and the EOS only (labels of prompt,
query and padding positions are -100). The LLM is frozen (``requires_grad_(False)``): it gets no
optimizer state and ``train.fit`` never writes its weights (it saves only parameters that
require grad).

Defects of the study's code fixed here: its pad token was EOS and the padded positions were
masked out of the loss, so EOS was never a target and the model never learned to stop; here the
caption target ends with one EOS that IS a target, padding is masked out of attention and loss.
Decoding is transformers' ``generate`` on ``inputs_embeds`` (greedy or beam, repetition penalty,
max length, stop at EOS or at the first sentence end).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import Blip2Config
from transformers.models.blip_2.modeling_blip_2 import Blip2QFormerModel

from ... import device
from .model import QFormerConfig
from .pretrained import resolve

PROMPT = "Generate a simple short caption:"  # the study's prompt


@dataclass
class QFormerLLMConfig:
    qformer: dict                  # QFormerConfig fields of the query branch
    prompt: str = PROMPT
    max_caption_tokens: int = 24   # caption BPE tokens, EOS included


class QFormerLLM(nn.Module):
    """query_tokens + qformer (the query branch only; the same names as HF Blip2ForConditionalGeneration)
    + language_projection, feeding a frozen causal LM (``llm``)."""

    def __init__(self, cfg: QFormerLLMConfig, llm: nn.Module, tokenizer):
        super().__init__()
        self.cfg = cfg
        qcfg = QFormerConfig(**cfg.qformer)
        self.query_tokens = nn.Parameter(torch.randn(1, qcfg.num_queries, qcfg.hidden_size) * 0.02)
        self.qformer = Blip2QFormerModel(qcfg.hf(text_input=False))
        self.language_projection = nn.Linear(qcfg.hidden_size, llm.config.hidden_size)
        self.llm = llm.requires_grad_(False).eval()
        self.tokenizer = tokenizer
        self.eos_id = tokenizer.eos_token_id
        # a pad id distinct from EOS where the tokenizer has one (the study padded with EOS)
        self.pad_id = next((t for t in (tokenizer.pad_token_id, tokenizer.unk_token_id, 0)
                            if t is not None and t != self.eos_id), 0)
        self.register_buffer("prompt_ids", torch.tensor(tokenizer(cfg.prompt, add_special_tokens=False)["input_ids"]),
                             persistent=False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.llm.eval()   # frozen: no dropout either
        return self

    # --- inputs ------------------------------------------------------------------------------
    def encode_captions(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> ids (N, max_caption_tokens) = caption tokens + EOS, then pad; mask (N, ...) bool."""
        L = self.cfg.max_caption_tokens
        ids = torch.full((len(captions), L), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(captions), L, dtype=torch.bool)
        for i, toks in enumerate(self.tokenizer(captions, add_special_tokens=False)["input_ids"]):
            toks = toks[:L - 1] + [self.eos_id]          # EOS always kept: the model must learn to stop
            ids[i, :len(toks)] = torch.tensor(toks)
            mask[i, :len(toks)] = True
        return ids, mask

    def query_embeds(self, image: torch.Tensor) -> torch.Tensor:
        """image (B, N, d_image) -> projected queries (B, Q, D_llm)."""
        q = self.query_tokens.expand(image.size(0), -1, -1)
        h = self.qformer(query_embeds=q, encoder_hidden_states=image).last_hidden_state
        return self.language_projection(h)

    def prefix(self, image: torch.Tensor) -> torch.Tensor:
        """[prompt ; queries] embeddings (B, P+Q, D_llm)."""
        emb = self.llm.get_input_embeddings()
        q = self.query_embeds(image)
        p = emb(self.prompt_ids.to(image.device))[None].expand(image.size(0), -1, -1)
        return torch.cat([p.to(q.dtype), q], 1)

    def build_inputs(self, image: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor):
        """-> inputs_embeds (B, P+Q+T, D), attention_mask (B, P+Q+T), labels (B, P+Q+T): labels are the
        caption tokens and its EOS; prompt, query and padding positions are -100 (and padding is
        masked out of attention)."""
        pre = self.prefix(image)                                        # (B, P+Q, D)
        cap = self.llm.get_input_embeddings()(ids)                      # (B, T, D)
        x = torch.cat([pre, cap.to(pre.dtype)], 1)
        ones = torch.ones(pre.shape[:2], dtype=torch.long, device=ids.device)
        att = torch.cat([ones, mask.long()], 1)
        labels = torch.cat([ones * -100, ids.masked_fill(~mask, -100)], 1)
        return x, att, labels

    def forward(self, image: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Caption loss: image (B, N, d), ids/mask (B, T) from ``encode_captions`` -> scalar."""
        keep = int(mask.sum(1).max())              # trailing all-padding columns cost compute, not loss
        ids, mask = ids[:, :keep], mask[:, :keep]
        x, att, _ = self.build_inputs(image, ids, mask)
        # LM-head logits only where a caption token (or its EOS) is predicted: the last prefix position and
        # every caption position but the last; the frozen 49k-word head on the prompt/query positions was
        # a fifth of the step's compute
        logits = self.llm(inputs_embeds=x, attention_mask=att, logits_to_keep=keep + 1).logits[:, :-1].float()
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), ids.masked_fill(~mask, -100).reshape(-1),
                               ignore_index=-100)

    # --- decoding ------------------------------------------------------------------------------
    def sentence_end_ids(self) -> list[int]:
        """Token ids that are a full stop (" ." and "."): the optional second stopping rule."""
        ids = []
        for s in (" .", "."):
            t = self.tokenizer(s, add_special_tokens=False)["input_ids"]
            if len(t) == 1:
                ids.append(t[0])
        return ids

    @torch.no_grad()
    def generate_ids(self, image: torch.Tensor, num_beams: int = 3, max_new_tokens: int = 24,
                     repetition_penalty: float = 1.2, stop_at_sentence_end: bool = True) -> list[list[int]]:
        """image (B, N, d) -> generated token ids per image, up to and including the stop token."""
        pre = self.prefix(image.float())
        stop = [self.eos_id] + (self.sentence_end_ids() if stop_at_sentence_end else [])
        out = self.llm.generate(inputs_embeds=pre.to(self.llm.dtype),
                                attention_mask=torch.ones(pre.shape[:2], dtype=torch.long, device=pre.device),
                                max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                                repetition_penalty=repetition_penalty, eos_token_id=stop,
                                pad_token_id=self.pad_id, length_penalty=1.0)
        res = []
        for row in out.tolist():
            cut = next((i for i, t in enumerate(row) if t in stop), None)
            res.append(row if cut is None else row[:cut + 1])
        return res

    def decode(self, ids: list[int]) -> str:
        """Generated ids -> caption in Flickr8k form (stop tokens dropped, " ." ending)."""
        text = self.tokenizer.decode([t for t in ids if t not in (self.eos_id, self.pad_id)],
                                     skip_special_tokens=True).strip()
        text = re.sub(r"\s*\.$", "", text.splitlines()[0] if text else "").strip()
        return f"{text[:1].upper()}{text[1:]} ." if text else ""


def caption_loss(model: QFormerLLM, batch: dict) -> torch.Tensor:
    """``train.fit`` loss: batch {"image": (B, N, d), "ids", "mask": (B, T)}."""
    return model(batch["image"].float(), batch["ids"], batch["mask"])


def generate_captions(model: QFormerLLM, image: torch.Tensor, batch_size: int = 64, autocast: bool = True,
                      **kw) -> tuple[list[str], list[bool]]:
    """Captions for image features (N, n, d) and, per caption, whether it ended with the LLM's EOS
    (rather than a full stop or the length limit)."""
    model.eval()
    caps, eos = [], []
    for i in range(0, len(image), batch_size):
        with device.autocast(image.device, enabled=autocast):
            rows = model.generate_ids(device.as_compute(image[i:i + batch_size]), **kw)
        caps += [model.decode(r) for r in rows]
        eos += [bool(r) and r[-1] == model.eos_id for r in rows]
    return caps, eos


# ----------------------------------------------------------------------------- Q-former weights
_TEXT_FFN = re.compile(r"^qformer\.encoder\.layer\.\d+\.(intermediate|output)\.")


def query_branch_state(stage1: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The query branch of a stage-1 state dict (``query_tokens`` and ``qformer.*`` minus the text
    feed-forward blocks), i.e. what BLIP-2 keeps for stage 2 (LAVIS drops the text parts too)."""
    return {k: v for k, v in stage1.items()
            if (k == "query_tokens" or k.startswith("qformer.")) and not _TEXT_FFN.match(k)}


def load_query_branch(model: QFormerLLM, state: dict[str, torch.Tensor]) -> None:
    """Load ``query_tokens`` + ``qformer.*`` (ours from 04, or a BLIP-2 checkpoint's) strictly."""
    own = {k: v for k, v in model.state_dict().items() if k == "query_tokens" or k.startswith("qformer.")}
    state = query_branch_state(state)
    missing, extra = set(own) - set(state), set(state) - set(own)
    if missing or extra:
        raise ValueError(f"Q-former weights do not fit: missing {sorted(missing)[:4]}, unexpected {sorted(extra)[:4]}")
    model.load_state_dict(state, strict=False)


def blip2_qformer_config(name_or_path: str) -> dict:
    """QFormerConfig fields of a pretrained BLIP-2 checkpoint's Q-former (paper: Salesforce/blip2-opt-2.7b)."""
    c = Blip2Config.from_pretrained(resolve(name_or_path))
    q = c.qformer_config
    return dict(vocab_size=q.vocab_size, hidden_size=q.hidden_size, num_layers=q.num_hidden_layers,
                num_heads=q.num_attention_heads, intermediate_size=q.intermediate_size,
                num_queries=c.num_query_tokens, cross_attention_freq=q.cross_attention_frequency,
                d_image=q.encoder_hidden_size, max_text_len=q.max_position_embeddings,
                dropout=q.hidden_dropout_prob, pad_id=q.pad_token_id or 0)
