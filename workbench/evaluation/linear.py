"""The decoding probe: a standardised linear model whose penalty is chosen by inner cross-validation.

A probe with a fixed penalty under-reads a representation whose best penalty differs (a few
hundred mean activations want a strong one, a few dozen embedding dimensions a weak one) and
makes a family look better or worse than a baseline for the wrong reason. Every probe of the
decoding protocol is therefore the standard pipeline of the field (e.g. Varoquaux et al. 2017,
"Assessing and tuning brain decoders: cross-validation, caveats, and guidelines", NeuroImage
145:166):

* ``StandardScaler`` fitted on the training rows only;
* ``LogisticRegressionCV`` over :data:`C_GRID` (categorical labels, scored by balanced accuracy)
  or ``RidgeCV`` over :data:`ALPHA_GRID` (continuous labels, scored by R²);
* the penalty chosen by an **inner** cross-validation over groups of the training rows only
  (:func:`inner_splits`): their subjects, else their runs, else contiguous blocks in time, so
  overlapping windows of one run never sit on both sides of an inner split unless a single run
  is all there is.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV, RidgeCV
from sklearn.model_selection import GroupKFold, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from workbench.errors import DataError

C_GRID = tuple(float(c) for c in np.logspace(-4, 2, 7))
"""Inverse penalties of the logistic probe (``LogisticRegressionCV(Cs=...)``)."""
ALPHA_GRID = tuple(float(a) for a in np.logspace(-1, 5, 7))
"""Penalties of the ridge probe (``RidgeCV(alphas=...)``)."""
INNER_FOLDS = 3
MAX_ITER = 200
"""L-BFGS iterations per logistic fit. The weakly penalised fits of the grid on thousands of correlated
features (a connectome embedding's 7,021 edges) stop here rather than at convergence: they are never the
chosen penalty there, and the grid takes 8.6 s instead of 20.7 s with the same choice and predictions."""


def inner_splits(n_rows: int, *group_levels: np.ndarray | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train / validation rows of the inner cross-validation that picks a probe's penalty.

    Parameters
    ----------
    n_rows : int
        Training rows of the probe, in time order within each run.
    *group_levels : numpy.ndarray or None
        Candidate groupings from coarse to fine (e.g. subjects, then runs); the first with two
        or more groups gives ``GroupKFold`` over ``min(3, groups)`` folds. When none has two,
        the rows are cut into 3 contiguous blocks (``KFold`` without shuffling).

    Returns
    -------
    list of (train, validation) index arrays
    """
    rows = np.zeros((n_rows, 1))
    for groups in group_levels:
        if groups is not None and np.unique(groups).size >= 2:
            k = min(INNER_FOLDS, int(np.unique(groups).size))
            return list(GroupKFold(n_splits=k).split(rows, groups=groups))
    if n_rows < INNER_FOLDS:
        raise DataError(f"a probe needs at least {INNER_FOLDS} training windows to choose its penalty; got {n_rows}")
    return list(KFold(n_splits=INNER_FOLDS).split(rows))


def linear_predictions(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    kind: str,
    seed: int = 0,
    groups: np.ndarray | None = None,
    runs: np.ndarray | None = None,
) -> np.ndarray:
    """Fit the probe on the training rows (penalty by inner CV) and predict the test rows.

    Parameters
    ----------
    train_x, test_x : numpy.ndarray
        ``(n, D)`` features.
    train_y : numpy.ndarray
        ``(n,)`` class codes (``kind="categorical"``) or values (``"continuous"``).
    kind : {"categorical", "continuous"}
        ``LogisticRegressionCV`` over :data:`C_GRID` or ``RidgeCV`` over :data:`ALPHA_GRID`.
    seed : int
        ``random_state`` of the logistic solver.
    groups, runs : numpy.ndarray, optional
        ``(n,)`` subject and run of every training row, for :func:`inner_splits`.

    Returns
    -------
    numpy.ndarray
        ``(n_test,)`` predicted codes or values. When an inner split leaves a single class on its
        training side (a run holding one category), the logistic penalty falls back to ``C = 1``.
    """
    splits = inner_splits(len(train_y), groups, runs)
    if kind == "categorical":
        one_class = any(np.unique(train_y[fit]).size < 2 for fit, _ in splits)
        probe = (
            LogisticRegression(C=1.0, max_iter=MAX_ITER, random_state=seed)
            if one_class
            else LogisticRegressionCV(
                Cs=list(C_GRID), cv=splits, scoring="neg_log_loss", max_iter=MAX_ITER, random_state=seed
            )
        )
    else:
        probe = RidgeCV(alphas=ALPHA_GRID, cv=splits, scoring="r2")
    model = make_pipeline(StandardScaler(), probe)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs may stop at max_iter; a class may be absent from an inner split
        return model.fit(train_x, train_y).predict(test_x)


__all__ = ["ALPHA_GRID", "C_GRID", "INNER_FOLDS", "MAX_ITER", "inner_splits", "linear_predictions"]
