"""Kernels on label distances, bandwidths and categorical codes for y-Aware contrastive losses.

A pair of label vectors ``y_a``, ``y_b`` (``k`` columns) is compared through the scaled distance
``x = ‖H^{-1/2}(y_a − y_b)‖`` and a kernel profile ``K(x)`` with ``K(0) = 1``::

    gaussian      exp(−x²/2)
    epanechnikov  (1 − x²)   · 1[x < 1]
    exponential   exp(−x)
    linear        (1 − x)    · 1[x < 1]
    cosine        cos(πx/2)  · 1[x < 1]

``H`` plays the role of ``σ²`` (PhD thesis of B. Dufumier, 2022, pp. 94–95; nidl's
``KernelMetric``): a positive scalar ``h`` means ``H = h·I``, a 1-D array a diagonal ``H``, a 2-D
array a symmetric positive-definite ``H``. The rules of thumb (:func:`bandwidth_rule_factor`)
fit a diagonal ``H`` from the training labels.

Categorical columns are one-hot coded (:func:`one_hot_codes`): two samples of one category
are at distance 0, two of different categories at ``‖Δ‖ = √2``, so under a scalar bandwidth
``h`` on those columns their weight is ``K(√(2/h))``; :func:`categorical_bandwidth` solves for
the ``h`` giving a chosen cross-category weight.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch

from workbench.errors import ConfigError

KernelName = Literal["gaussian", "epanechnikov", "exponential", "linear", "cosine"]
BandwidthRule = Literal["scott", "silverman"]
Bandwidth = float | Sequence[float] | Sequence[Sequence[float]] | np.ndarray | torch.Tensor | BandwidthRule

BANDWIDTH_FIX = (
    "pass a positive number, a 1-D array of positive per-column values, a symmetric "
    "positive-definite (k, k) matrix, or 'scott' / 'silverman'"
)


def _compact(profile: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: torch.where(x < 1, profile(x), torch.zeros_like(x))


KERNELS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gaussian": lambda x: torch.exp(-0.5 * x * x),
    "epanechnikov": _compact(lambda x: 1 - x * x),
    "exponential": lambda x: torch.exp(-x),
    "linear": _compact(lambda x: 1 - x),
    "cosine": _compact(lambda x: torch.cos(0.5 * math.pi * x)),
}
"""Kernel profiles ``K(x)`` on the non-negative scaled distance ``x``."""

# Inverse profiles x = K⁻¹(w) for w in (0, 1), used by categorical_bandwidth.
_INVERSE_KERNELS: dict[str, Callable[[float], float]] = {
    "gaussian": lambda w: math.sqrt(-2.0 * math.log(w)),
    "epanechnikov": lambda w: math.sqrt(1.0 - w),
    "exponential": lambda w: -math.log(w),
    "linear": lambda w: 1.0 - w,
    "cosine": lambda w: 2.0 * math.acos(w) / math.pi,
}


def check_kernel(kernel: str) -> str:
    """Return ``kernel`` if it names one of :data:`KERNELS`, else raise a ``ConfigError``."""
    if kernel not in KERNELS:
        raise ConfigError(f"kernel must be one of {sorted(KERNELS)}, got kernel={kernel!r}")
    return kernel


def one_hot_codes(codes: torch.Tensor, n_categories: int) -> torch.Tensor:
    """One-hot code a categorical label column given as float codes.

    Parameters
    ----------
    codes : torch.Tensor
        ``(n,)`` float codes into the column's categories (``LabelColumn.categories``);
        NaN where undefined.
    n_categories : int
        Number of categories ``C``.

    Returns
    -------
    torch.Tensor
        ``(n, C)`` one-hot rows in the dtype of ``codes`` (float32 for integer codes); a row
        is all NaN where the code is NaN, negative, fractional or ``>= C`` (undefined label),
        so the pair weights of :class:`YAwareInfoNCE` treat it as unknown. No host sync.
    """
    if n_categories < 1:
        raise ConfigError(f"n_categories must be >= 1, got {n_categories}")
    if codes.ndim != 1:
        raise ConfigError(f"categorical codes must be a (n,) column, got shape {tuple(codes.shape)}")
    codes = codes if codes.is_floating_point() else codes.float()
    valid = (codes >= 0) & (codes < n_categories) & (codes == torch.round(codes))
    categories = torch.arange(n_categories, device=codes.device, dtype=codes.dtype)
    one_hot = (codes[:, None] == categories[None, :]).to(codes.dtype)
    return torch.where(valid[:, None], one_hot, torch.full_like(one_hot, float("nan")))


def categorical_bandwidth(kernel: KernelName, cross_weight: float) -> float:
    """Scalar bandwidth ``h`` under which two different one-hot categories weigh ``cross_weight``.

    Different categories sit at ``‖Δ‖ = √2``, so ``x = √(2/h)`` and ``h = 2 / K⁻¹(w)²``.

    Parameters
    ----------
    kernel : str
        One of :data:`KERNELS`.
    cross_weight : float
        Weight ``w`` wanted between samples of different categories (same category: 1).
        ``0 <= w < 1``. ``w = 0`` needs a compact kernel; any ``h <= 2`` (``x >= 1``) gives it in
        exact arithmetic, and ``h = 1`` (``x = √2``) is returned to stay clear of the support's edge,
        where float32 rounding of ``x = 1`` would leave a weight of about 1e-7.

    Returns
    -------
    float
        The bandwidth ``h`` to use for the one-hot columns.
    """
    check_kernel(kernel)
    if not 0.0 <= cross_weight < 1.0:
        raise ConfigError(f"cross_weight must be in [0, 1), got {cross_weight}")
    if cross_weight == 0.0:
        if kernel in ("gaussian", "exponential"):
            raise ConfigError(
                f"the {kernel} kernel never reaches 0; give cross_weight > 0 or choose a compact "
                "kernel (epanechnikov, linear, cosine)"
            )
        return 1.0
    return 2.0 / _INVERSE_KERNELS[kernel](cross_weight) ** 2


def inverse_sqrt_bandwidth(bandwidth: Bandwidth) -> torch.Tensor:
    """``H^{-1/2}`` of a fixed bandwidth, validated.

    Parameters
    ----------
    bandwidth : float, array-like or torch.Tensor
        ``H``: a positive scalar, a ``(k,)`` positive diagonal or a ``(k, k)`` symmetric
        positive-definite matrix (rules are handled by the loss, not here).

    Returns
    -------
    torch.Tensor
        float64 CPU tensor: 0-d for a scalar, ``(k,)`` for a diagonal, ``(k, k)`` (symmetric,
        by eigendecomposition) for a full matrix.

    Raises
    ------
    ConfigError
        Naming ``bandwidth`` and the accepted forms, for anything else (non-numeric, empty,
        non-finite, non-positive, more than 2-D, non-square, non-symmetric, not positive definite).
    """
    if isinstance(bandwidth, bool):
        raise ConfigError(f"bandwidth must be numeric, got bandwidth={bandwidth!r}; {BANDWIDTH_FIX}")
    if isinstance(bandwidth, torch.Tensor):
        bandwidth = bandwidth.detach().cpu().numpy()
    try:
        h = np.asarray(bandwidth, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"bandwidth is not numeric ({error}); {BANDWIDTH_FIX}") from None
    if h.size == 0 or not np.all(np.isfinite(h)):
        raise ConfigError(f"bandwidth must be finite and non-empty, got {h.tolist()}; {BANDWIDTH_FIX}")
    if h.ndim <= 1:
        if np.any(h <= 0):
            raise ConfigError(f"bandwidth must be positive, got {h.tolist()}; {BANDWIDTH_FIX}")
        return torch.from_numpy(np.asarray(1.0 / np.sqrt(h)))
    if h.ndim != 2 or h.shape[0] != h.shape[1]:
        raise ConfigError(f"bandwidth must be at most 2-D and square, got shape {h.shape}; {BANDWIDTH_FIX}")
    if not np.allclose(h, h.T, rtol=1e-6, atol=1e-12):
        raise ConfigError(f"bandwidth matrix is not symmetric: {h.tolist()}; {BANDWIDTH_FIX}")
    eigenvalues, eigenvectors = np.linalg.eigh((h + h.T) / 2)
    if np.any(eigenvalues <= 0):
        raise ConfigError(
            f"bandwidth matrix is not positive definite (eigenvalues {eigenvalues.tolist()}); {BANDWIDTH_FIX}"
        )
    return torch.from_numpy((eigenvectors / np.sqrt(eigenvalues)) @ eigenvectors.T)


def bandwidth_rule_factor(rule: BandwidthRule, n_samples: int, n_columns: int) -> float:
    """Rule-of-thumb factor ``f`` of the per-column bandwidth ``h_j = f · σ_j`` (``H = diag(h²)``).

    Scott (1992): ``f = n^{-1/(d+4)}``. Silverman (1986): ``f = (n (d+2) / 4)^{-1/(d+4)}``
    (for ``d = 1`` this is ``1.06 n^{-1/5}``, the familiar normal-reference rule). ``n`` is the
    number of samples and ``d`` the number of label columns; the same factors as
    ``scipy.stats.gaussian_kde`` and nidl's ``KernelMetric``.
    """
    if rule == "scott":
        return n_samples ** (-1.0 / (n_columns + 4))
    if rule == "silverman":
        return (n_samples * (n_columns + 2) / 4.0) ** (-1.0 / (n_columns + 4))
    raise ConfigError(f"bandwidth rule must be 'scott' or 'silverman', got {rule!r}")
