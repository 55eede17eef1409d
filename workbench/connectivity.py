"""Functional connectivity: window correlations, Fisher z, FC profiles and group FC — the one copy.

Every layer that needs connectivity calls this module: the FC-fingerprint and LDA baselines,
the ``connectome`` backbone, Brain-JEPA's connectivity gradients and the data-inspection
figures. It computes in torch (float64 for numpy input, the input's dtype for tensors), so the
same function serves numpy arrays on the CPU and batches on a GPU.

=====================  ==========================================  =========================
function               input                                       output
=====================  ==========================================  =========================
:func:`correlation`    ``(..., T, R)`` series                      ``(..., R, R)`` Pearson r
:func:`fisher_z`       correlations                                ``arctanh`` of clipped r
:func:`upper_triangle` ``(..., R, R)``                             ``(..., R(R-1)/2)`` edges
:func:`fc_profile`     ``(..., T, R)`` windows                     ``(..., R(R-1)/2)`` z-scored
:func:`group_fc`       ``(N, T, R)`` windows                       ``(R, R)`` group matrix
=====================  ==========================================  =========================

Conventions: Pearson correlation over the frames (population moments); a ROI that is constant
within a window has correlation 0 with every ROI, itself included, instead of NaN (its standard
deviation is guarded by :data:`EPS`); ``|r|`` is clipped to :data:`R_MAX` before ``arctanh`` so
that perfectly coupled ROIs (and the diagonal) stay finite. Edges are the upper triangle
``i < j`` in row-major order, as :func:`numpy.triu_indices`.

References
----------
Finn E.S. et al. (2015). Functional connectome fingerprinting: identifying individuals using
patterns of brain connectivity. Nature Neuroscience 18: 1664-1671.
Fisher R.A. (1915). Frequency distribution of the values of the correlation coefficient in
samples from an indefinitely large population. Biometrika 10: 507-521.
"""

from __future__ import annotations

import numpy as np
import torch

from workbench.errors import DataError

R_MAX = 1.0 - 1e-7
"""Largest ``|r|`` passed to ``arctanh`` (Fisher z at most about 8.4; real edges have |z| < 4)."""
EPS = 1e-8
"""Added to every standard deviation: constant series get zero correlations, not NaN."""
_CHUNK = 256  # windows per batched product (bounds memory to about 256 * R * R floats)


def _tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    return torch.from_numpy(np.asarray(x, dtype=np.float64))


def _check_series(x: torch.Tensor, what: str) -> None:
    if x.ndim < 2 or x.shape[-2] < 2 or x.shape[-1] < 2:
        raise DataError(f"{what}: expected series (..., T >= 2, R >= 2) with time before ROIs, got {tuple(x.shape)}")


def correlation(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Pearson correlation between the ROIs of each series over its frames.

    Parameters
    ----------
    x : array or tensor
        ``(..., T, R)`` series, time first.

    Returns
    -------
    torch.Tensor
        ``(..., R, R)``; float64 for numpy input, ``x``'s dtype and device for a tensor.
    """
    x = _tensor(x)
    _check_series(x, "correlation")
    centred = x - x.mean(dim=-2, keepdim=True)
    unit = centred / (centred.pow(2).mean(dim=-2, keepdim=True).sqrt() + EPS)
    return unit.transpose(-1, -2) @ unit / x.shape[-2]


def fisher_z(r: torch.Tensor) -> torch.Tensor:
    """``arctanh(r)`` with ``|r|`` clipped to :data:`R_MAX`."""
    return torch.atanh(r.clamp(-R_MAX, R_MAX))


def upper_triangle(matrix: torch.Tensor) -> torch.Tensor:
    """Entries ``i < j`` of ``(..., R, R)`` matrices, row-major: ``(..., R(R-1)/2)``."""
    rows, cols = torch.triu_indices(matrix.shape[-1], matrix.shape[-1], offset=1, device=matrix.device)
    return matrix[..., rows, cols]


def fc_profile(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """FC fingerprint of each window (Finn et al. 2015): Fisher-z edges z-scored across edges.

    Parameters
    ----------
    x : array or tensor
        ``(..., T, R)`` windows.

    Returns
    -------
    torch.Tensor
        ``(..., R(R-1)/2)``: each window's edges with mean 0 and standard deviation 1 (a window
        whose edges are all equal gets zeros).
    """
    z = upper_triangle(fisher_z(correlation(x)))
    z = z - z.mean(dim=-1, keepdim=True)
    return z / (z.pow(2).mean(dim=-1, keepdim=True).sqrt() + EPS)


def fc_profiles(windows: np.ndarray, batch_size: int = _CHUNK) -> np.ndarray:
    """:func:`fc_profile` of ``(n, T, R)`` numpy windows in batches: ``(n, R(R-1)/2)`` float32."""
    windows = np.asarray(windows)
    if windows.ndim != 3:
        raise DataError(f"fc_profiles: expected windows (n, T, R), got shape {windows.shape}")
    n_edges = windows.shape[2] * (windows.shape[2] - 1) // 2
    out = np.empty((windows.shape[0], n_edges), dtype=np.float32)
    for start in range(0, windows.shape[0], batch_size):
        out[start : start + batch_size] = fc_profile(windows[start : start + batch_size]).numpy()
    return out


def fc_matrix(series: np.ndarray) -> np.ndarray:
    """ROI × ROI Pearson correlation of one ``(T, R)`` series as float64 numpy (for figures)."""
    series = np.asarray(series)
    if series.ndim != 2:
        raise DataError(f"fc_matrix: expected a (T, R) series, got shape {series.shape}")
    return correlation(series).numpy()


def group_fc(windows: np.ndarray | list[np.ndarray], batch_size: int = _CHUNK) -> np.ndarray:
    """Group FC: ``tanh`` of the mean Fisher-z correlation matrix of the windows (or runs).

    Averaging Fisher-z values weighs every window equally whatever its mean and variance. The
    products run in float32 (correlations accurate to about 1e-7, several times faster than
    float64 at 450 ROIs) and are summed in float64.

    Parameters
    ----------
    windows : array or list of arrays
        ``(N, T, R)`` windows, or a list of ``(T_i, R)`` runs of different lengths.

    Returns
    -------
    numpy.ndarray
        ``(R, R)`` float64, symmetric, unit diagonal.
    """
    if isinstance(windows, list):
        if not windows:
            raise DataError("group_fc: no series given")
        blocks = [np.asarray(w)[None] for w in windows]
    else:
        windows = np.asarray(windows)
        if windows.ndim != 3 or windows.shape[0] < 1:
            raise DataError(f"group_fc: expected windows (N >= 1, T, R), got shape {windows.shape}")
        blocks = [windows[i : i + batch_size] for i in range(0, windows.shape[0], batch_size)]
    n_rois = {b.shape[-1] for b in blocks}
    if len(n_rois) > 1:
        raise DataError(f"group_fc: series differ in ROI count {sorted(n_rois)}; use one parcellation")
    if not all(np.isfinite(b).all() for b in blocks):
        raise DataError("group_fc: the series hold NaN or inf values; clean the data first")
    n = n_rois.pop()
    z_sum, count = torch.zeros(n, n, dtype=torch.float64), 0
    for block in blocks:
        z_sum += fisher_z(correlation(torch.as_tensor(block, dtype=torch.float32))).sum(dim=0).double()
        count += block.shape[0]
    z_mean = z_sum.numpy() / count
    fc = np.tanh(0.5 * (z_mean + z_mean.T))  # float32 products are symmetric only to rounding
    np.fill_diagonal(fc, 1.0)
    return fc


__all__ = [
    "EPS",
    "R_MAX",
    "correlation",
    "fc_matrix",
    "fc_profile",
    "fc_profiles",
    "fisher_z",
    "group_fc",
    "upper_triangle",
]
