"""BLIP-2 stage 1: a Q-former trained with ITC + ITM + ITG over a frozen image encoder (row 3).

Li et al. 2023, "BLIP-2: Bootstrapping Language-Image Pre-training with Frozen Image Encoders and
Large Language Models", https://arxiv.org/abs/2301.12597 (section 3.2, Fig. 2); the reference code
is LAVIS ``blip2_qformer.py``. A BERT-style transformer reads Q learned query vectors and a caption
in ONE sequence ``[queries ; text]``. Self-attention is shared by both; every ``cross_attention_freq``
-th layer the queries (only they) cross-attend to the frozen image tokens; queries and text have
their own feed-forward blocks. What each loss may see is set by the self-attention mask alone:

    ITC  queries <-> queries, text <-> text (unimodal)     s(I, T) = max_q z_q . t / tau   (eq. 1)
    ITM  everything <-> everything (bidirectional)         p(match) = mean_q softmax(head(z_q))
    ITG  queries <-> queries; text -> queries + earlier text (causal); first text token [DEC]

ITC uses in-batch negatives (captions of the same image count as positives), a learnable
temperature ``tau``; ITM mines one hard negative image per text and one hard negative text per
image, sampled from the ITC similarities; the loss is the plain sum ``itc + itm + itg``.
Captions are generated autoregressively through the ITG branch (``[DEC]`` ... ``[SEP]``) with the
greedy / beam decoders of :mod:`mmlib.captioning.decoding`.

The layers are transformers' ``Blip2QFormerModel`` (BERT layers + cross-attention every other
layer + separate query/text feed-forwards); its parameter names match the pretrained BLIP-2
checkpoints (``query_tokens``, ``qformer.*``) so stage 2 (:mod:`.llm`) can load either
ours or Salesforce's. HF has no stage-1 losses; those are here.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import Blip2QFormerConfig
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.blip_2.modeling_blip_2 import Blip2QFormerModel, Blip2TextEmbeddings, eager_attention_forward

from ..decoding import generate


# ----------------------------------------------------------------------------- text side
@dataclass
class TextCodec:
    """The WordPiece tokenizer's ids mapped to a compact vocabulary (ids seen in the training
    captions + specials), plus one extra id for [DEC]. On world8k this turns 30,522 outputs into a
    few hundred, which is most of the softmax cost on a CPU; ``subset=False`` keeps all ids
    (paper: bert-base-uncased, as BLIP-2)."""

    tokenizer: object = field(repr=False)
    keep: list[int]                      # tokenizer id of each compact id

    def __post_init__(self):
        self.to_compact = {t: i for i, t in enumerate(self.keep)}
        tk = self.tokenizer
        self.pad_id, self.unk_id = self.to_compact[tk.pad_token_id], self.to_compact[tk.unk_token_id]
        self.cls_id, self.eos_id = self.to_compact[tk.cls_token_id], self.to_compact[tk.sep_token_id]
        self.dec_id = len(self.keep)     # [DEC] replaces [CLS] for generation (ITG)

    @property
    def vocab_size(self) -> int:
        return len(self.keep) + 1

    @classmethod
    def build(cls, tokenizer, captions: list[str], subset: bool = True) -> "TextCodec":
        if not subset:
            return cls(tokenizer, list(range(len(tokenizer))))
        specials = [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id]
        seen = {t for ids in tokenizer(captions, add_special_tokens=False)["input_ids"] for t in ids}
        return cls(tokenizer, specials + sorted(seen - set(specials)))

    def encode(self, captions: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """-> ids (N, max_len) ``[CLS] w.. [SEP] [PAD]..`` in compact ids, mask (N, max_len) bool."""
        enc = self.tokenizer(captions, max_length=max_len, truncation=True, padding="max_length")
        ids = torch.tensor([[self.to_compact.get(t, self.unk_id) for t in row] for row in enc["input_ids"]])
        return ids, torch.tensor(enc["attention_mask"], dtype=torch.bool)

    def decode(self, ids: list[int]) -> str:
        """Compact ids -> a caption in Flickr8k form ("A dog runs .": capitalised, spaced full stop)."""
        tok = [self.keep[i] for i in ids if i < len(self.keep) and i not in (self.pad_id, self.cls_id, self.eos_id)]
        text = " ".join(self.tokenizer.convert_ids_to_tokens(tok)).replace(" ##", "").strip()
        text = text.replace(" ' ", "'").replace(" - ", "-")         # WordPiece splits "dog's", "t-shirt"
        if text and not text.endswith("."):
            text += " ."
        return text[:1].upper() + text[1:]


# ----------------------------------------------------------------------------- model
@dataclass
class QFormerConfig:
    vocab_size: int
    hidden_size: int = 768            # BERT-base (paper); cpu: small
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    num_queries: int = 32
    cross_attention_freq: int = 2     # cross-attention in layers 0, 2, 4, ...
    d_image: int = 1408               # EVA ViT-g/14 width (paper); 03's CLIP width in cpu
    embed_dim: int = 256              # ITC projection width
    max_text_len: int = 32
    dropout: float = 0.1
    itg_label_smoothing: float = 0.1  # as LAVIS
    text_pool: str = "cls"            # ITC's text embedding: "cls" (BLIP-2, BERT) or "mean" (a sentence encoder's own pooling)
    pad_id: int = 0
    cls_id: int = 2
    eos_id: int = 3
    dec_id: int = -1                  # -1: the last id (vocab_size - 1)

    def __post_init__(self):
        if self.dec_id < 0:
            self.dec_id = self.vocab_size - 1

    def to_dict(self) -> dict:
        return asdict(self)

    def hf(self, text_input: bool = True):
        cfg = Blip2QFormerConfig(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads, intermediate_size=self.intermediate_size,
            hidden_dropout_prob=self.dropout, attention_probs_dropout_prob=self.dropout,
            max_position_embeddings=self.max_text_len, cross_attention_frequency=self.cross_attention_freq,
            encoder_hidden_size=self.d_image, pad_token_id=self.pad_id, use_qformer_text_input=text_input)
        cfg._attn_implementation = "sdpa"   # bool masks of our own (B, 1, L, L)
        return cfg


def attention_mask(mode: str, n_query: int, text_mask: torch.Tensor) -> torch.Tensor:
    """Self-attention mask of the joint sequence [queries ; text] for one of the three losses.

    text_mask (B, T) bool (False = padding) -> (B, 1, Q+T, Q+T) bool, True = row may attend to column.
    """
    B, T = text_mask.shape
    Q, L = n_query, n_query + text_mask.size(1)
    dev = text_mask.device
    is_q = torch.arange(L, device=dev) < Q                                   # (L,)
    keys = torch.cat([torch.ones(B, Q, dtype=torch.bool, device=dev), text_mask], 1)  # (B, L) not padding
    if mode == "itm":
        allowed = torch.ones(L, L, dtype=torch.bool, device=dev)
    elif mode == "itc":
        allowed = is_q[:, None] == is_q[None, :]                             # unimodal blocks
    elif mode == "itg":
        causal = torch.ones(L, L, dtype=torch.bool, device=dev).tril()
        allowed = (is_q[:, None] & is_q[None, :]) | (~is_q[:, None] & (is_q[None, :] | causal))
    else:
        raise ValueError(f"mode must be itc, itm or itg, not {mode!r}")
    return (allowed[None] & keys[:, None, :])[:, None]                     # (B, 1, L, L)


class Losses(NamedTuple):
    total: torch.Tensor
    itc: torch.Tensor
    itm: torch.Tensor
    itg: torch.Tensor


class QFormer(nn.Module):
    """Learned queries + BERT layers with cross-attention (transformers' Blip2QFormerModel) and the
    three stage-1 heads. The frozen image encoder lives outside: inputs are its cached tokens."""

    def __init__(self, cfg: QFormerConfig):
        super().__init__()
        self.cfg = cfg
        self.bos_id, self.eos_id, self.pad_id = cfg.dec_id, cfg.eos_id, cfg.pad_id   # decoding protocol: [DEC] starts
        hf = cfg.hf()
        self.query_tokens = nn.Parameter(torch.randn(1, cfg.num_queries, cfg.hidden_size) * 0.02)
        self.embeddings = Blip2TextEmbeddings(hf)         # word + position (no LayerNorm: qformer.layernorm)
        self.qformer = Blip2QFormerModel(hf)
        self.vision_proj = nn.Linear(cfg.hidden_size, cfg.embed_dim)
        self.text_proj = nn.Linear(cfg.hidden_size, cfg.embed_dim)
        self.itm_head = nn.Linear(cfg.hidden_size, 2)
        self.lm_transform = nn.Sequential(nn.Linear(cfg.hidden_size, cfg.hidden_size), nn.GELU(),
                                          nn.LayerNorm(cfg.hidden_size, eps=1e-12))  # BertPredictionHeadTransform
        self.lm_bias = nn.Parameter(torch.zeros(cfg.vocab_size))                   # decoder tied to word embeddings
        self.temp = nn.Parameter(torch.tensor(0.07))
        self.apply(self._init)
        nn.init.normal_(self.query_tokens, std=0.02)

    @staticmethod
    def _init(m: nn.Module) -> None:   # BERT init
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    # --- the joint pass --------------------------------------------------------------------------
    def encode(self, image: torch.Tensor, ids: torch.Tensor | None, text_mask: torch.Tensor | None,
               mode: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """image (B, N, d_image), ids/text_mask (B, T) or None -> query states (B, Q, H), text states (B, T, H)."""
        B, Q = image.size(0), self.cfg.num_queries
        queries = self.query_tokens.expand(B, -1, -1)
        if ids is None:
            x, mask = queries, None
        else:
            x = self.embeddings(input_ids=ids, query_embeds=queries)           # (B, Q+T, H)
            mask = attention_mask(mode, Q, text_mask)
        h = self.qformer(query_embeds=x, query_length=Q, attention_mask=mask,
                         encoder_hidden_states=image).last_hidden_state
        return h[:, :Q], (h[:, Q:] if ids is not None else None)

    def text_only(self, ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """Unimodal text pass (ITC's text side): ids (B, T) -> (B, T, H)."""
        x = self.embeddings(input_ids=ids)
        mask = text_mask[:, None, None, :].expand(-1, 1, ids.size(1), -1)
        return self.qformer(query_embeds=x, query_length=0, attention_mask=mask).last_hidden_state

    def image_embeds(self, image: torch.Tensor) -> torch.Tensor:
        """(B, N, d_image) -> normalised query embeddings (B, Q, E) for ITC / retrieval."""
        q, _ = self.encode(image, None, None, "itc")
        return F.normalize(self.vision_proj(q), dim=-1)

    def text_embeds(self, ids: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """(B, T) -> normalised text embedding (B, E): the [CLS] state, or the masked mean of the text
        states when ``cfg.text_pool == "mean"``."""
        h = self.text_only(ids, text_mask)
        if self.cfg.text_pool == "mean":
            m = text_mask[..., None].to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp_min(1)
        elif self.cfg.text_pool == "cls":
            pooled = h[:, 0]
        else:
            raise ValueError(f"text_pool must be 'cls' or 'mean', not {self.cfg.text_pool!r}")
        return F.normalize(self.text_proj(pooled), dim=-1)

    def lm_logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.lm_transform(h) @ self.embeddings.word_embeddings.weight.t() + self.lm_bias

    # --- the three losses ------------------------------------------------------------------------
    def itc(self, img_emb: torch.Tensor, txt_emb: torch.Tensor, image_id: torch.Tensor):
        """img_emb (B, Q, E), txt_emb (B, E) -> loss, sim_i2t (B, B); positives = same image id."""
        with torch.no_grad():
            self.temp.clamp_(0.001, 0.5)
        sim_i2t = torch.einsum("iqe,je->ijq", img_emb.float(), txt_emb.float()).amax(-1) / self.temp  # eq. 1
        pos = (image_id[:, None] == image_id[None, :]).float()
        target = pos / pos.sum(1, keepdim=True)
        loss = (-(F.log_softmax(sim_i2t, 1) * target).sum(1).mean()
                - (F.log_softmax(sim_i2t.t(), 1) * target).sum(1).mean()) / 2
        return loss, sim_i2t

    def itm(self, image, ids, text_mask, sim_i2t, image_id):
        """Binary matching on B positives + B hard-negative images + B hard-negative texts."""
        neg_img, neg_txt = hard_negatives(sim_i2t.detach(), image_id)
        img_all = torch.cat([image, image[neg_img], image])
        ids_all = torch.cat([ids, ids, ids[neg_txt]])
        mask_all = torch.cat([text_mask, text_mask, text_mask[neg_txt]])
        q, _ = self.encode(img_all, ids_all, mask_all, "itm")
        logits = self.itm_head(q).float().mean(1)                            # (3B, 2), mean over queries
        labels = torch.cat([torch.ones(len(ids)), torch.zeros(2 * len(ids))]).long().to(logits.device)
        return F.cross_entropy(logits, labels)

    def itg(self, image, ids, text_mask):
        """Captioning loss: [DEC] w1 .. [SEP], causal text that sees all queries."""
        dec = ids.clone()
        dec[:, 0] = self.cfg.dec_id
        _, h = self.encode(image, dec, text_mask, "itg")
        logits = self.lm_logits(h[:, :-1]).float()
        target = ids[:, 1:].masked_fill(~text_mask[:, 1:], -100)
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1), ignore_index=-100,
                               label_smoothing=self.cfg.itg_label_smoothing)

    def losses(self, image: torch.Tensor, ids: torch.Tensor, text_mask: torch.Tensor,
               image_id: torch.Tensor) -> Losses:
        img_emb = self.image_embeds(image)
        txt_emb = self.text_embeds(ids, text_mask)
        l_itc, sim = self.itc(img_emb, txt_emb, image_id)
        l_itm = self.itm(image, ids, text_mask, sim, image_id)
        l_itg = self.itg(image, ids, text_mask)
        return Losses(l_itc + l_itm + l_itg, l_itc, l_itm, l_itg)   # plain sum, as BLIP-2

    # --- step protocol of mmlib.captioning.decoding, with a KV cache (ids set in __init__) --------
    # Under the ITG mask the queries attend only to each other, so their states at every layer do not
    # depend on the text: ``start`` runs them once and keeps each layer's query keys/values; ``step``
    # then runs only the new text tokens through the layers' self-attention (over queries + earlier
    # text + themselves, causally) and text feed-forward. ``prefix_logits`` is the same computation as
    # one joint pass over [queries ; prefix] (``decoding.Recompute`` wraps it; the tests compare both).
    def start(self, image: torch.Tensor) -> dict:
        """image (B, N, d_image) -> cache: per layer the queries' keys/values (B, heads, Q, head_dim)."""
        inputs: list[torch.Tensor] = []
        hooks = [layer.register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
                 for layer in self.qformer.encoder.layer]
        try:
            self.encode(image, None, None, "itg")                 # queries only: what ITG lets them see
        finally:
            for h in hooks:
                h.remove()
        layers = [{"k": self._heads(layer.attention.attention, layer.attention.attention.key(x)),
                   "v": self._heads(layer.attention.attention, layer.attention.attention.value(x))}
                  for layer, x in zip(self.qformer.encoder.layer, inputs)]
        return {"layers": layers, "pos": 0}

    @staticmethod
    def _heads(att: nn.Module, x: torch.Tensor) -> torch.Tensor:
        B, L, _ = x.shape
        return x.view(B, L, att.num_attention_heads, att.attention_head_size).transpose(1, 2)   # (B, nh, L, d)

    def step(self, tokens: torch.Tensor, cache: dict) -> tuple[torch.Tensor, dict]:
        """tokens (B, T) new text tokens ([DEC] first) -> logits (B, T, V) and the cache extended by T."""
        B, T = tokens.shape
        pos, Q = cache["pos"], self.cfg.num_queries
        x = self.embeddings(input_ids=tokens, position_ids=torch.arange(pos, pos + T, device=tokens.device)[None])
        x = self.qformer.dropout(self.qformer.layernorm(x))                          # (B, T, H)
        # token t (text position pos + t) sees the Q queries and text positions 0 .. pos + t: additive mask
        keys = torch.arange(Q + pos + T, device=x.device)
        visible = keys[None] <= Q + pos + torch.arange(T, device=x.device)[:, None]  # (T, Q+pos+T)
        mask = torch.zeros(1, 1, T, len(keys), dtype=x.dtype, device=x.device).masked_fill(~visible, torch.finfo(x.dtype).min)
        attend = ALL_ATTENTION_FUNCTIONS.get_interface(self.qformer.config._attn_implementation, eager_attention_forward)
        layers = []
        for layer, c in zip(self.qformer.encoder.layer, cache["layers"]):
            att = layer.attention.attention
            k = torch.cat([c["k"], self._heads(att, att.key(x))], 2)                  # (B, nh, Q+pos+T, d)
            v = torch.cat([c["v"], self._heads(att, att.value(x))], 2)
            out, _ = attend(att, self._heads(att, att.query(x)), k, v, mask, dropout=0.0, scaling=att.scaling)
            a = layer.attention.output(out.reshape(B, T, -1), x)                      # dense + residual + LayerNorm
            x = layer.feed_forward_chunk(a)                                           # the text feed-forward
            layers.append({"k": k, "v": v})
        return self.lm_logits(x), {"layers": layers, "pos": pos + T}

    def prefix_logits(self, image: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """One joint ITG pass over [queries ; tokens] -> logits (B, t, V) (no cache)."""
        _, h = self.encode(image, tokens, torch.ones_like(tokens, dtype=torch.bool), "itg")
        return self.lm_logits(h)


def hard_negatives(sim_i2t: torch.Tensor, image_id: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample for each text a negative image and for each image a negative text with probability
    softmax(similarity) over the batch, never one of the same image (BLIP-2 / ALBEF mining).
    Returns (neg_img (B,), neg_txt (B,)) batch indices."""
    same = image_id[:, None] == image_id[None, :]
    w_i2t = F.softmax(sim_i2t.float(), 1).masked_fill(same, 0) + 1e-12 * (~same)
    w_t2i = F.softmax(sim_i2t.float().t(), 1).masked_fill(same, 0) + 1e-12 * (~same)
    if same.all(1).any():
        raise ValueError("a batch needs at least two different images for ITM negatives")
    return torch.multinomial(w_t2i, 1)[:, 0], torch.multinomial(w_i2t, 1)[:, 0]


def qformer_loss(model: QFormer, batch: dict):
    """``train.fit`` loss: batch {"image": (B, N, d), "ids", "mask": (B, T), "image_id": (B,)}."""
    out = model.losses(batch["image"].float(), batch["ids"], batch["mask"], batch["image_id"])
    return out.total, {"itc": out.itc.detach(), "itm": out.itm.detach(), "itg": out.itg.detach()}


# ----------------------------------------------------------------------------- init / evaluation
def init_from_text_encoder(model: QFormer, bert: nn.Module, codec: TextCodec) -> None:
    """Copy a BERT-family encoder (MiniLM in cpu, bert-base-uncased in paper, as BLIP-2) into the
    Q-former: word/position embeddings (rows of the kept ids; [DEC] starts as [CLS]; token type 0
    folded in), embedding LayerNorm, self-attention and feed-forward of every layer (the query
    feed-forward starts as a copy of the text one, as LAVIS does). Cross-attention stays random.
    Widths and layer count of ``model.cfg`` must match the encoder's."""
    src = bert.embeddings
    keep = torch.tensor(codec.keep)
    with torch.no_grad():
        w = src.word_embeddings.weight[keep] + src.token_type_embeddings.weight[0]
        emb = model.embeddings.word_embeddings.weight
        emb[:len(keep)] = w
        emb[codec.dec_id] = w[codec.cls_id]
        n = model.embeddings.position_embeddings.weight.size(0)
        model.embeddings.position_embeddings.weight.copy_(src.position_embeddings.weight[:n])
        model.qformer.layernorm.load_state_dict(src.LayerNorm.state_dict())
        for ours, theirs in zip(model.qformer.encoder.layer, bert.encoder.layer):
            a, b = ours.attention, theirs.attention
            for name in ("query", "key", "value"):
                getattr(a.attention, name).load_state_dict(getattr(b.self, name).state_dict())
            a.output.load_state_dict(b.output.state_dict())
            for inter, out in ((ours.intermediate, ours.output), (ours.intermediate_query, ours.output_query)):
                inter.dense.load_state_dict(theirs.intermediate.dense.state_dict())
                out.load_state_dict(theirs.output.state_dict())


@torch.no_grad()
def retrieval_recall(model: QFormer, image: torch.Tensor, ids: torch.Tensor, text_mask: torch.Tensor,
                     text_image: torch.Tensor, ks=(1, 5), batch_size: int = 256) -> dict[str, float]:
    """ITC retrieval on a validation set: image (N, n, d) feats, ids (M, T) captions of image
    ``text_image`` (M,). Image->text: hit if any of its captions ranks in the top k;
    text->image: hit if its image ranks in the top k. Percent."""
    model.eval()
    img = torch.cat([model.image_embeds(image[i:i + batch_size].float()) for i in range(0, len(image), batch_size)])
    txt = torch.cat([model.text_embeds(ids[i:i + batch_size], text_mask[i:i + batch_size])
                     for i in range(0, len(ids), batch_size)])
    sim = torch.einsum("iqe,je->ijq", img.float(), txt.float()).amax(-1)        # (N, M)
    out = {}
    for k in ks:
        top_t = sim.topk(k, dim=1).indices                                      # (N, k) texts
        out[f"i2t R@{k}"] = 100 * (text_image[top_t] == torch.arange(len(img))[:, None]).any(1).float().mean().item()
        top_i = sim.t().topk(k, dim=1).indices                                  # (M, k) images
        out[f"t2i R@{k}"] = 100 * (top_i == text_image[:, None]).any(1).float().mean().item()
    return out


def generate_captions(model: QFormer, codec: TextCodec, image: torch.Tensor, method: str = "beam",
                      beam: int = 3, max_len: int = 25, batch_size: int = 128) -> list[str]:
    """Captions through the ITG branch ([DEC] ... [SEP]) with mmlib.captioning.decoding."""
    model.eval()
    ids = generate(model, image, method=method, beam=beam, max_len=max_len, batch_size=batch_size)
    return [codec.decode(x) for x in ids]
