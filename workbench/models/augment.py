"""Random views of windows for training: temporal crop, ROI dropout, amplitude scaling, noise.

Every draw comes from torch's global RNG on the batch's device, which the engine reseeds from
``(seed, step)`` before each optimiser step, so a resumed run draws the same views. Families
that learn from two views of a window (contrastive, random-projector targets) call
:func:`augment` twice; families that regularise with one view call it once.

================  ====================================================================
option            effect on a window ``(T, F)``
================  ====================================================================
``crop``          keep ``round(crop · T)`` consecutive frames (at least 2) from a
                  uniformly drawn start: two views are two shifted sub-windows
``roi_dropout``   zero each feature (ROI) with this probability, whole series at once
``scale``         multiply the window by ``exp(N(0, scale²))`` (amplitude jitter)
``noise``         add ``N(0, noise²)`` to every value (standardised units)
================  ====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workbench.errors import ConfigError


@dataclass(frozen=True)
class ViewConfig:
    """Strength of each random transformation (the identity with the defaults)."""

    crop: float = 1.0
    roi_dropout: float = 0.0
    scale: float = 0.0
    noise: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.crop <= 1.0:
            raise ConfigError(f"crop={self.crop} must lie in (0, 1] (fraction of the window's frames kept)")
        if not 0.0 <= self.roi_dropout < 1.0:
            raise ConfigError(f"roi_dropout={self.roi_dropout} must lie in [0, 1)")
        if self.scale < 0 or self.noise < 0:
            raise ConfigError(f"scale={self.scale} and noise={self.noise} must be >= 0")


def augment(x: torch.Tensor, view: ViewConfig) -> torch.Tensor:
    """One random view of every window of ``x`` ``(B, T, F)``; ``(B, T', F)`` with ``T' <= T``."""
    b, t, f = x.shape
    keep = max(2, round(view.crop * t))
    if keep < t:
        start = torch.randint(0, t - keep + 1, (b, 1), device=x.device)
        frames = start + torch.arange(keep, device=x.device)
        x = torch.gather(x, 1, frames[..., None].expand(b, keep, f))
    if view.roi_dropout > 0:
        x = x * (torch.rand(b, 1, f, device=x.device) >= view.roi_dropout).to(x.dtype)
    if view.scale > 0:
        x = x * torch.exp(view.scale * torch.randn(b, 1, 1, device=x.device, dtype=x.dtype))
    if view.noise > 0:
        x = x + view.noise * torch.randn_like(x)
    return x


__all__ = ["ViewConfig", "augment"]
