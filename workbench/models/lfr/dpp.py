"""Diverse target selection for LFR: fast greedy MAP inference of a determinantal point process.

LFR draws a pool of random projectors and keeps ``K`` of them that disagree the most about
the data. Their similarity is a kernel over the pool (:func:`projector_similarity_kernel`):
each projector's outputs on a sample batch give a ``B × B`` cosine-similarity matrix between
samples; the kernel is the cosine similarity of those matrices, flattened. A DPP with that
kernel favours sets of projectors whose sample geometries are far apart, and its greedy MAP
(:func:`greedy_dpp_map`) picks them one by one.

Greedy MAP maximises ``log det L_Y`` one item at a time. Chen, Zhang & Zhou keep, for every
candidate ``i``, the incremental Cholesky row ``c_i`` and ``d_i² = L_ii − ‖c_i‖²`` — the
factor by which adding ``i`` multiplies ``det L_Y`` — and update both in ``O(M)`` per candidate
after each pick::

    j    = argmax_{i ∉ Y} d_i²
    e_i  = (L_ji − ⟨c_j, c_i⟩) / d_j
    c_i ← [c_i, e_i],   d_i² ← d_i² − e_i²

Selection stops when the best ``d_j²`` falls below ``epsilon`` (1e-10): every remaining item is
(numerically) in the span of the chosen ones, e.g. a duplicate. It may therefore return fewer
than asked; :func:`dpp_selection_mask` says so with a warning and keeps what was returned.

Reference: L. Chen, G. Zhang, H. Zhou, "Fast Greedy MAP Inference for Determinantal Point
Process to Improve Recommendation Diversity", NeurIPS 2018, Algorithm 1. LFR's use of it:
Sui et al., ICLR 2024 (arXiv 2310.07756).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from workbench.errors import ConfigError

DPP_EPSILON = 1e-10
"""Smallest marginal gain ``d_j²`` still worth a pick (Chen et al.'s and LFR's value)."""


def _check_kernel(kernel: torch.Tensor) -> None:
    if kernel.ndim != 2 or kernel.shape[0] != kernel.shape[1] or kernel.shape[0] == 0:
        raise ConfigError(f"the DPP kernel must be a non-empty square (M, M) matrix, got shape {tuple(kernel.shape)}")


def greedy_dpp_map(kernel: torch.Tensor, max_length: int, epsilon: float = DPP_EPSILON) -> list[int]:
    """Greedy MAP of a DPP: up to ``max_length`` item indices, in the order they were picked.

    Parameters
    ----------
    kernel : torch.Tensor
        ``(M, M)`` symmetric positive semi-definite kernel ``L``; copied to CPU float64 (a
        one-off, outside any training step).
    max_length : int
        Number of items wanted, ``1 <= max_length <= M``.
    epsilon : float
        Stop when the best marginal gain ``d_j²`` is below it.

    Returns
    -------
    list[int]
        Selected indices, at most ``max_length``; fewer when the gain ran out (empty when
        every ``L_ii < epsilon``).
    """
    _check_kernel(kernel)
    size = kernel.shape[0]
    if not 1 <= max_length <= size:
        raise ConfigError(f"max_length must be between 1 and the kernel size {size}, got {max_length}")
    matrix = kernel.detach().to(device="cpu", dtype=torch.float64)
    cholesky_rows = torch.zeros(max_length, size, dtype=torch.float64)
    gains = torch.diagonal(matrix).clone()  # d_i²
    selected: list[int] = []
    best = int(torch.argmax(gains))
    while gains[best] >= epsilon:
        selected.append(best)
        if len(selected) == max_length:
            break
        k = len(selected) - 1
        increments = (matrix[best] - cholesky_rows[:k, best] @ cholesky_rows[:k]) / torch.sqrt(gains[best])
        cholesky_rows[k] = increments
        gains -= increments.square()
        gains[selected] = float("-inf")
        best = int(torch.argmax(gains))
    return selected


def dpp_selection_mask(kernel: torch.Tensor, num_targets: int, epsilon: float = DPP_EPSILON) -> torch.Tensor:
    """Greedy DPP selection stored as a fixed-length boolean mask over the pool.

    Parameters
    ----------
    kernel : torch.Tensor
        ``(M, M)`` kernel over the pool (see :func:`projector_similarity_kernel`).
    num_targets : int
        ``K``, ``1 <= K <= M``. ``K = M`` keeps the whole pool without running the DPP.
    epsilon : float
        Passed to :func:`greedy_dpp_map`.

    Returns
    -------
    torch.Tensor
        ``(M,)`` bool mask on the kernel's device, True for the selected items — the same
        shape whatever was selected, so it fits a registered buffer. When the DPP returns
        fewer than ``K`` items a warning names both counts and the mask holds the returned set.
    """
    _check_kernel(kernel)
    size = kernel.shape[0]
    if not 1 <= num_targets <= size:
        raise ConfigError(f"num_targets must be between 1 and the pool size {size}, got num_targets={num_targets}")
    mask = torch.zeros(size, dtype=torch.bool, device=kernel.device)
    if num_targets == size:
        return mask.fill_(True)
    selected = greedy_dpp_map(kernel, num_targets, epsilon)
    if not selected:
        raise ConfigError(
            f"the DPP selected nothing: every diagonal entry of the kernel is below epsilon={epsilon} "
            "(projectors with all-zero outputs?); check the projectors or lower epsilon"
        )
    if len(selected) < num_targets:
        warnings.warn(
            f"DPP selection asked for {num_targets} targets but returned {len(selected)}: the remaining projectors "
            f"add less than epsilon={epsilon} to the determinant (near-duplicates); using the {len(selected)} returned",
            stacklevel=2,
        )
    mask[torch.tensor(selected, device=kernel.device)] = True
    return mask


def projector_similarity_kernel(outputs: torch.Tensor) -> torch.Tensor:
    """LFR's kernel over a pool: cosine similarity of the projectors' sample-similarity matrices.

    Parameters
    ----------
    outputs : torch.Tensor
        ``(M, B, D)`` outputs of ``M`` projectors on one sample batch of ``B`` inputs.

    Returns
    -------
    torch.Tensor
        ``(M, M)`` symmetric PSD kernel in ``[−1, 1]`` with unit diagonal (zero for a
        projector whose outputs are all zero), in ``promote_types(dtype, float32)``.
    """
    if outputs.ndim != 3:
        raise ConfigError(f"projector outputs must be (M, B, D), got shape {tuple(outputs.shape)}")
    dtype = torch.promote_types(outputs.dtype, torch.float32)
    with torch.autocast(device_type=outputs.device.type, enabled=False):
        normalized = F.normalize(outputs.detach().to(dtype), dim=2)
        sample_similarity = normalized @ normalized.transpose(1, 2)  # (M, B, B)
        flat = F.normalize(sample_similarity.flatten(1), dim=1)  # (M, B²)
        return flat @ flat.T
