"""Effective rank of embeddings (RankMe), of centred and standardised embeddings.

RankMe (Garrido, Balestriero, Najman and LeCun 2023, "RankMe: Assessing the downstream
performance of pretrained self-supervised representations by their rank", ICML): with the
singular values ``σ_k`` of an ``(n, D)`` matrix, ``p_k = σ_k / Σ_j σ_j + ε`` (``ε = 1e-7``) and
``RankMe = exp(-Σ_k p_k log p_k)``, the exponential of the entropy of the normalised spectrum:
about 1 when every row lies on one line, up to ``min(n, D)`` for a flat spectrum.

The paper applies it to the raw matrix, where a shared offset — the same vector added to every
embedding, which no probe or prototype distance sees — counts as one strong direction and drags
RankMe towards 1 however varied the embeddings are around it. Here the matrix is **centred**
(each dimension's mean over the rows removed) by default, so the offset is not read as
collapse; ``standardize=True`` also divides each dimension by its spread, so that a few
dimensions of large scale do not hide the others. The training engine logs it while training
and the collapse check (:mod:`workbench.evaluation.collapse`) reports it with the offset apart.
"""

from __future__ import annotations

import numpy as np

RANKME_EPS = 1e-7
_FLAT = 1e-12  # a dimension whose spread is below this (relative to the largest) counts as constant


def prepare_rows(embeddings: np.ndarray, centre: bool = True, standardize: bool = False) -> np.ndarray:
    """``(n, D)`` float64, centred over the rows (and each column divided by its spread when asked).

    A column with no spread stays at zero when standardised (it carries nothing).
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if centre or standardize:
        x = x - x.mean(axis=0)
    if standardize:
        std = x.std(axis=0)
        scale = std.max() if std.size else 0.0
        x = np.divide(x, std, out=np.zeros_like(x), where=std > _FLAT * max(scale, 1e-300))
    return x


def normalized_spectrum(embeddings: np.ndarray, centre: bool = True, standardize: bool = False) -> np.ndarray:
    """Singular values of the (centred) rows, largest first, divided by their sum (zeros if all vanish)."""
    sigma = np.linalg.svd(prepare_rows(embeddings, centre, standardize), compute_uv=False)
    total = sigma.sum()
    return sigma / total if total > 0 else sigma


def rankme(embeddings: np.ndarray, centre: bool = True, standardize: bool = False, eps: float = RANKME_EPS) -> float:
    """RankMe of ``(n, D)`` embeddings: ``exp`` of the entropy of the normalised singular values.

    Parameters
    ----------
    embeddings : numpy.ndarray
        ``(n, D)``, one row per window.
    centre : bool
        Remove each dimension's mean first (default), so a shared offset is not a direction.
        ``False`` is the paper's uncentred value.
    standardize : bool
        Also divide each dimension by its standard deviation over the rows.
    eps : float
        Added to every normalised singular value (the paper's ``ε``).

    Returns
    -------
    float
        In ``[1, min(n, D)]`` up to ``ε`` (``[1, min(n − 1, D)]`` centred: centring removes one
        direction of the rows). Centred rows of identical embeddings have no spectrum
        at all; their RankMe is reported as 1 (the ``ε`` terms alone give ``≈ 1``).
    """
    p = normalized_spectrum(embeddings, centre, standardize)
    if not p.any():
        return 1.0
    p = p + eps
    return float(np.exp(-(p * np.log(p)).sum()))


__all__ = ["RANKME_EPS", "normalized_spectrum", "prepare_rows", "rankme"]
