"""Collapse check of frozen embeddings: effective rank around the mean, spread, and the offset apart.

A self-supervised encoder can satisfy its loss by mapping every window to (nearly) the same
point or to a low-dimensional subspace; such embeddings carry little that a probe or a
prototype can use, whatever the loss curve says. What matters is how the windows vary **around
their mean**: a shared offset (the same vector added to every embedding — a bias, or a path of
the network that is constant by construction) is invisible to a probe, to a prototype distance
and to a cosine between centred embeddings, and is never collapse. So every number here is
computed on the centred embeddings, and the offset is reported beside them, apart:

* **RankMe** (Garrido, Balestriero, Najman and LeCun 2023, ICML) of the *centred* embeddings
  (:func:`workbench.spectrum.rankme`): about 1 when all windows lie on one line through their
  mean, up to ``min(n, D)`` when they vary in every direction alike; and of the *standardised*
  embeddings (each dimension divided by its spread), which a few dimensions of large scale
  cannot dominate. The paper's uncentred value is kept as ``rankme_uncentred`` for reference:
  with a large offset it reads close to 1 however varied the windows are.
* **Spread per dimension**: the standard deviation of every dimension over the windows,
  beside the norm of the mean embedding (the **offset**) and the mean distance of the windows
  from it (the **spread**); ``offset_ratio`` = offset / spread says how much of every
  embedding is the shared part.
* **Cosine with the mean direction** (uncentred, as a description of the offset): a mean close
  to 1 means every embedding points the same way — which an offset alone produces; read it
  with ``offset_ratio``, not as collapse.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from workbench.data.windows import WindowSet
from workbench.errors import DataError
from workbench.evaluation.pools import EmbedFn, embed_windows
from workbench.spectrum import RANKME_EPS, normalized_spectrum
from workbench.spectrum import rankme as _rankme


def _matrix(embeddings: np.ndarray) -> np.ndarray:
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise DataError(f"collapse check: embeddings must be (n, D) with n >= 2 windows, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise DataError("collapse check: the embeddings contain NaN or inf; check the embedding function")
    return x


def singular_spectrum(embeddings: np.ndarray, centre: bool = True) -> np.ndarray:
    """Singular values ``σ_k`` of the ``(n, D)`` embeddings (centred by default), largest first, over their sum."""
    return normalized_spectrum(_matrix(embeddings), centre=centre)


def rankme(embeddings: np.ndarray, centre: bool = True, standardize: bool = False, eps: float = RANKME_EPS) -> float:
    """RankMe of ``(n, D)`` embeddings, centred by default (see :func:`workbench.spectrum.rankme`).

    Raises
    ------
    DataError
        Not an ``(n >= 2, D)`` matrix, or NaN / inf entries.
    """
    return _rankme(_matrix(embeddings), centre=centre, standardize=standardize, eps=eps)


def cosine_to_mean(embeddings: np.ndarray) -> np.ndarray:
    """``(n,)`` cosine of every (uncentred) embedding with the mean embedding (0 for a zero vector).

    It describes the shared offset: close to 1 when the offset dominates every embedding.
    """
    x = _matrix(embeddings)
    mean = x.mean(axis=0)
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(mean)
    return np.divide(x @ mean, norms, out=np.zeros(x.shape[0]), where=norms > 0)


def collapse_summary(embeddings: np.ndarray) -> dict[str, float]:
    """The collapse check of one set of embeddings, as plain numbers.

    Returns
    -------
    dict
        ``windows`` and ``dim`` (``n``, ``D``); ``rankme`` (centred) and ``rankme_fraction``
        (over ``min(n - 1, D)``, the most a centred matrix can reach); ``rankme_standardized``
        (each dimension scaled to unit spread); ``rankme_uncentred`` (the paper's raw value, for
        reference); ``std_mean`` / ``std_min`` / ``std_max``, the standard deviation of each
        dimension over the windows; ``offset_norm``, the norm of the mean embedding;
        ``spread``, the mean distance of the embeddings from their mean; ``offset_ratio``,
        offset over spread (``inf`` when the windows do not vary at all); ``norm_mean``, the
        mean embedding norm; ``cosine_mean`` / ``cosine_min``, the cosine of the (uncentred)
        embeddings with their mean direction.
    """
    x = _matrix(embeddings)
    std = x.std(axis=0)
    cosine = cosine_to_mean(x)
    mean = x.mean(axis=0)
    offset, spread = float(np.linalg.norm(mean)), float(np.linalg.norm(x - mean, axis=1).mean())
    value = rankme(x)
    return {
        "windows": int(x.shape[0]),
        "dim": int(x.shape[1]),
        "rankme": value,
        "rankme_fraction": value / min(x.shape[0] - 1, x.shape[1]),
        "rankme_standardized": rankme(x, standardize=True),
        "rankme_uncentred": rankme(x, centre=False),
        "std_mean": float(std.mean()),
        "std_min": float(std.min()),
        "std_max": float(std.max()),
        "offset_norm": offset,
        "spread": spread,
        "offset_ratio": offset / spread if spread > 0 else float("inf"),
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
