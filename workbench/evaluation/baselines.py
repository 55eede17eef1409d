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

from workbench.connectivity import fc_profiles
from workbench.errors import DataError
from workbench.evaluation.pools import EmbedFn, embed_windows


def fc_fingerprint_factory(train_windows) -> EmbedFn:
    """FC profiles need no training: the embedding is :func:`~workbench.connectivity.fc_profiles`
    (match by Pearson r)."""
    del train_windows  # nothing is fitted
    return fc_profiles


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
    features = embed_windows(fc_profiles, train_windows)
    lda = LinearDiscriminantAnalysis(solver="eigen", shrinkage="auto")
    lda.fit(features, train_windows.labels)

    def embed(windows: np.ndarray) -> np.ndarray:
        return lda.transform(fc_profiles(windows)).astype(np.float32)

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
