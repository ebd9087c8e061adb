"""BLIP-2's pretrained parts for the ``paper`` profile: checkpoint tensors and the frozen EVA ViT-g/14.

Read straight from a checkpoint's safetensors shards (a hub name such as ``Salesforce/blip2-opt-2.7b``
or a folder written by ``save_pretrained``) without building the language model. Offline tests use
tiny stand-ins written with ``save_pretrained``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError
from safetensors import safe_open
from transformers import Blip2Config
from transformers.models.blip_2.modeling_blip_2 import Blip2VisionModel

from ...images import clip_normalize
from ...pretrained import hub_source


def resolve(name_or_path: str) -> str:
    """A folder as it is; a hub name through ``pretrained.hub_source`` (``$MMLIB_WEIGHTS_DIR/<name>``)."""
    return name_or_path if Path(name_or_path).is_dir() else hub_source(name_or_path)


def load_blip2_state(name_or_path: str, prefixes: tuple[str, ...] = ("query_tokens", "qformer.", "vision_model.")
                     ) -> dict[str, torch.Tensor]:
    """Tensors of a BLIP-2 checkpoint (hub name such as ``Salesforce/blip2-opt-2.7b``, or a folder
    written by ``save_pretrained``) whose names start with ``prefixes``, read from its safetensors
    shards without building (or keeping) the language model."""
    name_or_path = resolve(name_or_path)

    def fetch(fname: str) -> Path | None:
        p = Path(name_or_path)
        if p.is_dir():
            return p / fname if (p / fname).exists() else None
        try:
            return Path(hf_hub_download(name_or_path, fname))
        except EntryNotFoundError:
            return None

    index = fetch("model.safetensors.index.json")
    if index is not None:
        wmap = json.loads(index.read_text())["weight_map"]
        shards = sorted({f for k, f in wmap.items() if k.startswith(prefixes)})
    else:
        shards = ["model.safetensors"]
    out = {}
    for shard in shards:
        path = fetch(shard)
        if path is None:
            raise FileNotFoundError(f"{name_or_path}: no {shard}")
        with safe_open(str(path), "pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys() if k.startswith(prefixes)})
    if not out:
        raise ValueError(f"{name_or_path}: no tensors named {prefixes}")
    return out


def blip2_vision(name_or_path: str) -> nn.Module:
    """The frozen EVA ViT-g/14 of a BLIP-2 checkpoint (paper's image encoder for rows 3–4);
    call it with pixel_values -> ``.last_hidden_state`` (B, 257, 1408)."""
    name_or_path = resolve(name_or_path)
    vis = Blip2VisionModel(Blip2Config.from_pretrained(name_or_path).vision_config)
    state = load_blip2_state(name_or_path, ("vision_model.",))
    vis.load_state_dict({k[len("vision_model."):]: v for k, v in state.items()}, strict=True)
    return vis.requires_grad_(False).eval()


BLIP2_HUB = "Salesforce/blip2-opt-2.7b"   # paper: EVA ViT-g/14 image encoder (+ stage-2 Q-former)


class EVATokens(nn.Module):
    """BLIP-2's frozen EVA ViT-g/14 as a token source: images [0, 1] (B, 3, 224, 224) -> (B, 257, 1408)."""

    def __init__(self, vision: nn.Module):
        super().__init__()
        self.vision, self.name = vision, "EVA ViT-g/14 (BLIP-2)"

    def forward(self, images: torch.Tensor) -> torch.Tensor:   # BLIP-2's image normalisation is CLIP's
        return self.vision(pixel_values=clip_normalize(images)).last_hidden_state
