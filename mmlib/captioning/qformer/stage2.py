"""Notebook 05's steps: stage 2 of BLIP-2 for a profile (the LLM, the data, the training run), its
tables (Table 1 at paper sizes, Table 2 with every row run so far) and its results against the
retrieval baseline. The model and its loss live in :mod:`.llm`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from transformers.models.blip_2.configuration_blip_2 import Blip2VisionConfig
from transformers.models.blip_2.modeling_blip_2 import Blip2VisionModel

from ... import ckpt, pretrained, profiles, results, train
from ...nets import count_parameters
from ...paths import run_dir
from ...train import TrainConfig
from ..xattn_experiment import TABLE2_NOTE
from .llm import (
    PROMPT,
    QFormerLLM,
    QFormerLLMConfig,
    blip2_qformer_config,
    load_query_branch,
    query_branch_state,
)
from .model import QFormer, QFormerConfig
from .pretrained import load_blip2_state
from .stage1 import captions_per_image, study_row, table2_row, train_config


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
    (cpu/smoke: 04's pretrained one, section ``qformer_pretrained``); in paper the Q-former named in the
    profile is read from its checkpoint."""
    p = profiles.get(profile).qformer_llm
    split = feats.split
    idx, caps = captions_per_image(split.train, profiles.get(profile).qformer.captions_per_image)
    tok, llm = language_model(profile, caps + [PROMPT])
    if p.qformer == "04":
        qcfg, state, source = stage1.cfg.to_dict(), stage1.state_dict(), "04 (pretrained stage 1, world8k)"
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


def val_loss_on(feats, n: int, batch_size: int):
    """Early stopping's validation loss: the caption loss on the first caption of the first ``n``
    validation images (never trained on), averaged over caption tokens, in batches."""
    images = feats.val[:n]
    caps = [refs[0] for _, refs in feats.split.val[:n]]
    encoded = {}                                     # the captions' token ids, encoded at the first evaluation

    def val_loss(model: QFormerLLM) -> float:
        if not encoded:
            encoded["ids"], encoded["mask"] = model.encode_captions(caps)
        ids, mask = encoded["ids"], encoded["mask"]
        total = count = 0.0
        for i in range(0, len(caps), batch_size):
            m = mask[i:i + batch_size]
            tokens = float(m.sum())
            total += float(model(images[i:i + batch_size].float(), ids[i:i + batch_size], m)) * tokens
            count += tokens
        return total / count
    return val_loss


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
    qformer: str                     # "04" (04's pretrained stage 1, section qformer_pretrained) or a BLIP-2 checkpoint (paper)
    llm: str                         # "tiny" (a random Llama written here, smoke) or "causal_lm" (mmlib.pretrained)
    max_caption_tokens: int
    train: TrainConfig               # train.fit's run: steps, batch, lr, warm-up, weight decay, seed (also the init's)
    num_beams: int                   # decoding of the reported captions
    max_new_tokens: int
    repetition_penalty: float
    n_val: int | None                # validation images scored (None: all)
    n_figure: int
    n_val_loss: int                  # early stopping: validation images (first caption) of the validation loss


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
    p = profiles.get(profile).qformer_llm
    fit = train.fit(model, loss_on(feats.train), tensors, cfg, run_dir(profile, "05"),
                    {**key, "n_val_loss": p.n_val_loss}, progress=progress, restart=retrain,
                    val_loss=val_loss_on(feats, p.n_val_loss, cfg.batch_size))
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


def save_table2(profile: str, scores: dict, retrieval: dict, ceiling: dict, llm_name: str) -> tuple[list[dict], dict]:
    """Table 2 of the study with every row this profile has run (02-05's saved scores), the retrieval
    baseline, the human ceiling and the study's rows 3-4 (``05_table2``), the named scores
    (``05_scores``) and whether the study's ordering holds (``05_ordering``). Returns (rows, ordering)."""
    earlier = {r: (results.load(profile, f"0{r}_scores", default=None) or {}).get("model") for r in (2, 3, 4)}
    labels = {1: "row 1: CNN grid + cross-attn decoder (02)", 2: "row 2: CLIP tokens + cross-attn decoder (03)",
              3: "row 3: Q-former from scratch, [DEC] (04)", 4: f"row 4: Q-former + frozen {llm_name} (05)"}
    by_row = {1: earlier[2], 2: earlier[3], 3: earlier[4], 4: scores}
    rows = [table2_row(profile, labels[r], s) for r, s in by_row.items() if s is not None]
    rows += [table2_row(profile, "retrieval baseline (nearest image feature)", retrieval),
             table2_row(profile, "human ceiling (leave-one-out)", ceiling), study_row(3), study_row(4)]
    results.save_table(profile, "05_table2", rows, formats={c: ".1f" for c in rows[0] if c not in ("model", "profile / data")},
                       note=TABLE2_NOTE)
    order = ordering(by_row)
    results.save(profile, "05_scores", {"model": scores, "retrieval": retrieval, "ceiling": ceiling})
    results.save(profile, "05_ordering", order)
    return rows, order


def save_table1(profile: str, feats, row3, model, total: int, trainable: int) -> list[dict]:
    """Table 1 rows 3-4 (``05_table1``): parameters of this profile's models (``row3``: 04's scratch
    Q-former, None when row 4's Q-former is not 04's; ``model``: row 4 with ``total`` / ``trainable``
    parameters) beside the paper sizes counted on the meta device; ``05_paper_params`` keeps the paper
    counts."""
    rows, paper_params = paper_parameter_counts()
    results.save(profile, "05_paper_params", paper_params)
    if row3 is not None:
        t3, tr3 = count_parameters(row3)
        ours = [{"row": 3, "image encoder": f"{feats.encoder} (frozen)", "text side": "Q-former (scratch, [DEC])",
                 "total (M)": (feats.encoder_params + t3) / 1e6, "trainable (M)": tr3 / 1e6},
                {"row": 4, "image encoder": f"{feats.encoder} (frozen)",
                 "text side": f"Q-former + {type(model.llm).__name__} (frozen)",
                 "total (M)": (feats.encoder_params + total) / 1e6, "trainable (M)": trainable / 1e6}]
        rows = ours + rows
    for r in rows:
        r.setdefault("study total (M)", None)
        r.setdefault("study trainable (M)", None)
        r["sizes"] = "paper (meta device)" if r["image encoder"].startswith("EVA") else f"{profile} (instantiated)"
    columns = ["row", "sizes", "image encoder", "text side", "total (M)", "trainable (M)", "study total (M)",
               "study trainable (M)"]
    results.save_table(profile, "05_table1", rows, columns=columns, formats={c: ".1f" for c in columns[4:]})
    return rows
