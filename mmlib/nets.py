"""Facts about ``nn.Module``s that every notebook reports: parameter counts."""
from __future__ import annotations

from torch import nn


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameters; a tied tensor counted once."""
    seen, total, trainable = set(), 0, 0
    for p in module.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return total, trainable


def n_params(module: nn.Module) -> int:
    """Total parameters (``count_parameters(module)[0]``)."""
    return count_parameters(module)[0]
