"""What a frozen image encoder knows about the scene: linear probes and zero-shot attribute reading.

world8k records the true scene behind every image, so an encoder can be asked directly whether its
features hold each attribute (background, subject, count, colours, action, ...):

- **linear probe** (as in Radford et al. 2021, §3.2): per attribute, a multinomial logistic regression
  on the standardised, frozen features of the training images (full-batch L-BFGS, L2 penalty),
  accuracy on the validation images, beside the majority-class prior of the training labels;
- **zero-shot** (CLIP only): for every validation image and attribute, the caption of its true scene
  (``scene_facts.template_caption``) is written once per value of the attribute, the rest of the
  scene kept; the image's embedding picks the closest of these captions. Accuracy = share of images
  whose true value wins.

The macro average over attributes is the encoder's score (``probe_table`` puts encoders side by side).
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .. import results
from ..data import world
from ..eval import scene_facts
from .clip_pretrain import embed_images, embed_texts, pooled_features, tokenize

ATTRIBUTES = list(world.ATTRIBUTES)
# attributes whose value can be swapped in a caption without changing which others apply
ZERO_SHOT = ("background", "count", "clothing_colour", "hair_colour", "dog_colour", "action", "ball_colour", "object")


def _labelled(attrs: Sequence[dict], name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices of the images that have ``name``, their value indices in ``world.ATTRIBUTES[name]``)."""
    values = world.ATTRIBUTES[name]
    idx = [i for i, a in enumerate(attrs) if name in a]
    return torch.tensor(idx, dtype=torch.long), torch.tensor([values.index(attrs[i][name]) for i in idx])


def fit_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float = 1e-3,
                 iters: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression by full-batch L-BFGS: x (N, D) float, y (N,) -> (W (D, K), b (K,))."""
    W = torch.zeros(x.size(1), n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1, max_iter=iters, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ W + b, y) + l2 * W.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach(), b.detach()


@torch.no_grad()
def _standardise(train: torch.Tensor, val: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mu, sd = train.mean(0), train.std(0) + 1e-6
    return (train - mu) / sd, (val - mu) / sd


def linear_probe(train_feats: torch.Tensor, train_attrs: Sequence[dict], val_feats: torch.Tensor,
                 val_attrs: Sequence[dict], l2: float = 1e-3) -> dict[str, dict[str, float]]:
    """{attribute: {"accuracy", "prior", "n"}} of a linear probe on (N, D) features (any float dtype)."""
    xtr, xva = _standardise(train_feats.float(), val_feats.float())
    out = {}
    for name in ATTRIBUTES:
        itr, ytr = _labelled(train_attrs, name)
        iva, yva = _labelled(val_attrs, name)
        if len(iva) == 0 or len(set(ytr.tolist())) < 2:
            continue
        W, b = fit_logistic(xtr[itr], ytr, len(world.ATTRIBUTES[name]), l2)
        pred = (xva[iva] @ W + b).argmax(1)
        majority = Counter(ytr.tolist()).most_common(1)[0][0]
        out[name] = {"accuracy": (pred == yva).float().mean().item(),
                     "prior": (yva == majority).float().mean().item(), "n": len(iva)}
    return out


def _swappable(attrs: dict, name: str) -> list:
    """The values of ``name`` that a caption of this scene could state instead of the true one."""
    values = list(world.ATTRIBUTES[name])
    if name == "action":
        values = [v for v in values if v != "catching"] if attrs.get("action") != "catching" else []
    if name == "object":
        values = [v for v in values if v == "none" or v in world.DISTRACTORS[attrs["background"]]]
    return values if attrs.get(name) in values else []


@torch.no_grad()
def zero_shot(image_emb: torch.Tensor, attrs: Sequence[dict],
              embed_text: Callable[[list[str]], torch.Tensor]) -> dict[str, dict[str, float]]:
    """{attribute: {"accuracy", "chance", "n"}}: image_emb (N, D) normalised; ``embed_text(captions)``
    -> normalised (M, D), called once on all distinct captions. Each image chooses among captions of
    its own scene that differ only in the attribute; chance = mean 1 / (number of choices)."""
    trials = []                                           # (attribute, image, values, captions)
    for name in ZERO_SHOT:
        for i, a in enumerate(attrs):
            values = _swappable(a, name)
            if len(values) >= 2:
                trials.append((name, i, values, [scene_facts.template_caption({**a, name: v}) for v in values]))
    distinct = sorted({c for *_, caps in trials for c in caps})
    row = {c: j for j, c in enumerate(distinct)}
    text = embed_text(distinct) if distinct else torch.zeros(0, image_emb.size(1))
    out: dict[str, dict[str, float]] = {}
    for name, i, values, caps in trials:
        sims = text[[row[c] for c in caps]] @ image_emb[i]
        s = out.setdefault(name, {"accuracy": 0.0, "chance": 0.0, "n": 0})
        s["accuracy"] += float(values[int(sims.argmax())] == attrs[i][name])
        s["chance"] += 1 / len(values)
        s["n"] += 1
    for s in out.values():
        s["accuracy"] /= s["n"]
        s["chance"] /= s["n"]
    return out


def macro(scores: dict[str, dict[str, float]], key: str = "accuracy") -> float:
    return sum(s[key] for s in scores.values()) / max(1, len(scores))


def probe_table(probes: dict[str, dict[str, dict]], zero: dict[str, dict] | None = None) -> list[dict]:
    """Rows per attribute: prior, each encoder's probe accuracy (columns named by ``probes``' keys),
    the CLIP zero-shot accuracy and its chance; then the macro average over the attributes."""
    names = [a for a in ATTRIBUTES if all(a in p for p in probes.values())]
    first = next(iter(probes.values()))
    rows = []
    for a in names:
        row = {"attribute": a, "n val": first[a]["n"], "majority prior": first[a]["prior"]}
        row.update({f"{enc} probe": p[a]["accuracy"] for enc, p in probes.items()})
        if zero is not None:
            row["CLIP zero-shot"] = zero[a]["accuracy"] if a in zero else None
            row["zero-shot chance"] = zero[a]["chance"] if a in zero else None
        rows.append(row)
    mac = {"attribute": "macro average", "n val": None,
           "majority prior": sum(first[a]["prior"] for a in names) / len(names)}
    mac.update({f"{enc} probe": sum(p[a]["accuracy"] for a in names) / len(names) for enc, p in probes.items()})
    if zero is not None:
        mac["CLIP zero-shot"], mac["zero-shot chance"] = macro(zero), macro(zero, "chance")
    return rows + [mac]


def encoder_report(profile: str, cnn_feats, clip_model) -> dict:
    """Notebook 03's encoder comparison on world8k: linear probes of the CNN's mean-pooled grid and of
    the world CLIP's pre-projection image feature, the CLIP's zero-shot reading, and the macro averages.
    Saves the table ``03_probe_table`` and the summary ``03_probe`` (read by ``mmlib.claims``)."""
    split = cnn_feats.split
    train_attrs = scene_facts.world_scenes(split.folder, [n for n, _ in split.train])
    val_attrs = scene_facts.world_scenes(split.folder, [n for n, _ in split.val])
    cnn = linear_probe(cnn_feats.train.float().mean(1), train_attrs, cnn_feats.val.float().mean(1), val_attrs)
    clip = linear_probe(pooled_features(clip_model, cnn_feats.train), train_attrs,
                        pooled_features(clip_model, cnn_feats.val), val_attrs)
    ctx = int(clip_model.positional_embedding.shape[0])
    zero = zero_shot(embed_images(clip_model, cnn_feats.val), val_attrs,
                     lambda caps: embed_texts(clip_model, tokenize(profile, caps, ctx)))
    rows = probe_table({"CNN (mean-pooled grid)": cnn, "world CLIP": clip}, zero)
    results.save_table(profile, "03_probe_table", rows, formats={c: ".2f" for c in rows[0] if c not in ("attribute", "n val")})
    summary = {"cnn_macro": macro(cnn), "clip_macro": macro(clip), "zero_shot_macro": macro(zero),
               "zero_shot_chance": macro(zero, "chance"), "prior_macro": macro(cnn, "prior"),
               "clip_minus_cnn": macro(clip) - macro(cnn)}   # the claims apply their margin to this
    results.save(profile, "03_probe", summary)
    return {"rows": rows, **summary}
