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

Floors
------
Because ``c`` compares every prediction with every target, the loss can be low without any
information about the input. A prediction that ignores the input, ``p_i = a`` for every
sample, gives ``c_ij = s_j = cos(a, z_j)`` in every row, hence::

    L(a) = Σ_j [ (s_j − 1)²  +  λ (B − 1) s_j² ]

:func:`constant_prediction_floor` minimises it over the unit sphere exactly (with
``α = 1 + λ(B − 1)``, ``L(a) = α aᵀẐᵀẐa − 2 aᵀẐᵀ1 + B``: a quadratic on the sphere, solved by
one eigen-decomposition and a secular equation, the trust-region subproblem of Moré & Sorensen,
SIAM J. Sci. Stat. Comput. 1983) and against the zero prediction (``c = 0``, ``L = B``), so the
floor is the best any input-independent predictor can do. When the targets of a batch share one
direction (frozen random projectors often do: a mean off-diagonal cosine of 0.7–0.9), a constant
along it meets the diagonal term for every sample at once and the floor falls far below ``B``.
:func:`batchwise_barlow_twins_minimum` is the other end: each row of the loss depends on its own
prediction only, so the best input-*dependent* prediction solves one such problem per sample.
With aligned targets even a perfect copy ``p = z`` pays ``λ Σ_{i≠j} cos(z_i, z_j)²`` and can score
worse than the constant; centring each target over the batch (:func:`batch_centred`) before the
loss removes the shared direction.

Reference: Y. Sui, T. Wu, J. C. Cresswell, G. Wu, G. Stein, X. S. Huang, X. Zhang,
M. Volkovs, "Self-supervised Representation Learning From Random Data Projectors",
ICLR 2024 (arXiv 2310.07756); Barlow Twins: J. Zbontar et al., ICML 2021; the sphere-constrained
quadratic: J. J. Moré, D. C. Sorensen, "Computing a Trust Region Step", SIAM J. Sci. Stat.
Comput. 4 (1983).

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
from typing import NamedTuple

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


class ConstantFloor(NamedTuple):
    """The best input-independent prediction of :func:`constant_prediction_floor`."""

    value: torch.Tensor
    """0-d float64: its batch-wise Barlow Twins loss, in the units of the loss."""
    direction: torch.Tensor
    """``(D,)`` float64: the unit prediction that reaches it, or zeros when the zero prediction does."""


def _check_targets(z: torch.Tensor) -> None:
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] == 0:
        raise ConfigError(f"targets must be (B, D) with B, D >= 1, got shape {tuple(z.shape)}")


def _sphere_quadratic_minimum(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise ``xᵀAx − 2bᵀx`` over unit vectors ``x``, for a batch of symmetric PSD ``A`` (float64).

    The trust-region subproblem on the sphere: the minimiser solves ``(A − μI) x = b`` with
    ``μ <= λ_min(A)``; ``μ`` is the root of ``Σ_k β_k² / (a_k − μ)² = 1`` (``β = Qᵀb`` in the
    eigenbasis of ``A``), found by bisection on ``(λ_min − ‖b‖, λ_min)``. In the hard case (``b``
    orthogonal to the bottom eigenvector and the root missing) ``μ = λ_min`` and the missing length
    goes along that eigenvector.

    Parameters
    ----------
    a : torch.Tensor
        ``(N, D, D)`` symmetric positive semi-definite matrices.
    b : torch.Tensor
        ``(N, D)`` vectors.

    Returns
    -------
    value, x : torch.Tensor
        ``(N,)`` minima and ``(N, D)`` unit minimisers.
    """
    eigenvalues, q = torch.linalg.eigh(a)  # ascending
    beta = torch.einsum("ndk,nd->nk", q, b)
    bottom = eigenvalues[:, :1]
    tol = 1e-10 * (1.0 + eigenvalues.abs().amax(dim=1, keepdim=True))
    degenerate = (eigenvalues - bottom) <= tol  # the bottom eigenspace
    # the hard case: no weight of b on the bottom eigenspace and ‖x(λ_min)‖ <= 1 off it
    gap = torch.where(degenerate, torch.ones_like(eigenvalues), eigenvalues - bottom)
    off_norm2 = torch.where(degenerate, torch.zeros_like(beta), beta / gap).square().sum(dim=1)
    hard = (torch.where(degenerate, beta, torch.zeros_like(beta)).abs().amax(dim=1) <= 1e-10) & (off_norm2 <= 1.0)
    # bisection on μ in (λ_min − ‖b‖ − 1, λ_min): ‖x(μ)‖² rises from below 1 to +∞ there
    low = bottom.squeeze(1) - torch.linalg.vector_norm(b, dim=1) - 1.0
    high = bottom.squeeze(1)
    for _ in range(200):
        mid = 0.5 * (low + high)
        norm2 = (beta / (eigenvalues - mid[:, None])).square().sum(dim=1)
        low, high = torch.where(norm2 < 1.0, mid, low), torch.where(norm2 < 1.0, high, mid)
    mu = torch.where(hard, high, low)
    coef = torch.where(degenerate & hard[:, None], torch.zeros_like(beta), beta / (eigenvalues - mu[:, None]))
    coef = torch.where(hard[:, None] & ~degenerate, beta / gap, coef)
    fill = torch.sqrt(torch.clamp(1.0 - coef.square().sum(dim=1), min=0.0))
    coef[:, 0] = torch.where(hard, fill, coef[:, 0])
    x = torch.nn.functional.normalize(torch.einsum("ndk,nk->nd", q, coef), dim=1)
    value = torch.einsum("nd,nde,ne->n", x, a, x) - 2 * (x * b).sum(dim=1)
    return value, x


def constant_prediction_loss(
    prediction: torch.Tensor, z: torch.Tensor, off_diagonal_weight: float = 0.01, divide_by_batch: bool = False
) -> torch.Tensor:
    """The loss of one prediction ``a`` given for every sample: ``Σ_j [(s_j − 1)² + λ(B − 1) s_j²]``.

    ``s_j = cos(a, z_j)``; equals :func:`batchwise_barlow_twins_loss` of ``a`` repeated ``B`` times
    (``s_j = 0`` for the zero vector, as there).

    Parameters
    ----------
    prediction : torch.Tensor
        ``(D,)`` the constant prediction ``a``.
    z : torch.Tensor
        ``(B, D)`` targets.
    off_diagonal_weight, divide_by_batch
        As in :func:`batchwise_barlow_twins_loss`.

    Returns
    -------
    torch.Tensor
        0-d, in ``promote_types(z.dtype, float32)``.
    """
    _check_targets(z)
    if prediction.shape != z.shape[1:]:
        raise ConfigError(
            f"the constant prediction must be ({z.shape[1]},) like a target, got {tuple(prediction.shape)}"
        )
    dtype = torch.promote_types(torch.promote_types(prediction.dtype, z.dtype), torch.float32)
    batch = z.shape[0]
    with torch.autocast(device_type=z.device.type, enabled=False):
        s = F.normalize(z.to(dtype), dim=1) @ F.normalize(prediction.to(dtype), dim=0)
        loss = ((s - 1).square() + off_diagonal_weight * (batch - 1) * s.square()).sum()
    return loss / batch if divide_by_batch else loss


def constant_prediction_floor(
    z: torch.Tensor, off_diagonal_weight: float = 0.01, divide_by_batch: bool = False
) -> ConstantFloor:
    """The best input-independent prediction for targets ``z`` and its loss (module docstring, "Floors").

    Minimises :func:`constant_prediction_loss` exactly over the unit sphere, in float64, and
    compares it with the zero prediction (loss ``B``): what a predictor that learned nothing
    about the input scores on this batch.

    Parameters
    ----------
    z : torch.Tensor
        ``(B, D)`` targets of one batch.
    off_diagonal_weight, divide_by_batch
        As in :func:`batchwise_barlow_twins_loss`.

    Returns
    -------
    ConstantFloor
        ``value`` (0-d float64) and ``direction`` (``(D,)`` float64, unit or zero).
    """
    _check_targets(z)
    batch = z.shape[0]
    zn = F.normalize(z.detach().to(torch.float64), dim=1)
    alpha = 1.0 + off_diagonal_weight * (batch - 1)
    with torch.autocast(device_type=z.device.type, enabled=False):
        value, direction = _sphere_quadratic_minimum((alpha * zn.T @ zn)[None], zn.sum(dim=0)[None])
    value, direction = value[0] + batch, direction[0]
    if value >= batch:  # the zero prediction (c = 0) does at least as well
        value, direction = torch.tensor(float(batch), dtype=torch.float64), torch.zeros_like(direction)
    return ConstantFloor(value / batch if divide_by_batch else value, direction)


def batchwise_barlow_twins_minimum(
    z: torch.Tensor, off_diagonal_weight: float = 0.01, divide_by_batch: bool = False
) -> torch.Tensor:
    """The lowest loss any prediction reaches on targets ``z``: the best input-dependent prediction.

    Row ``i`` of the loss, ``(c_ii − 1)² + λ Σ_{j≠i} c_ij²``, depends on prediction ``i`` alone,
    so its minimum over unit predictions (or zero, which scores 1) is one sphere-constrained
    quadratic per sample; the sum is the loss's exact minimum for this batch. A perfect copy of
    the targets scores ``λ Σ_{i≠j} cos(z_i, z_j)²``, which is above this minimum unless the
    targets are orthogonal.

    Parameters
    ----------
    z : torch.Tensor
        ``(B, D)`` targets.
    off_diagonal_weight, divide_by_batch
        As in :func:`batchwise_barlow_twins_loss`.

    Returns
    -------
    torch.Tensor
        0-d float64.
    """
    _check_targets(z)
    batch = z.shape[0]
    zn = F.normalize(z.detach().to(torch.float64), dim=1)
    gram = zn[:, :, None] * zn[:, None, :]  # (B, D, D) outer products
    a = off_diagonal_weight * (gram.sum(dim=0, keepdim=True) - gram) + gram
    with torch.autocast(device_type=z.device.type, enabled=False):
        value, _ = _sphere_quadratic_minimum(a, zn)
    total = torch.clamp(value + 1.0, max=1.0).sum()
    return total / batch if divide_by_batch else total


def mean_pairwise_cosine(z: torch.Tensor) -> torch.Tensor:
    """Mean cosine between the ``B(B − 1)`` ordered pairs of distinct rows of ``z`` ``(B, D)`` (0-d float64)."""
    _check_targets(z)
    if z.shape[0] < 2:
        raise ConfigError(f"a mean pairwise cosine needs at least 2 rows, got {z.shape[0]}")
    zn = F.normalize(z.detach().to(torch.float64), dim=1)
    total = zn.sum(dim=0).square().sum() - zn.square().sum()
    return total / (z.shape[0] * (z.shape[0] - 1))


def batch_centred(z: torch.Tensor) -> torch.Tensor:
    """Targets ``(B, D)`` minus their mean over the batch: the shared direction removed."""
    return z - z.mean(dim=0, keepdim=True)


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
