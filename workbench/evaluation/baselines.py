"""Baselines every encoder is compared with: FC fingerprinting, LDA on FC, chance.

* **FC fingerprinting** (Finn et al. 2015, "Functional connectome fingerprinting:
  identifying individuals using patterns of brain connectivity", Nat. Neurosci.
  18:1664): a window's ROI–ROI Pearson correlations, Fisher-z transformed and
  z-scored across edges; prototype = mean profile; matching by Pearson r.
* **LDA on FC**: shrinkage LDA (Ledoit–Wolf, ``solver="eigen", shrinkage="auto"``)
  fitted on the encoder's training windows; its discriminant projection is the
  embedding and queries go to the nearest prototype in Euclidean distance.
* **Chance**: accuracy 1/N, macro-F1 1/N, ROC-AUC 0.5, EER 0.5.

Both learned-free and learned baselines are :data:`EncoderFactory` objects, the
same seam as the deep encoders, so the protocols treat them alike.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from workbench.errors import DataError
from workbench.evaluation.pools import EmbedFn, embed_windows

# Keeps correlations of perfectly coupled ROIs finite under arctanh: |r| <= 1 - 1e-7
# caps the Fisher z at about 8.4, far above any real edge (|r| < 0.999 -> |z| < 3.8).
_R_LIMIT = 1.0 - 1e-7
# Guards every standard deviation: a constant ROI (std 0) has correlation 0 with all
# others instead of NaN, and a window whose edges are all equal gets a zero profile.
_EPS = 1e-8


def fc_features(windows: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Functional-connectivity profile of each window (Finn et al. 2015).

    For each window: Pearson correlation between every pair of ROIs over the
    window's frames, upper triangle (``i < j``, row-major as ``numpy.triu_indices``),
    Fisher z = ``arctanh(r)`` with ``|r|`` clipped below 1, then z-scored across
    the edges of that window (mean 0, std 1).

    Parameters
    ----------
    windows : numpy.ndarray
        ``(n, W, R)`` ROI time series, time first. A ROI that is constant within a
        window has zero variance; its correlations are set to 0 (the standard
        deviation is guarded by ``1e-8``) instead of NaN.
    batch_size : int
        Windows per batched matrix product (bounds memory to
        ``batch_size · R²`` float64).

    Returns
    -------
    numpy.ndarray
        ``(n, R(R-1)/2)`` float32 profiles.
    """
    windows = np.asarray(windows)
    if windows.ndim != 3 or windows.shape[1] < 2 or windows.shape[2] < 2:
        raise DataError(f"fc_features needs (n, W >= 2, R >= 2) windows, got {windows.shape}")
    n, _, n_rois = windows.shape
    upper = np.triu_indices(n_rois, k=1)
    out = np.empty((n, upper[0].size), dtype=np.float32)
    for start in range(0, n, batch_size):
        x = windows[start : start + batch_size].astype(np.float64)
        x = x - x.mean(axis=1, keepdims=True)
        x = x / (np.sqrt((x * x).mean(axis=1, keepdims=True)) + _EPS)
        corr = np.matmul(x.transpose(0, 2, 1), x) / x.shape[1]  # (b, R, R)
        z = np.arctanh(np.clip(corr[:, upper[0], upper[1]], -_R_LIMIT, _R_LIMIT))
        z = z - z.mean(axis=1, keepdims=True)
        z = z / (z.std(axis=1, keepdims=True) + _EPS)
        out[start : start + x.shape[0]] = z
    return out


def fc_fingerprint_factory(train_windows) -> EmbedFn:
    """FC profiles need no training: the embedding is :func:`fc_features` (match by Pearson r)."""
    del train_windows  # nothing is fitted
    return fc_features


def lda_fc_factory(train_windows) -> EmbedFn:
    """Fit shrinkage LDA on the FC profiles of the training windows only.

    Parameters
    ----------
    train_windows : WindowSet
        The encoder's training windows; their subject labels are the LDA classes.

    Returns
    -------
    callable
        ``(n, W, R) -> (n, min(C - 1, R(R-1)/2))`` discriminant coordinates.
    """
    n_classes = len(np.unique(train_windows.labels))
    if n_classes < 2:
        raise DataError("LDA on FC needs training windows of at least two subjects")
    features = embed_windows(fc_features, train_windows)
    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto")
    lda.fit(features, train_windows.labels)

    def embed(windows: np.ndarray) -> np.ndarray:
        return lda.transform(fc_features(windows)).astype(np.float32)

    return embed


def chance_summary(n_way: int) -> dict[str, dict[str, float]]:
    """Metrics of a guess: accuracy and macro-F1 1/N, ROC-AUC 0.5, EER 0.5 (CI 0)."""
    level = 1.0 / n_way
    return {
        "accuracy": {"mean": level, "ci": 0.0},
        "macro_f1": {"mean": level, "ci": 0.0},
        "roc_auc": {"mean": 0.5, "ci": 0.0},
        "eer": {"mean": 0.5, "ci": 0.0},
    }


BASELINES: dict[str, tuple[Callable, str]] = {
    "fc-fingerprint": (fc_fingerprint_factory, "pearson"),
    "lda-fc": (lda_fc_factory, "euclidean"),
}
"""Learned and learning-free baselines: name -> (encoder factory, similarity)."""
