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
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, Blip2Config, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.models.blip_2.configuration_blip_2 import Blip2VisionConfig
from transformers.models.blip_2.modeling_blip_2 import Blip2QFormerModel, Blip2VisionModel

from .. import ckpt, device, pretrained, profiles, train
from ..nets import count_parameters
from ..paths import run_dir
from ..train import TrainConfig
from .blip2_experiment import captions_per_image, train_config
from .blip2_weights import load_blip2_state
from .qformer import QFormer, QFormerConfig

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
    c = Blip2Config.from_pretrained(name_or_path)
    q = c.qformer_config
    return dict(vocab_size=q.vocab_size, hidden_size=q.hidden_size, num_layers=q.num_hidden_layers,
                num_heads=q.num_attention_heads, intermediate_size=q.intermediate_size,
                num_queries=c.num_query_tokens, cross_attention_freq=q.cross_attention_frequency,
                d_image=q.encoder_hidden_size, max_text_len=q.max_position_embeddings,
                dropout=q.hidden_dropout_prob, pad_id=q.pad_token_id or 0)


# ----------------------------------------------------------------------------- profile -> data and model
def tiny_causal_lm(texts: list[str], folder: Path, hidden: int = 64, steps: int = 15, n_pretrain: int = 32):
    """smoke's stand-in for the LLM: a word-level tokenizer over ``texts`` and a 2-layer
    LlamaForCausalLM "pretrained" for ``steps`` full-batch steps on the first ``n_pretrain`` texts
    + EOS, plus the last text (the prompt) (a random LM
    ignores its prefix, so no soft prompt could steer it), written with ``save_pretrained`` and read
    back (the loader path of the real one)."""
    folder = Path(folder)
    if not (folder / "config.json").exists():
        words = sorted({w for t in texts for w in t.split()})
        vocab = {w: i for i, w in enumerate(["<pad>", "<eos>", "<unk>", *words])}
        tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        tk.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="removed")
        tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")
        torch.manual_seed(0)
        llm = LlamaForCausalLM(LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden,
                                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                                           max_position_embeddings=128, pad_token_id=0, bos_token_id=1,
                                           eos_token_id=1))
        sample = texts[:n_pretrain] + texts[-1:] if len(texts) > n_pretrain else texts
        enc = tok([t + " <eos>" for t in sample], padding=True, return_tensors="pt")
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        opt = torch.optim.AdamW(llm.parameters(), lr=1e-2)
        for _ in range(steps):
            loss = llm(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        tmp = folder.with_name(folder.name + ".tmp")
        tok.save_pretrained(tmp)
        llm.save_pretrained(tmp)
        tmp.rename(folder)
    tok = PreTrainedTokenizerFast.from_pretrained(folder)
    return tok, AutoModelForCausalLM.from_pretrained(folder).requires_grad_(False).eval()


def language_model(profile: str, texts: list[str]):
    """(tokenizer, frozen causal LM) of a profile: SmolLM2-135M-Instruct (cpu), TinyLlama-1.1B-Chat
    (paper), or the tiny stand-in (smoke)."""
    if profiles.get(profile).qformer_llm.llm == "tiny":
        return tiny_causal_lm(texts, run_dir(profile, "05") / "tiny-llama")
    return pretrained.causal_lm(profile)


def build(profile: str, feats, stage1=None):
    """Model, training tensors and checkpoint key of stage 2. ``stage1``: the trained stage-1 QFormer
    (cpu/smoke: 04's); in paper the Q-former named in the profile is read from its checkpoint."""
    p = profiles.get(profile).qformer_llm
    split = feats.split
    idx, caps = captions_per_image(split.train, profiles.get(profile).qformer.captions_per_image)
    tok, llm = language_model(profile, caps + [PROMPT])
    if p.qformer == "04":
        qcfg, state, source = stage1.cfg.to_dict(), stage1.state_dict(), "04 (stage 1, world8k)"
    else:
        qcfg, state, source = blip2_qformer_config(p.qformer), load_blip2_state(p.qformer, ("query_tokens", "qformer.")), p.qformer
    torch.manual_seed(p.train.seed)
    model = QFormerLLM(QFormerLLMConfig(qformer=qcfg, max_caption_tokens=p.max_caption_tokens), llm, tok)
    load_query_branch(model, state)
    ids, mask = model.encode_captions(caps)
    key = {"qformer": qcfg, "qformer_source": source,
           "qformer_weights": float(sum(v.double().sum() for v in query_branch_state(state).values())),
           "llm": type(llm).__name__ + f"/{llm.config.hidden_size}x{llm.config.num_hidden_layers}/{len(tok)}",
           "prompt": PROMPT, "max_caption_tokens": p.max_caption_tokens, "n_train": len(split.train),
           "features": feats.key}
    return model, {"ids": ids, "mask": mask, "image_id": torch.tensor(idx)}, key


def loss_on(feats: torch.Tensor):
    """``caption_loss`` reading image tokens from a bank by ``image_id``."""
    def loss_fn(model: QFormerLLM, batch: dict):
        return model(feats[batch["image_id"]].float(), batch["ids"], batch["mask"])
    return loss_fn


# ----------------------------------------------------------------------------- Table 1 at paper sizes
TINYLLAMA = dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                 num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
                 tie_word_embeddings=False)   # TinyLlama/TinyLlama-1.1B-Chat-v1.0 config.json
SEED_TABLE1 = {3: (1121e6, 110e6), 4: (2274e6, 188.3e6)}   # the study's total / trainable


def paper_parameter_counts() -> tuple[list[dict], dict[str, float]]:
    """Rows 3–4 of Table 1 at the study's sizes, built on the meta device (no weights, no download):
    EVA ViT-g/14 (frozen) + our stage-1 Q-former (BERT-base sizes, 32 queries, bert-base-uncased
    vocabulary + [DEC]); EVA ViT-g/14 + BLIP-2's stage-2 Q-former (query branch) + projection +
    TinyLlama-1.1B (frozen). Returns the table rows and a summary in millions."""

    class _Tok:   # just enough tokenizer for the constructor
        eos_token_id, pad_token_id, unk_token_id = 2, 0, 0

        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [1] * len(text.split())}

    with torch.device("meta"):
        vit = Blip2VisionModel(Blip2VisionConfig()).requires_grad_(False)
        q3 = QFormer(QFormerConfig(vocab_size=30522 + 1))
        llm = LlamaForCausalLM(LlamaConfig(**TINYLLAMA))
        q4 = QFormerLLM(QFormerLLMConfig(qformer=QFormerConfig(vocab_size=30522).to_dict()), llm, _Tok())
    v, _ = count_parameters(vit)
    t3, tr3 = count_parameters(q3)
    t4, tr4 = count_parameters(q4)
    summary = {"vit_M": v / 1e6, "llm_M": count_parameters(llm)[0] / 1e6,
                                      "row3_total_M": (v + t3) / 1e6, "row3_trainable_M": tr3 / 1e6,
                                      "row4_total_M": (v + t4) / 1e6, "row4_trainable_M": tr4 / 1e6}
    rows = []
    for row, (total, trainable, text) in {3: (v + t3, tr3, "Q-former (BERT-base, ITG [DEC] head)"),
                                          4: (v + t4, tr4, "Q-former + TinyLlama-1.1B (frozen)")}.items():
        rows.append({"row": row, "image encoder": "EVA ViT-g/14 (frozen)", "text side": text,
                     "total (M)": total / 1e6, "trainable (M)": trainable / 1e6,
                     "study total (M)": SEED_TABLE1[row][0] / 1e6, "study trainable (M)": SEED_TABLE1[row][1] / 1e6})
    return rows, summary


@dataclass(frozen=True)
class QFormerLLMSettings:
    """Profile section ``qformer_llm`` (05): stage 2 over a frozen causal LLM, its training and decoding."""
    qformer: str                     # "04" (04's trained stage 1) or a BLIP-2 checkpoint (paper)
    llm: str                         # "tiny" (a random Llama written here, smoke) or "causal_lm" (mmlib.pretrained)
    max_caption_tokens: int
    train: TrainConfig               # train.fit's run: steps, batch, lr, warm-up, weight decay, seed (also the init's)
    num_beams: int                   # decoding of the reported captions
    max_new_tokens: int
    repetition_penalty: float
    n_val: int | None                # validation images scored (None: all)
    n_figure: int


def vs_baseline(scores: dict, baseline: dict, captions: list[str]) -> dict:
    """Row 4 against the retrieval baseline (a result, recorded as ``05_vs_baseline``): whether it beats it
    on BLEU-4 and CIDEr-D, and how many distinct captions it writes (a collapse shows as few)."""
    return {"beats_retrieval_baseline": scores["BLEU-4"] > baseline["BLEU-4"] and scores["CIDEr-D"] > baseline["CIDEr-D"],
            "distinct_captions": len(set(captions)), "n": len(captions)}


# ----------------------------------------------------------------------------- notebook 05 steps
def train_stage2(profile: str, feats, stage1=None, retrain: bool = False, progress: bool = True):
    """Build and train (or reload) stage 2 -> (model, FitResult). Only the Q-former's query branch and
    the projection train; ``train.fit`` checkpoints only those (the LLM requires no grad)."""
    model, tensors, key = build(profile, feats, stage1)
    cfg = train_config(profile, "qformer_llm")
    fit = train.fit(model, loss_on(feats.train), tensors, cfg, run_dir(profile, "05"), key, progress=progress,
                    restart=retrain)
    return model.eval(), fit


def checkpoint_names(fit) -> list[str]:
    """Tensor names in the last checkpoint of a run (to show that the LLM is not among them)."""
    return sorted(ckpt.load_checkpoint(ckpt.checkpoints(fit.train_dir)[-1])["weights"])


def ordering(scores: dict[int, dict[str, float]]) -> dict:
    """Does the study's ordering row 4 > row 3 > rows 1–2 hold on every seed-mode BLEU?"""
    out = {}
    for i in range(1, 5):
        k = f"seed BLEU-{i}"
        s = {r: scores[r][k] for r in scores if scores[r] is not None}
        ok = all(r in s for r in (1, 2, 3, 4)) and s[4] > s[3] > max(s[1], s[2])
        out[f"BLEU-{i}"] = {"holds": ok, **{f"row {r}": v for r, v in sorted(s.items())}}
    out["holds_on_every_BLEU"] = all(v["holds"] for v in out.values())
    return out
