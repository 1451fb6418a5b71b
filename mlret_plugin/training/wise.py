"""WiSE-FT (Wortsman et al., 2022): interpolate the weights of a fine-tuned model with those it started from.

``theta = (1 - weight) * theta_start + weight * theta_finetuned``: weight 1 is the fine-tuned model, 0 the start.
A fine-tune that gains on its training distribution but loses zero-shot often recovers most of the zero-shot
quality at an intermediate weight, chosen on held-out data (the recipe chooses it on MLQA-R dev).
"""
from __future__ import annotations

import torch


def snapshot(model) -> dict[str, torch.Tensor]:
    """A copy of ``model``'s floating-point weights (the start of a fine-tune)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}


def interpolate(model, start: dict[str, torch.Tensor], weight: float):
    """``model``'s weights moved to ``(1 - weight) * start + weight * model`` in place; returns the model.
    ``start``: ``snapshot`` of the same architecture before fine-tuning."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"WiSE-FT weight={weight}; expected a value in [0, 1] (1: the fine-tuned model)")
    state = model.state_dict()
    missing = [k for k in start if k not in state]
    if missing:
        raise ValueError(f"WiSE-FT: the start snapshot has weights the model lacks, e.g. {missing[:3]}")
    with torch.no_grad():
        for name, begin in start.items():
            current = state[name]
            current.copy_(begin.to(current.dtype) + weight * (current - begin.to(current.dtype)))
    return model


__all__ = ["interpolate", "snapshot"]
