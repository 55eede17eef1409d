"""Group-level connectivity gradients for Brain-JEPA's gradient positional embedding.

Brain-JEPA (Dong et al., NeurIPS 2024) places every ROI by its coordinates on the
principal gradients of functional connectivity (Margulies et al., 2016), computed
with BrainSpace (Vos de Wael et al., 2020) on a large cohort. That file is tied to
one atlas, so the workbench computes the gradients from the training windows
instead, or loads them from a CSV:

1. :func:`workbench.connectivity.group_fc` — one ``(R, R)`` group connectivity matrix from training windows.
2. :func:`diffusion_map_gradients` — BrainSpace-style diffusion-map embedding of it.
3. :func:`load_gradients_csv` — a precomputed ``(R, k)`` table, checked against ``R``.

References
----------
Margulies D.S. et al. (2016). Situating the default-mode network along a principal
gradient of macroscale cortical organization. PNAS 113(44): 12574-12579.
Coifman R.R. & Lafon S. (2006). Diffusion maps. Applied and Computational Harmonic
Analysis 21: 5-30.
Vos de Wael R. et al. (2020). BrainSpace: a toolbox for the analysis of macroscale
gradients in neuroimaging and connectomics datasets. Communications Biology 3: 103.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
from scipy.linalg import eigh
from scipy.sparse.csgraph import connected_components

from workbench.errors import DataError


class DisconnectedAffinityError(DataError):
    """The sparsified affinity graph has several connected components."""


def diffusion_map_gradients(fc: np.ndarray, k: int, alpha: float = 0.5, sparsity: float = 0.9) -> np.ndarray:
    """The first ``k`` connectivity gradients of ``fc`` by diffusion-map embedding.

    The steps follow BrainSpace's ``GradientMaps(approach="dm", kernel="cosine")``:

    1. **Sparsify** — set the diagonal (self-connections) to zero, then in each
       row keep the ``ceil((1 - sparsity) * R)`` largest entries (the top 10 % at
       the default) and set the rest to zero. (BrainSpace ranks the diagonal too;
       at R = 450 that changes one of 45 kept entries, at R = 10 it would keep
       nothing but the self-connection.)
    2. **Affinity** — cosine similarity between the sparsified rows; negative
       similarities are set to zero. The result ``W`` is symmetric, non-negative,
       with a positive diagonal.
    3. **Anisotropic normalisation** (Coifman & Lafon 2006) — with degrees
       ``d = W 1``, ``W_a = D^-alpha W D^-alpha``; ``alpha = 0.5`` is the
       Fokker-Planck normalisation used by Margulies et al. (2016).
    4. **Diffusion operator** — ``P = D_a^-1 W_a`` is row-stochastic. Its
       eigenvectors come from the symmetric ``S = D_a^-1/2 W_a D_a^-1/2``
       (same eigenvalues; ``psi = D_a^-1/2 phi``), solved densely with
       :func:`scipy.linalg.eigh`, so the result is deterministic.
    5. **Embedding** — eigenpairs sorted by decreasing eigenvalue; ``psi`` is
       divided by the trivial constant eigenvector; the trivial pair is dropped;
       each gradient is scaled by ``lambda / (1 - lambda)`` (BrainSpace's
       multi-scale diffusion map, all diffusion times summed); the sign of each
       gradient makes its largest-magnitude entry positive.

    The gradients are orthogonal in the inner product weighted by the
    stationary distribution ``D_a 1``: ``G.T @ diag(d_a) @ G`` is diagonal.

    Parameters
    ----------
    fc : np.ndarray
        ``(R, R)`` symmetric connectivity (e.g. from :func:`workbench.connectivity.group_fc`).
    k : int
        Number of gradients, ``k >= 1``. A graph of ``R`` nodes has only
        ``R - 1`` non-trivial gradients: a larger ``k`` is lowered to ``R - 1``
        with a warning.
    alpha : float
        Anisotropic diffusion parameter in ``[0, 1]``.
    sparsity : float
        Fraction of the smallest entries of each row set to zero, in ``[0, 1)``.

    Returns
    -------
    np.ndarray
        ``(R, min(k, R - 1))`` float64 gradients, the principal gradient in column 0.

    Raises
    ------
    DataError
        If ``fc`` is not a finite square matrix or an ROI has no affinity at all.
    DisconnectedAffinityError
        If the affinity graph falls apart into several components: its gradients
        would be undefined (eigenvalue 1 repeats); a lower ``sparsity`` keeps more
        connections.
    ValueError
        If ``k``, ``alpha`` or ``sparsity`` is out of range.
    """
    fc = np.asarray(fc, dtype=np.float64)
    if fc.ndim != 2 or fc.shape[0] != fc.shape[1] or not np.isfinite(fc).all():
        raise DataError(f"diffusion_map_gradients: fc must be a finite (R, R) matrix, got shape {fc.shape}")
    r = fc.shape[0]
    if r < 2 or k < 1:
        raise ValueError(f"diffusion_map_gradients: need R >= 2 ROIs and k >= 1, got R={r}, k={k}")
    if k > r - 1:
        warnings.warn(
            f"diffusion_map_gradients: {r} ROIs have only {r - 1} non-trivial gradients; "
            f"using k={r - 1} instead of {k}",
            stacklevel=2,
        )
        k = r - 1
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"diffusion_map_gradients: alpha must be in [0, 1], got {alpha}")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"diffusion_map_gradients: sparsity must be in [0, 1), got {sparsity}")

    # 1. row-wise top-(1 - sparsity) sparsification of the connections to other ROIs
    fc = fc.copy()
    np.fill_diagonal(fc, 0.0)
    keep = max(1, math.ceil((1.0 - sparsity) * r))
    threshold = np.partition(fc, r - keep, axis=1)[:, r - keep : r - keep + 1]  # (R, 1)
    sparse = np.where(fc >= threshold, fc, 0.0)
    # 2. cosine affinity, negatives removed
    norms = np.linalg.norm(sparse, axis=1, keepdims=True)
    unit = np.divide(sparse, norms, out=np.zeros_like(sparse), where=norms > 0)
    affinity = np.clip(unit @ unit.T, 0.0, None)
    affinity = 0.5 * (affinity + affinity.T)
    degree = affinity.sum(axis=1)
    if (degree <= 0).any():
        bad = np.flatnonzero(degree <= 0)[:10].tolist()
        raise DataError(
            f"diffusion_map_gradients: ROI(s) {bad} have no connections in the connectivity matrix "
            "(constant signal in every training window?); drop them or fix the data"
        )
    n_comp, _ = connected_components(affinity > 0, directed=False)
    if n_comp > 1:
        raise DisconnectedAffinityError(
            f"diffusion_map_gradients: the affinity graph has {n_comp} disconnected components at "
            f"sparsity={sparsity}; lower the sparsity (gradient_sparsity in the Brain-JEPA config)"
        )
    # 3. anisotropic normalisation
    d_pow = degree ** (-alpha)
    w_alpha = affinity * d_pow[:, None] * d_pow[None, :]
    d_alpha = w_alpha.sum(axis=1)
    # 4. symmetric conjugate of the diffusion operator; eigh returns ascending eigenvalues
    inv_sqrt = 1.0 / np.sqrt(d_alpha)
    sym = w_alpha * inv_sqrt[:, None] * inv_sqrt[None, :]
    eigvals, eigvecs = eigh(sym, subset_by_index=[r - k - 1, r - 1])
    eigvals, eigvecs = eigvals[::-1], eigvecs[:, ::-1]
    psi = eigvecs * inv_sqrt[:, None]
    # 5. normalise by the trivial (constant) eigenvector, drop it, multi-scale weights
    psi = psi / psi[:, :1]
    lam = np.clip(eigvals[1:] / eigvals[0], None, 1.0 - 1e-12)
    grads = psi[:, 1:] * (lam / (1.0 - lam))[None, :]
    signs = np.sign(grads[np.abs(grads).argmax(axis=0), np.arange(k)])
    return grads * np.where(signs == 0, 1.0, signs)[None, :]


def load_gradients_csv(path: str | Path, n_rois: int) -> np.ndarray:
    """Read a precomputed gradient table: one row per ROI, one column per gradient.

    The file is plain comma-separated numbers without a header (the format of
    Brain-JEPA's ``gradient_mapping_450.csv``); rows must follow the ROI order of
    the data.

    Parameters
    ----------
    path : str or Path
        CSV file.
    n_rois : int
        Number of ROIs of the data, ``R``.

    Returns
    -------
    np.ndarray
        ``(R, k)`` float64 gradients.

    Raises
    ------
    DataError
        If the file is missing, not numeric, not finite, or has a number of rows
        other than ``n_rois``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"gradient CSV {path} does not exist; fix gradients_csv in the Brain-JEPA config")
    try:
        table = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float64)
    except ValueError as exc:
        raise DataError(
            f"gradient CSV {path} is not a table of numbers ({exc}); expected R rows of k "
            "comma-separated gradient values and no header"
        ) from None
    if table.shape[0] != n_rois:
        raise DataError(
            f"gradient CSV {path} has {table.shape[0]} rows but the data has {n_rois} ROIs; "
            "use a gradient file made for this atlas (one row per ROI, in the data's ROI order)"
        )
    if not np.isfinite(table).all():
        raise DataError(f"gradient CSV {path} holds NaN or inf values")
    return table
