"""Checkpoints: atomic, keyed by a hash of the config, loadable with ``weights_only=True``.

A training checkpoint holds only what cannot be rebuilt: the *trainable* weights, optimizer and
scheduler state, the step, the RNG state and the config it was made with. Frozen parts (a
pretrained CNN, an LLM) are never written. Exported models use safetensors.

``atomic_write(path, write)`` is the one write-then-rename of the project; ``cached(path, compute)``
is the one on-disk cache of computed tensors (features, text banks) built on it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


def config_key(config: dict[str, Any]) -> str:
    """Short stable hash of a JSON-able config: the name of the folder its checkpoints live in."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters that require grad (frozen parts stay out of checkpoints)."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def atomic_write(path: Path, write: Callable[[str], Any]) -> Path:
    """``write(tmp)`` writes a temporary file beside ``path``, which is then renamed onto it: a reader
    sees the old file or the whole new one, never half of it (also after a crash)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def save_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) atomically with torch.save."""
    return atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


_STEP = re.compile(r"ckpt-(\d+)\.pt$")


def checkpoints(train_dir: Path) -> list[Path]:
    """Checkpoints in a training folder, oldest first."""
    found = [p for p in Path(train_dir).glob("ckpt-*.pt") if _STEP.search(p.name)]
    return sorted(found, key=lambda p: int(_STEP.search(p.name).group(1)))


def prune(train_dir: Path, keep: int) -> None:
    for p in checkpoints(train_dir)[:-keep] if keep > 0 else []:
        p.unlink()


def save_weights(path: Path, tensors: dict[str, torch.Tensor], config: dict | None = None) -> Path:
    """Safetensors export (contiguous CPU copies); the config rides along as metadata."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {"config": json.dumps(config, sort_keys=True, default=str)} if config is not None else None
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_weights(path: Path, expect_config: dict | None = None) -> dict[str, torch.Tensor]:
    """Load a safetensors export; refuse one written for another config."""
    if expect_config is not None:
        meta = json.dumps(read_config(path), sort_keys=True, default=str)
        want = json.dumps(expect_config, sort_keys=True, default=str)
        if meta != want:
            raise ValueError(f"{path} was written for another config:\n  file: {meta}\n  want: {want}")
    return load_file(str(path))


def cached(path: Path, compute: Callable[[], dict[str, torch.Tensor]], key: dict | None = None
           ) -> tuple[dict[str, torch.Tensor], bool]:
    """Tensors stored at ``path`` (safetensors), or ``compute()`` saved there atomically.

    Returns ``(tensors, hit)``. ``key`` (JSON-able) rides along as metadata and must match on a hit, so
    a file written for another config is an error, never a silent reuse; the caller names ``path``
    after a hash of everything that determines the tensors."""
    if Path(path).exists():
        return load_weights(path, expect_config=key), True
    tensors = compute()
    save_weights(path, tensors, config=key)
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}, False


def read_config(path: Path) -> dict | None:
    """The config a ``save_weights`` export was written with (None when it carries none)."""

    if not Path(path).exists():
        raise FileNotFoundError(path)
    with safe_open(str(path), "pt") as f:
        meta = (f.metadata() or {}).get("config")
    return json.loads(meta) if meta is not None else None


def read_dataclass(cls, path: Path):
    """The config dataclass ``cls`` an export was written with (JSON lists back to tuples)."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in read_config(path).items()})
