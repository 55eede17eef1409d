"""Per-episode classification and verification metrics, vectorised over episodes.

Every function takes arrays with a leading episode axis ``E`` and returns one value
per episode, so that 600 episodes cost a handful of array operations. Each metric
equals its scikit-learn counterpart on a single episode (see ``tests/test_evaluate.py``):

=================  ===========================================================
accuracy           ``sklearn.metrics.accuracy_score``
macro-F1           ``sklearn.metrics.f1_score(average="macro")``
ROC-AUC            ``sklearn.metrics.roc_auc_score(multi_class="ovr")`` on the
                   softmax of the scores (macro average over classes)
EER                equal error rate on the ROC curve of genuine vs impostor
                   scores (``sklearn.metrics.roc_curve``), linearly interpolated
=================  ===========================================================

The few-shot reporting convention (Chen et al. 2019, "A Closer Look at Few-shot
Classification") summarises E episodes as mean ± 1.96·std/√E, see :func:`summarise`.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax
from scipy.stats import rankdata


def accuracy(predicted: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Fraction of correct predictions per episode.

    Parameters
    ----------
    predicted, true : numpy.ndarray
        ``(E, M)`` integer class labels of the ``M`` queries of each episode.

    Returns
    -------
    numpy.ndarray
        ``(E,)`` accuracies in [0, 1].
    """
    return (np.asarray(predicted) == np.asarray(true)).mean(axis=1)


def macro_f1(predicted: np.ndarray, true: np.ndarray, n_classes: int) -> np.ndarray:
    """Macro-averaged F1 per episode over the classes ``0 .. n_classes - 1``.

    Parameters
    ----------
    predicted, true : numpy.ndarray
        ``(E, M)`` labels in ``[0, n_classes)``. Every class must occur in ``true``
        (each episode has queries of every class), so that the set of labels
        averaged over matches scikit-learn's.
    n_classes : int
        Number of classes ``N`` of the episode.

    Returns
    -------
    numpy.ndarray
        ``(E,)`` macro-F1; a class never predicted contributes F1 = 0.
    """
    eye = np.eye(n_classes, dtype=bool)
    predicted_hot = eye[predicted]  # (E, M, N)
    true_hot = eye[true]
    true_positive = (predicted_hot & true_hot).sum(axis=1)
    # 2TP + FP + FN = (#predicted as c) + (#truly c); > 0 as every class has queries.
    denominator = predicted_hot.sum(axis=1) + true_hot.sum(axis=1)
    per_class = np.divide(
        2.0 * true_positive,
        denominator,
        out=np.zeros(true_positive.shape, dtype=np.float64),
        where=denominator > 0,
    )
    return per_class.mean(axis=1)


def ovr_roc_auc(scores: np.ndarray, true: np.ndarray) -> np.ndarray:
    """One-vs-rest ROC-AUC of ``softmax(scores)``, macro-averaged over classes.

    The AUC of class ``c`` is the Mann–Whitney statistic of the probabilities
    ``p_c`` of the queries of class ``c`` against those of all other queries,
    computed from average ranks (ties count one half). Ranks are taken on
    ``log softmax``, a monotone transform of the softmax, so the value equals
    scikit-learn's on the softmax probabilities whenever these do not underflow,
    and stays exact when large distances would saturate the softmax to 0 / 1.

    Parameters
    ----------
    scores : numpy.ndarray
        ``(E, M, N)`` similarity of each query to each class prototype (higher
        means more similar, e.g. minus the distance).
    true : numpy.ndarray
        ``(E, M)`` labels in ``[0, N)``; every class occurs at least once.

    Returns
    -------
    numpy.ndarray
        ``(E,)`` macro one-vs-rest AUC in [0, 1].
    """
    n_queries, n_classes = scores.shape[1], scores.shape[2]
    ranks = rankdata(log_softmax(np.asarray(scores, dtype=np.float64), axis=-1), method="average", axis=1)  # (E, M, N)
    positive = np.eye(n_classes, dtype=bool)[true]  # (E, M, N)
    n_positive = positive.sum(axis=1)  # (E, N)
    n_negative = n_queries - n_positive
    rank_sum = np.where(positive, ranks, 0.0).sum(axis=1)
    per_class = (rank_sum - n_positive * (n_positive + 1) / 2.0) / (n_positive * n_negative)
    return per_class.mean(axis=1)


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> np.ndarray:
    """Verification equal error rate per episode (FAR = FRR on the ROC curve).

    Genuine scores should be high and impostor scores low. The ROC curve runs
    through one point per distinct threshold (tied scores move together, as in
    ``sklearn.metrics.roc_curve``); the EER is where the straight segment of that
    curve crosses ``FPR = 1 - TPR``.

    Parameters
    ----------
    genuine : numpy.ndarray
        ``(E, G)`` scores of matching pairs (a query against its own prototype).
    impostor : numpy.ndarray
        ``(E, I)`` scores of non-matching pairs (a query against the others).

    Returns
    -------
    numpy.ndarray
        ``(E,)`` EER in [0, 1]: 0 when every genuine score beats every impostor
        score, about 0.5 for uninformative scores.
    """
    n_genuine, n_impostor = genuine.shape[1], impostor.shape[1]
    scores = np.concatenate([genuine, impostor], axis=1).astype(np.float64)
    is_genuine = np.zeros(scores.shape, dtype=bool)
    is_genuine[:, :n_genuine] = True
    order = np.argsort(-scores, axis=1, kind="stable")
    scores = np.take_along_axis(scores, order, axis=1)
    is_genuine = np.take_along_axis(is_genuine, order, axis=1)
    tpr = np.cumsum(is_genuine, axis=1) / n_genuine
    fpr = np.cumsum(~is_genuine, axis=1) / n_impostor
    # A threshold admits a whole group of tied scores at once: replace each point
    # inside a tie group by the group's last point.
    n_total = scores.shape[1]
    position = np.arange(n_total)
    ends_group = np.ones(scores.shape, dtype=bool)
    ends_group[:, :-1] = scores[:, :-1] != scores[:, 1:]
    group_end = np.where(ends_group, position, n_total)
    group_end = np.minimum.accumulate(group_end[:, ::-1], axis=1)[:, ::-1]
    tpr = np.take_along_axis(tpr, group_end, axis=1)
    fpr = np.take_along_axis(fpr, group_end, axis=1)
    zeros = np.zeros((scores.shape[0], 1))
    tpr = np.concatenate([zeros, tpr], axis=1)
    fpr = np.concatenate([zeros, fpr], axis=1)
    # gap = FPR - FNR rises from -1 at (0, 0) to +1 at (1, 1) along the curve.
    gap = fpr + tpr - 1.0
    after = np.argmax(gap >= 0.0, axis=1)  # >= 1 since gap[:, 0] = -1
    before = after - 1
    rows = np.arange(scores.shape[0])
    gap_before, gap_after = gap[rows, before], gap[rows, after]
    fraction = -gap_before / (gap_after - gap_before)
    return fpr[rows, before] + fraction * (fpr[rows, after] - fpr[rows, before])


def summarise(values: np.ndarray) -> dict[str, float]:
    """Mean and 95 % half-width ``1.96 · std / sqrt(E)`` over episodes.

    Parameters
    ----------
    values : numpy.ndarray
        ``(E,)`` one value per episode.

    Returns
    -------
    dict
        ``{"mean": float, "ci": float}`` (population std, as in CloserLookFewShot).
    """
    values = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(values.mean()),
        "ci": float(1.96 * values.std() / np.sqrt(values.size)),
    }
