"""Batch-wise Barlow Twins loss of Learning From Randomness (LFR).

Predictions ``p`` and random-projector targets ``z`` of one batch of ``B`` samples are
L2-normalised per sample (over their ``D`` features) and compared sample against sample::

    c   = normalize(p) · normalize(z)ᵀ                      (B × B, entries in [−1, 1])
    L   = Σ_i (c_ii − 1)²  +  λ Σ_{i≠j} c_ij²               (÷ B when divide_by_batch)

The diagonal pulls each prediction onto its own target (cosine 1); the off-diagonal term,
weighted by ``λ = 0.01``, decorrelates it from the other samples' targets — Barlow Twins'
redundancy reduction applied across the batch instead of across features. Without
``divide_by_batch`` (the reference default) the loss grows with ``B``.

Unlike Minerva's ``BatchWiseBarlowTwinLoss`` there is no ``assert -1 < c < 1``: that check
costs a host sync every step and fails on legitimate input (duplicate samples give
``c_ij = 1``). A zero vector is normalised to zero (``F.normalize``'s epsilon), giving
``c = 0`` for its row. Computed in ``promote_types(dtype, float32)`` with autocast disabled
and returned in that dtype.

Reference: Y. Sui, T. Wu, J. C. Cresswell, G. Wu, G. Stein, X. S. Huang, X. Zhang,
M. Volkovs, "Self-supervised Representation Learning From Random Data Projectors",
ICLR 2024 (arXiv 2310.07756); Barlow Twins: J. Zbontar et al., ICML 2021.

Example
-------
>>> import torch
>>> from workbench.losses.barlow_twins import BatchWiseBarlowTwinsLoss
>>> loss_fn = BatchWiseBarlowTwinsLoss(off_diagonal_weight=0.01)
>>> loss_fn(torch.randn(16, 32), torch.randn(16, 32)).shape
torch.Size([])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from workbench.errors import ConfigError


def batchwise_barlow_twins_loss(
    p: torch.Tensor, z: torch.Tensor, off_diagonal_weight: float = 0.01, divide_by_batch: bool = False
) -> torch.Tensor:
    """``Σ_i (c_ii − 1)² + λ Σ_{i≠j} c_ij²`` with ``c = normalize(p) normalize(z)ᵀ``.

    Parameters
    ----------
    p : torch.Tensor
        ``(B, D)`` predictions.
    z : torch.Tensor
        ``(B, D)`` targets (random projections), same shape and device.
    off_diagonal_weight : float
        ``λ >= 0`` (0.01 in LFR).
    divide_by_batch : bool
        Divide the sum by ``B``.

    Returns
    -------
    torch.Tensor
        Scalar loss in ``promote_types(p.dtype, float32)``.
    """
    if p.ndim != 2 or p.shape != z.shape:
        raise ConfigError(
            f"predictions and targets must be (B, D) of one shape, got {tuple(p.shape)} and {tuple(z.shape)}"
        )
    if p.shape[0] == 0:
        raise ConfigError("the batch-wise Barlow Twins loss needs at least one sample, got B = 0")
    dtype = torch.promote_types(torch.promote_types(p.dtype, z.dtype), torch.float32)
    with torch.autocast(device_type=p.device.type, enabled=False):
        c = F.normalize(p.to(dtype), dim=1) @ F.normalize(z.to(dtype), dim=1).T
        on_diagonal = (torch.diagonal(c) - 1).pow(2).sum()
        eye = torch.eye(c.shape[0], dtype=torch.bool, device=c.device)
        off_diagonal = c.pow(2).masked_fill(eye, 0.0).sum()
        loss = on_diagonal + off_diagonal_weight * off_diagonal
        return loss / c.shape[0] if divide_by_batch else loss


class BatchWiseBarlowTwinsLoss(nn.Module):
    """Module form of :func:`batchwise_barlow_twins_loss`.

    Parameters
    ----------
    off_diagonal_weight : float
        ``λ >= 0`` on the off-diagonal (cross-sample) term; 0.01 as in LFR and Minerva.
    divide_by_batch : bool
        Divide by the batch size ``B`` (Minerva's ``normalize``); False by default.
    """

    def __init__(self, off_diagonal_weight: float = 0.01, divide_by_batch: bool = False) -> None:
        super().__init__()
        if not (math.isfinite(off_diagonal_weight) and off_diagonal_weight >= 0):
            raise ConfigError(f"off_diagonal_weight must be a finite number >= 0, got {off_diagonal_weight}")
        self.off_diagonal_weight = float(off_diagonal_weight)
        self.divide_by_batch = bool(divide_by_batch)

    def forward(self, p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Loss of ``(B, D)`` predictions ``p`` against ``(B, D)`` targets ``z``."""
        return batchwise_barlow_twins_loss(p, z, self.off_diagonal_weight, self.divide_by_batch)

    def extra_repr(self) -> str:
        return f"off_diagonal_weight={self.off_diagonal_weight}, divide_by_batch={self.divide_by_batch}"
