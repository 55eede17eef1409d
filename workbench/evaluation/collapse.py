"""Collapse check of frozen embeddings: effective rank, spread per dimension, shared direction.

A self-supervised encoder can satisfy its loss by mapping every window to (nearly) the same
point or to a low-dimensional subspace; such embeddings carry little that a probe or a
prototype can use, whatever the loss curve says. Three numbers tell it apart:

* **RankMe** (Garrido, Balestriero, Najman and LeCun 2023, "RankMe: Assessing the downstream
  performance of pretrained self-supervised representations by their rank", ICML): with the
  singular values ``σ_k`` of the ``(n, D)`` embedding matrix, ``p_k = σ_k / Σ_j σ_j + ε``
  (``ε = 1e-7``) and ``RankMe = exp(-Σ_k p_k log p_k)``, the exponential of the entropy of the
  normalised spectrum: about 1 when all embeddings lie on one line, up to ``min(n, D)`` when
  the spectrum is flat. As in the paper the matrix is not centred, so a shared offset counts
  as one direction.
* **Standard deviation per dimension** over the windows, beside the mean embedding norm: a
  spread far below the norm means every window sits at nearly the same point.
* **Cosine with the mean direction**: for each window, the cosine of its embedding with the
  mean embedding; a mean close to 1 means every embedding points the same way.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from workbench.data.windows import WindowSet
from workbench.errors import DataError
from workbench.evaluation.pools import EmbedFn, embed_windows

RANKME_EPS = 1e-7


def _matrix(embeddings: np.ndarray) -> np.ndarray:
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise DataError(f"collapse check: embeddings must be (n, D) with n >= 2 windows, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise DataError("collapse check: the embeddings contain NaN or inf; check the embedding function")
    return x


def singular_spectrum(embeddings: np.ndarray) -> np.ndarray:
    """Singular values ``σ_k`` of the ``(n, D)`` embeddings, largest first, divided by their sum."""
    sigma = np.linalg.svd(_matrix(embeddings), compute_uv=False)
    total = sigma.sum()
    return sigma / total if total > 0 else sigma


def rankme(embeddings: np.ndarray, eps: float = RANKME_EPS) -> float:
    """RankMe of ``(n, D)`` embeddings: ``exp`` of the entropy of the normalised singular values.

    Parameters
    ----------
    embeddings : numpy.ndarray
        ``(n, D)``, one row per window.
    eps : float
        Added to every normalised singular value (the paper's ``ε``), so that zeros are harmless.

    Returns
    -------
    float
        In ``[1, min(n, D)]`` up to ``ε``: 1 for rank-one embeddings, ``min(n, D)`` for a flat spectrum.
    """
    p = singular_spectrum(embeddings) + eps
    return float(np.exp(-(p * np.log(p)).sum()))


def cosine_to_mean(embeddings: np.ndarray) -> np.ndarray:
    """``(n,)`` cosine of every embedding with the mean embedding (0 for a zero vector)."""
    x = _matrix(embeddings)
    mean = x.mean(axis=0)
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(mean)
    return np.divide(x @ mean, norms, out=np.zeros(x.shape[0]), where=norms > 0)


def collapse_summary(embeddings: np.ndarray) -> dict[str, float]:
    """The collapse check of one set of embeddings, as plain numbers.

    Returns
    -------
    dict
        ``windows`` and ``dim`` (``n``, ``D``); ``rankme`` and ``rankme_fraction`` (RankMe over
        ``min(n, D)``); ``std_mean`` / ``std_min`` / ``std_max``, the standard deviation of each
        dimension over the windows; ``norm_mean``, the mean embedding norm; ``cosine_mean`` /
        ``cosine_min``, the cosine of the embeddings with their mean direction.
    """
    x = _matrix(embeddings)
    std = x.std(axis=0)
    cosine = cosine_to_mean(x)
    value = rankme(x)
    return {
        "windows": int(x.shape[0]),
        "dim": int(x.shape[1]),
        "rankme": value,
        "rankme_fraction": value / min(x.shape),
        "std_mean": float(std.mean()),
        "std_min": float(std.min()),
        "std_max": float(std.max()),
        "norm_mean": float(np.linalg.norm(x, axis=1).mean()),
        "cosine_mean": float(cosine.mean()),
        "cosine_min": float(cosine.min()),
    }


def collapse_table(embeddings: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """One row of :func:`collapse_summary` per family, indexed by the family's name."""
    if not embeddings:
        raise DataError("collapse_table got no embeddings; pass {family: (n, D) array}")
    rows = [{"method": name, **collapse_summary(emb)} for name, emb in embeddings.items()]
    return pd.DataFrame(rows).set_index("method")


def collapse_check(embed_fns: Mapping[str, EmbedFn], windows: WindowSet) -> pd.DataFrame:
    """Embed the same windows with every family and tabulate the collapse check (what the report shows).

    Parameters
    ----------
    embed_fns : mapping of str to EmbedFn
        ``{family: (n, W, F) -> (n, D)}``, e.g. :func:`workbench.runs.embed_function` of trained runs.
    windows : WindowSet
        The windows to embed (held-out windows say most).
    """
    return collapse_table({name: embed_windows(fn, windows) for name, fn in embed_fns.items()})


__all__ = [
    "RANKME_EPS",
    "collapse_check",
    "collapse_summary",
    "collapse_table",
    "cosine_to_mean",
    "rankme",
    "singular_spectrum",
]
