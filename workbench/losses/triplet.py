"""Margin triplet loss on squared Euclidean distances.

For a batch of ``N`` triplets of embeddings (anchor ``a_i``, positive ``p_i`` of the
same identity, negative ``n_i`` of another identity)::

    d⁺_i = ‖a_i − p_i‖²        d⁻_i = ‖a_i − n_i‖²
    L    = (1/N) Σ_i max(0, d⁺_i − d⁻_i + m)

with margin ``m`` (0.3 by default). The reduction is the plain mean over *all*
triplets, including the ones already satisfied (zero hinge): the reduction of the
Neural Vault recipe. A triplet stops contributing gradient once its negative is
farther than its positive by at least ``m``.

When every embedding is the same vector (collapse), ``d⁺ = d⁻ = 0`` and the loss is
exactly ``m`` (:func:`collapsed_triplet_loss`): the trivial floor a model that learned
nothing scores, whatever the mining.

Reference: F. Schroff, D. Kalenichenko, J. Philbin, "FaceNet: A Unified Embedding
for Face Recognition and Clustering", CVPR 2015 (eq. 1-2).

Example
-------
>>> import torch
>>> import torch.nn.functional as F
>>> from workbench.losses.triplet import triplet_margin_loss
>>> z = F.normalize(torch.randn(3, 8, 16), dim=-1)   # 3 legs × 8 triplets × 16 dims
>>> loss = triplet_margin_loss(z[0], z[1], z[2], margin=0.3)
>>> loss.shape
torch.Size([])
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from workbench.errors import ConfigError


class TripletTerms(NamedTuple):
    """Per-triplet terms of the margin triplet loss, each ``(N,)``."""

    pos_dist: torch.Tensor
    """Squared Euclidean anchor–positive distance ``d⁺``."""
    neg_dist: torch.Tensor
    """Squared Euclidean anchor–negative distance ``d⁻``."""
    hinge: torch.Tensor
    """``max(0, d⁺ − d⁻ + margin)``; positive entries are the active triplets."""


def triplet_terms(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float = 0.3
) -> TripletTerms:
    """Distances and hinge of every triplet.

    Parameters
    ----------
    anchor, positive, negative : torch.Tensor
        ``(N, D)`` embeddings of the three legs, same shape, device and dtype.
    margin : float
        Required gap ``m >= 0`` between the negative and the positive squared distance.

    Returns
    -------
    TripletTerms
        ``pos_dist``, ``neg_dist`` and ``hinge``, each ``(N,)``.

    Raises
    ------
    ConfigError
        If the legs are not ``(N, D)`` tensors of one shape, if ``N == 0`` or if
        ``margin`` is negative.
    """
    if margin < 0:
        raise ConfigError(f"triplet margin must be >= 0, got margin={margin}")
    if anchor.ndim != 2:
        raise ConfigError(f"triplet legs must be (N, D) embeddings, got anchor of shape {tuple(anchor.shape)}")
    if positive.shape != anchor.shape or negative.shape != anchor.shape:
        raise ConfigError(
            "triplet legs must have one shape: anchor "
            f"{tuple(anchor.shape)}, positive {tuple(positive.shape)}, "
            f"negative {tuple(negative.shape)}"
        )
    if anchor.shape[0] == 0:
        raise ConfigError("triplet loss needs at least one triplet, got N = 0")
    pos_dist = (anchor - positive).pow(2).sum(dim=1)
    neg_dist = (anchor - negative).pow(2).sum(dim=1)
    hinge = torch.relu(pos_dist - neg_dist + margin)
    return TripletTerms(pos_dist, neg_dist, hinge)


def triplet_margin_loss(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float = 0.3
) -> torch.Tensor:
    """Margin triplet loss ``mean_i max(0, ‖a_i−p_i‖² − ‖a_i−n_i‖² + margin)`` (FaceNet).

    Parameters
    ----------
    anchor, positive, negative : torch.Tensor
        ``(N, D)`` embeddings.
    margin : float
        Margin ``m >= 0`` on squared distances (0.3 in Neural Vault).

    Returns
    -------
    torch.Tensor
        Scalar: the plain mean over the ``N`` triplets.
    """
    return triplet_terms(anchor, positive, negative, margin).hinge.mean()


def collapsed_triplet_loss(margin: float = 0.3) -> float:
    """The loss when every embedding is one vector: ``max(0, 0 − 0 + m) = m``.

    Evaluates :func:`triplet_margin_loss` on one triplet of identical embeddings.

    Parameters
    ----------
    margin : float
        Margin ``m >= 0``.

    Returns
    -------
    float
        The margin ``m``.
    """
    same = torch.zeros(1, 1)
    return float(triplet_margin_loss(same, same, same, margin))
